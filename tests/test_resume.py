"""A run stopped by Ctrl-C or killed after a checkpoint resumes from it: model, replay buffer, dual variables,
optimizers and timestep count are those that were saved, and training goes on from the same timestep."""

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_wpo import WPO, find_latest_checkpoint
from helpers import assert_same

ENV_ID = "Pendulum-v1"
TINY: dict[str, Any] = dict(
    buffer_size=2_000,
    learning_starts=30,
    batch_size=16,
    num_samples=2,
    train_freq=1,  # one update per step: the tests count updates
    dual_learning_rate=1e-2,  # learned duals, with their own optimizer
    init_log_alpha_std=1.0,
    target_update_interval=7,
    policy_kwargs=dict(net_arch=[8]),
)


def training_state(model: WPO) -> dict[str, Any]:
    assert model.replay_buffer is not None and model.dual_optimizer is not None
    return copy.deepcopy(
        {
            "num_timesteps": model.num_timesteps,
            "n_updates": model._n_updates,
            "policy": model.policy.state_dict(),
            "actor.optimizer": model.actor.optimizer.state_dict(),
            "critic.optimizer": model.critic.optimizer.state_dict(),
            "dual_optimizer": model.dual_optimizer.state_dict(),
            "log_alpha_mean": model.log_alpha_mean.detach(),
            "log_alpha_std": model.log_alpha_std.detach(),
            "buffer_pos": model.replay_buffer.pos,
            "buffer_rewards": model.replay_buffer.rewards[: model.replay_buffer.size()],
        }
    )


class RecordingCheckpoint(CheckpointCallback):
    """CheckpointCallback that also remembers, in memory, the training state it saved at each step."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.saved: dict[int, dict[str, Any]] = {}

    def _on_step(self) -> bool:
        result = super()._on_step()
        if self.n_calls % self.save_freq == 0:
            self.saved[self.num_timesteps] = training_state(self.model)  # type: ignore[arg-type]
        return result


class CtrlC(BaseCallback):
    def __init__(self, at_step: int):
        super().__init__()
        self.at_step = at_step

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.at_step:
            raise KeyboardInterrupt
        return True


def resume(save_path: Path) -> WPO:
    model_path, buffer_path, _ = find_latest_checkpoint(save_path)
    assert buffer_path is not None
    model = WPO.load(model_path, env=gym.make(ENV_ID))
    model.load_replay_buffer(buffer_path)
    return model


def test_resume_after_ctrl_c(tmp_path: Path):
    model = WPO("MlpPolicy", ENV_ID, seed=0, **TINY)
    checkpoint = RecordingCheckpoint(save_freq=25, save_path=str(tmp_path), save_replay_buffer=True)
    with pytest.raises(KeyboardInterrupt):
        model.learn(1_000, callback=[checkpoint, CtrlC(at_step=110)])
    assert model.num_timesteps == 110 and sorted(checkpoint.saved) == [25, 50, 75, 100]

    resumed = resume(tmp_path)
    assert resumed.num_timesteps == 100
    assert_same(training_state(resumed), checkpoint.saved[100])
    assert resumed.log_alpha_mean.requires_grad and resumed.dual_optimizer is not None
    assert resumed.dual_optimizer.param_groups[0]["params"][0] is resumed.log_alpha_mean, "the optimizer steps the duals"
    n_updates = resumed._n_updates

    resumed.learn(50, reset_num_timesteps=False)
    assert resumed.num_timesteps == 150
    assert resumed._n_updates == n_updates + 50, "no warm-up again: one update per step"
    assert not th.equal(resumed.log_alpha_mean, checkpoint.saved[100]["log_alpha_mean"]), "the duals keep learning"


def test_ctrl_c_then_save_in_process(tmp_path: Path):
    """Without a checkpoint callback: catch the KeyboardInterrupt, save model and buffer, resume later."""
    model = WPO("MlpPolicy", ENV_ID, seed=1, **TINY)
    try:
        model.learn(1_000, callback=CtrlC(at_step=60))
    except KeyboardInterrupt:
        model.save(tmp_path / "interrupted")
        model.save_replay_buffer(tmp_path / "interrupted_buffer")
    saved = training_state(model)
    resumed = WPO.load(tmp_path / "interrupted", env=gym.make(ENV_ID))
    resumed.load_replay_buffer(tmp_path / "interrupted_buffer")
    assert_same(training_state(resumed), saved)
    resumed.learn(40, reset_num_timesteps=False)
    assert resumed.num_timesteps == 100


# The killed run: a fresh interpreter (a forked pytest worker that has used CUDA cannot use it, nor always train)
KILLED_RUN = """
import sys
from stable_baselines3.common.callbacks import CheckpointCallback
from sb3_wpo import WPO
from test_resume import ENV_ID, TINY

