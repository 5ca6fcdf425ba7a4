"""WPO on a CUDA device: the loss against the reference's golden values, the update equal to the CPU's for the same
data and noise, learning, save / load across devices, and the divergence guard. Skipped where torch sees no CUDA
device (CI's machines); run on a GPU machine with ``python -m pytest tests/test_cuda.py``."""

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor

from sb3_wpo import WPO, DivergenceError
from sb3_wpo.losses import wpo_loss
from test_divergence import TINY, ToyEnv, all_parameters_finite, check_rolled_back, record_states_before_train
from test_losses import CASES, GOLDEN, case_inputs, case_settings, relative_error

pytestmark = pytest.mark.skipif(not th.cuda.is_available(), reason="torch sees no CUDA device")
CUDA = th.device("cuda")


def on_cuda(value: th.Tensor) -> th.Tensor:
    """The same leaf tensor on the CUDA device (a gradient target if the CPU one was)."""
    return value.detach().to(CUDA).requires_grad_(value.requires_grad)


@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_matches_reference_in_float64(case: str):
    inputs: dict[str, Any] = {name: on_cuda(value) for name, value in case_inputs(case, th.float64).items()}
    loss, stats = wpo_loss(**inputs, **case_settings(case))
    wrt = ["online_mean", "online_std", "log_alpha_mean", "log_alpha_std"]
    grads = th.autograd.grad(loss, [inputs[name] for name in wrt])
    assert loss.device.type == "cuda" and stats["policy_loss"].device.type == "cuda"
    assert relative_error(loss, GOLDEN[f"{case}/loss"]) <= 1e-9
    for name, grad in zip(wrt, grads, strict=True):
        assert relative_error(grad, GOLDEN[f"{case}/grad_{name}"]) <= 1e-9, name


# One update path per setting; SGD, whose step is linear in the gradient (Adam's first step is its sign, which rounding
# can flip where a gradient is near 0), so that the devices' parameters stay within float32 rounding of each other
UPDATE_SETTINGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "learned duals, 4 samples, max target": dict(dual_learning_rate=0.01, num_samples=4, target_aggregation="max"),
    "tanh actions, learned entropy bonus in the target": dict(
        ent_coef="auto", entropy_in_target=True, policy_kwargs=dict(tanh_actions=True)
    ),
}


@pytest.mark.parametrize("setting", UPDATE_SETTINGS)
def test_update_equals_the_cpu_update(setting: str):
    """The same networks, replay data, batches and sampling noise give the same parameters after a few updates (the
    targets copied once), the metrics the same values."""
    arguments = UPDATE_SETTINGS[setting]
    policy_kwargs = dict(optimizer_class=th.optim.SGD, **arguments.get("policy_kwargs", {}))
    kwargs = {**arguments, "policy_kwargs": policy_kwargs, "target_update_interval": 2, "seed": 0}
    cpu_model = WPO("MlpPolicy", "Pendulum-v1", device="cpu", **kwargs)
    cuda_model = WPO("MlpPolicy", "Pendulum-v1", device="cuda", **kwargs)
    cuda_model.policy.load_state_dict(cpu_model.policy.state_dict())
    rng = np.random.default_rng(0)
    for _ in range(300):
        obs, next_obs = rng.uniform(-1, 1, (2, 1, 3)).astype(np.float32)
        action, reward = rng.uniform(-2, 2, (1, 1)).astype(np.float32), rng.uniform(-10, 0, 1).astype(np.float32)
        for model in (cpu_model, cuda_model):
            model.replay_buffer.add(obs, next_obs, action, reward, np.zeros(1), [{}])  # type: ignore[union-attr]

    results = []
    for model in (cpu_model, cuda_model):
        noise = th.Generator().manual_seed(1)

        def sample_actions(mean: th.Tensor, std: th.Tensor, generator: th.Generator = noise, n: int = model.num_samples):
            eps = th.randn((n, *mean.shape), generator=generator, dtype=mean.dtype).to(mean.device)
            return (mean + std * eps).detach()

        model._sample_actions = sample_actions  # type: ignore[method-assign]
        model.set_logger(configure(None, [""]))
        np.random.seed(0)  # the replay buffer samples its batches from numpy's global generator
        model.train(gradient_steps=4, batch_size=64)
        results.append((model.policy.state_dict(), dict(model.logger.name_to_value)))

    (cpu_state, cpu_metrics), (cuda_state, cuda_metrics) = results
    for name, value in cpu_state.items():
        assert cuda_state[name].device.type == "cuda", name
        th.testing.assert_close(cuda_state[name].cpu(), value, rtol=1e-4, atol=1e-5, msg=name)
    assert cpu_metrics.keys() == cuda_metrics.keys()
    for name, value in cpu_metrics.items():
        assert cuda_metrics[name] == pytest.approx(value, rel=1e-3, abs=1e-5), name
    assert cuda_model.log_alpha_mean.device.type == cuda_model.log_alpha_std.device.type == "cuda"


@pytest.mark.slow
def test_pendulum_at_the_defaults_reaches_minus_250():
    """tests/test_learning.py's test of the quick start's model, on the CUDA device."""
    model = WPO("MlpPolicy", "Pendulum-v1", seed=0, device="cuda")
    model.learn(10_000)
    mean_return, _ = evaluate_policy(model, Monitor(gym.make("Pendulum-v1")), n_eval_episodes=10, deterministic=True)
    assert mean_return >= -250, f"mean evaluation return {mean_return:.1f} < -250 after 10,000 steps"


def test_saved_on_cuda_loads_on_cpu_and_back(tmp_path):
    """A model trained on the GPU acts the same loaded on the CPU; loaded back on the GPU with its replay buffer, it
    trains on."""
    model = WPO("MlpPolicy", "Pendulum-v1", learning_starts=100, seed=0, device="cuda", dual_learning_rate=0.01)
    model.learn(400)
    model.save(tmp_path / "wpo")
    model.save_replay_buffer(tmp_path / "buffer")
    observations = np.random.default_rng(0).uniform(-1, 1, (16, 3)).astype(np.float32)
    actions, _ = model.predict(observations, deterministic=True)

    on_cpu = WPO.load(tmp_path / "wpo", device="cpu")
    assert all(p.device.type == "cpu" for p in on_cpu.policy.parameters())
    assert on_cpu.log_alpha_mean.device.type == "cpu"
    np.testing.assert_allclose(on_cpu.predict(observations, deterministic=True)[0], actions, rtol=1e-5, atol=1e-6)

    back = WPO.load(tmp_path / "wpo", env=gym.make("Pendulum-v1"), device="cuda")
    back.load_replay_buffer(tmp_path / "buffer")
    back.learn(200, reset_num_timesteps=False)
    assert back.num_timesteps == 600 and all_parameters_finite(back)


def test_divergence_guard_rolls_back_on_cuda():
    model = WPO("MlpPolicy", ToyEnv("reward"), **TINY, device="cuda")
    states = record_states_before_train(model)
    with pytest.raises(DivergenceError, match="non-finite rewards of the replay batch") as raised:
        model.learn(300)
    check_rolled_back(model, states, raised.value)
