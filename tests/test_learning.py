"""WPO learns: Pendulum-v1 within a budget that fits CI."""

import gymnasium as gym
import pytest
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