model = WPO("MlpPolicy", ENV_ID, seed=2, **TINY)
model.learn(100_000, callback=CheckpointCallback(save_freq=20, save_path=sys.argv[1], save_replay_buffer=True))
"""


def test_resume_after_sigkill(tmp_path: Path):
    path = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    child = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(tmp_path)], env=dict(os.environ, PYTHONPATH=path))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(tmp_path.glob("rl_model_replay_buffer_*_steps.pkl"))) < 3:
        assert child.poll() is None, f"the run ended before it was killed (exit code {child.returncode})"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()

    model_path, buffer_path, _ = find_latest_checkpoint(tmp_path)
    steps = int(model_path.stem.split("_")[-2])
    assert steps >= 60 and buffer_path is not None
    resumed = resume(tmp_path)
    assert resumed.num_timesteps == steps
    assert resumed.replay_buffer is not None and resumed.replay_buffer.size() == steps - 1  # saved before storing step
    n_updates = resumed._n_updates
    resumed.learn(30, reset_num_timesteps=False)
    assert resumed.num_timesteps == steps + 30 and resumed._n_updates == n_updates + 30


def test_find_latest_checkpoint_prefers_a_complete_one(tmp_path: Path):
    model = WPO("MlpPolicy", ENV_ID, **TINY)
    model.save(tmp_path / "rl_model_100_steps.zip")
    model.save_replay_buffer(tmp_path / "rl_model_replay_buffer_100_steps.pkl")
    model.save(tmp_path / "rl_model_200_steps.zip")  # killed before its replay buffer was saved
    model_path, buffer_path, vecnormalize_path = find_latest_checkpoint(tmp_path)
    assert model_path.name == "rl_model_100_steps.zip" and buffer_path is not None and vecnormalize_path is None
    (tmp_path / "rl_model_replay_buffer_100_steps.pkl").unlink()
    assert find_latest_checkpoint(tmp_path)[0].name == "rl_model_200_steps.zip"
    with pytest.raises(FileNotFoundError, match="other"):
        find_latest_checkpoint(tmp_path, name_prefix="other")


def save_vecnormalize(path: Path, mean: float) -> None:
    vecnormalize = VecNormalize(DummyVecEnv([lambda: gym.make(ENV_ID)]))
    assert isinstance(vecnormalize.obs_rms, RunningMeanStd)
    vecnormalize.obs_rms.mean[:] = mean
    vecnormalize.save(str(path))


def test_find_latest_checkpoint_needs_finite_vecnormalize_statistics(tmp_path: Path):
    """A kill between the model/buffer saves and the statistics save, or statistics gone NaN, make a step
    incomplete: resuming from it would lose the normalization or turn the policy into NaN."""
    model = WPO("MlpPolicy", ENV_ID, **TINY)
    for step in (100, 200, 300):
        model.save(tmp_path / f"rl_model_{step}_steps.zip")
        model.save_replay_buffer(tmp_path / f"rl_model_replay_buffer_{step}_steps.pkl")
    save_vecnormalize(tmp_path / "rl_model_vecnormalize_100_steps.pkl", 0.5)
    save_vecnormalize(tmp_path / "rl_model_vecnormalize_200_steps.pkl", float("nan"))
    # step 300: killed before its statistics were saved
    model_path, buffer_path, vecnormalize_path = find_latest_checkpoint(tmp_path)
    assert model_path.name == "rl_model_100_steps.zip"
    assert buffer_path is not None and buffer_path.name == "rl_model_replay_buffer_100_steps.pkl"
    assert vecnormalize_path is not None and vecnormalize_path.name == "rl_model_vecnormalize_100_steps.pkl"
    (tmp_path / "rl_model_vecnormalize_100_steps.pkl").write_bytes(b"truncated")
    with pytest.raises(FileNotFoundError, match="VecNormalize"):
        find_latest_checkpoint(tmp_path)
