"""WPO learns: Pendulum-v1 within a budget that fits CI."""

import gymnasium as gym
import pytest
from stable_baselines3.common.envs import IdentityEnvBox
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from sb3_wpo import WPO


@pytest.mark.slow
def test_pendulum_reaches_minus_250():
    model = WPO(
        "MlpPolicy",
        "Pendulum-v1",
        learning_rate=1e-3,
        num_samples=8,
        train_freq=2,
        n_steps=5,
        seed=0,
    )
    model.learn(10_000)
    mean_return, _ = evaluate_policy(model, Monitor(gym.make("Pendulum-v1")), n_eval_episodes=10, deterministic=True)
    assert mean_return >= -250, f"mean evaluation return {mean_return:.1f} < -250 after 10,000 steps"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_identity_box_like_sb3(seed):
    """SB3's own continuous identity test (tests/test_identity.py::test_continuous, SAC's budget of 400 steps), with
    WPO's defaults: it needs a warm-up shorter than the budget, as SAC's learning_starts=100."""
    env = IdentityEnvBox(eps=0.5)
    model = WPO("MlpPolicy", env, gamma=0.5, seed=seed, policy_kwargs=dict(net_arch=[64]))
    model.learn(400)
    mean_return, _ = evaluate_policy(model, env, n_eval_episodes=20, warn=False)
    assert mean_return >= 90, f"mean evaluation return {mean_return:.1f} < 90 after 400 steps"
