"""Loading with overrides does what it says or refuses clearly, set_parameters is all or nothing, and a trained
model that continues with an empty replay buffer says so."""

import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import HerReplayBuffer
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer

from sb3_wpo import WPO, LoadError

TINY: dict[str, Any] = dict(
    buffer_size=1_000, learning_starts=20, batch_size=16, num_samples=2, policy_kwargs=dict(net_arch=[8]), seed=0
)


class TwoDimensionalEnv(gym.Env):
    """Two action dimensions, so per-dimension duals differ in shape from a single one."""

    observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        return self.observation_space.sample(), -float(np.sum(action**2)), False, False, {}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = WPO("MlpPolicy", TwoDimensionalEnv(), n_steps=5, **TINY)
    model.learn(40)
    path = tmp_path_factory.mktemp("model") / "wpo.zip"
    model.save(path)
    model.save_replay_buffer(path.with_suffix(".pkl"))
    return path


def test_n_steps_and_gamma_overrides_reach_the_replay_buffer(saved: Path):
    model = WPO.load(saved, env=TwoDimensionalEnv(), n_steps=1, gamma=0.9)
    assert type(model.replay_buffer) is ReplayBuffer and model.gamma == 0.9
    model = WPO.load(saved, env=TwoDimensionalEnv(), n_steps=3, gamma=0.9)
    assert isinstance(model.replay_buffer, NStepReplayBuffer)
    assert (model.replay_buffer.n_steps, model.replay_buffer.gamma) == (3, 0.9)
    model = WPO.load(saved, env=TwoDimensionalEnv())  # no override: the saved 5-step buffer
    assert isinstance(model.replay_buffer, NStepReplayBuffer)
    assert (model.replay_buffer.n_steps, model.replay_buffer.gamma) == (5, 0.99)


class GoalEnv(gym.Env):
    """Dict observations with goals, for DictReplayBuffer and HerReplayBuffer."""

    observation_space = spaces.Dict(
        {name: spaces.Box(-1.0, 1.0, (2,), np.float32) for name in ("observation", "achieved_goal", "desired_goal")}
    )
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        return self.observation_space.sample(), 0.0, False, False, {}

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        return -np.linalg.norm(achieved_goal - desired_goal, axis=-1)


@pytest.mark.parametrize(
    "buffer, named",
    [(None, "n_steps must be 1 with Dict observation spaces"), (HerReplayBuffer, "n_steps=3 cannot take effect")],
)
def test_n_steps_overrides_the_buffer_cannot_compute_are_refused(tmp_path: Path, buffer: type | None, named: str):
    """Dict observations have no n-step buffer, and SB3 sets n-step returns up only for the buffer it picks: at
    load as at construction, an n_steps that would not take effect is refused, naming it."""
    model = WPO("MultiInputPolicy", GoalEnv(), replay_buffer_class=buffer, **TINY)
    model.save(tmp_path / "wpo.zip")
    with pytest.raises(ValueError, match="overrides n_steps") as error:
        WPO.load(tmp_path / "wpo.zip", env=GoalEnv(), n_steps=3)
    assert named in str(error.value)
    loaded = WPO.load(tmp_path / "wpo.zip", env=GoalEnv(), n_steps=1)  # an override that does take effect
    assert loaded.n_steps == 1


def test_per_dim_constraining_cannot_change_on_load(saved: Path):
    """The saved duals have one value per action dimension; summing the KL over dimensions with them would weigh
    the penalty twice."""
    with pytest.raises(ValueError, match="per_dim_constraining"):
        WPO.load(saved, env=TwoDimensionalEnv(), per_dim_constraining=False)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (dict(device="nonsense"), "device"),
        (dict(learning_starts="soon"), "learning_starts"),
        (dict(dual_learning_rate=0.1), "dual_learning_rate"),
    ],
    ids=["device", "learning_starts", "dual_learning_rate"],
)
def test_a_bad_override_is_blamed_not_the_file(saved: Path, overrides: dict, named: str):
    with pytest.raises(ValueError, match=named) as raised:
        WPO.load(saved, **overrides)
    assert not isinstance(raised.value, LoadError) and "loads, but not with the overrides" in str(raised.value)
    assert "corrupt" not in str(raised.value)


def test_numbers_in_overrides_are_taken_as_in_the_constructor(saved: Path):
    model = WPO.load(saved, learning_starts=1e3, learning_rate=np.float32(1e-4))
    assert model.learning_starts == 1000 and type(model.learning_starts) is int and type(model.learning_rate) is float


def test_set_parameters_is_all_or_nothing():
    model = WPO("MlpPolicy", TwoDimensionalEnv(), **TINY)
    before = {key: value.clone() for key, value in model.policy.state_dict().items()}
    parameters = model.get_parameters()
    names = list(parameters["policy"])
    first, last = names[0], names[-1]
    parameters["policy"][first] = parameters["policy"][first] + 1.0  # fits, and would be applied first
    parameters["policy"][last] = th.zeros(7, 7)  # does not fit
    with pytest.raises(RuntimeError, match="size mismatch"):
        model.set_parameters(parameters)
    after = model.policy.state_dict()
    assert all(th.equal(before[key], after[key]) for key in before), "the model was half overwritten"


def test_continuing_with_an_empty_replay_buffer_warns(saved: Path):
    model = WPO.load(saved, env=TwoDimensionalEnv())
    with pytest.warns(UserWarning, match="replay buffer is empty"):
        model.learn(10, reset_num_timesteps=False)
    model = WPO.load(saved, env=TwoDimensionalEnv())
    model.load_replay_buffer(saved.with_suffix(".pkl"))
    fresh = WPO("MlpPolicy", TwoDimensionalEnv(), **TINY)  # an untrained model has nothing to lose
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.learn(10, reset_num_timesteps=False)
        fresh.learn(10)


def test_a_model_saved_with_the_earlier_default_networks_says_how_to_load(tmp_path: Path):
    """A model saved when WPO's default networks were a ReLU MLP with one critic has no policy_kwargs in its file;
    today's defaults build other networks, and the error says which custom_objects load it."""
    import json
    import zipfile

    earlier = dict(layer_norm=False, activation_fn=th.nn.ReLU, n_critics=1)
    WPO("MlpPolicy", "Pendulum-v1", policy_kwargs=earlier).save(tmp_path / "model.zip")
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(files["data"])
    data["policy_kwargs"] = {}  # what such a save holds with the default networks
    files["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(tmp_path / "earlier.zip", "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    with pytest.raises(LoadError, match=r"custom_objects=\{'policy_kwargs': \{'layer_norm': False.*'n_critics': 1, \*\*its"):
        WPO.load(tmp_path / "earlier.zip")
    model = WPO.load(tmp_path / "earlier.zip", custom_objects={"policy_kwargs": earlier})
    assert model.critic.n_critics == 1 and not model.actor.layer_norm
