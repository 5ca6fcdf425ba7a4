"""WPO against the Stable-Baselines3 contract, in the spirit of SB3's own tests (save/load, predict, callbacks, envs...)."""

import warnings
import copy
import csv
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import HerReplayBuffer
from stable_baselines3.common.buffers import DictReplayBuffer, NStepReplayBuffer, ReplayBuffer
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback, StopTrainingOnMaxEpisodes
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    BitFlippingEnv,
    FakeImageEnv,
    IdentityEnv,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.logger import Logger, configure
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, NatureCNN
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

from sb3_wpo import WPO, CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_wpo.policies import Critic, WPOPolicy
from helpers import assert_same

ENV_ID = "Pendulum-v1"
SHORT_EPISODES = dict(max_episode_steps=50)  # Pendulum with 50-step episodes, for the episode-driven tests
SMALL_NET = dict(net_arch=[32, 32])
FAST = dict(learning_starts=50, batch_size=32, num_samples=4, buffer_size=2_000, train_freq=1)


def make_model(env: Any = ENV_ID, policy: Any = "MlpPolicy", policy_kwargs: dict | None = None, **kwargs: Any) -> WPO:
    """A tiny WPO: small networks, 4 samples per state, one update per step after 50 steps."""
    params: dict[str, Any] = {**FAST, **kwargs}
    return WPO(policy, env, policy_kwargs={**SMALL_NET, **(policy_kwargs or {})}, **params)


def short_pendulum(n_envs: int = 1, seed: int = 0):
    return make_vec_env(ENV_ID, n_envs=n_envs, seed=seed, env_kwargs=SHORT_EPISODES)


class AsymmetricBoxEnv(gym.Env):
    """Continuous control with non-symmetric action bounds: the reward is −‖a − target‖, the target being in the obs."""

    action_space: spaces.Box

    def __init__(self, ep_length: int = 20):
        self.observation_space = spaces.Box(low=-1.0, high=1.0, shape=(4,), dtype=np.float32)
        self.action_space = spaces.Box(
            low=np.array([0.0, -2.0], dtype=np.float32), high=np.array([3.0, 2.0], dtype=np.float32)
        )
        self.ep_length = ep_length
        self.current_step = 0
        self.state = np.zeros(4, dtype=np.float32)
        self.received_actions: list[np.ndarray] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.current_step = 0
        self.state = self.np_random.uniform(-1, 1, size=4).astype(np.float32)
        return self.state, {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        target = self.action_space.low + (self.state[:2] + 1) / 2 * (self.action_space.high - self.action_space.low)
        reward = -float(np.linalg.norm(action - target))
        self.received_actions.append(np.array(action))
        self.current_step += 1
        self.state = self.np_random.uniform(-1, 1, size=4).astype(np.float32)
        return self.state, reward, False, self.current_step >= self.ep_length, {}


def params_equal(first: nn.Module, second: nn.Module) -> bool:
    return all(th.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True))


def all_params_differ_somewhere(first: nn.Module, second: nn.Module) -> bool:
    return not params_equal(first, second)


def linear_shapes(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def full_training_state(model: WPO) -> dict[str, Any]:
    """Everything that training depends on besides the replay buffer and the random generators."""
    state = {
        "policy": {k: v.clone() for k, v in model.policy.state_dict().items()},
        "actor_optimizer": model.actor.optimizer.state_dict(),
        "critic_optimizer": model.critic.optimizer.state_dict(),
        "log_alpha_mean": model.log_alpha_mean.detach().clone(),
        "log_alpha_std": model.log_alpha_std.detach().clone(),
        "n_updates": model._n_updates,
    }
    if model.dual_optimizer is not None:
        state["dual_optimizer"] = model.dual_optimizer.state_dict()
    return state


# ---------------------------------------------------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------------------------------------------------


def test_save_load_predictions_and_continue_training(tmp_path: Path) -> None:
    model = make_model(seed=0)
    model.learn(150)
    observations = np.stack([model.observation_space.sample() for _ in range(16)])
    expected_actions, _ = model.predict(observations, deterministic=True)

    model.save(tmp_path / "wpo.zip")
    del model
    loaded = WPO.load(tmp_path / "wpo.zip", env=make_vec_env(ENV_ID, n_envs=1, seed=1))
    assert isinstance(loaded.policy, MlpPolicy)
    assert loaded.num_samples == FAST["num_samples"]
    actions, _ = loaded.predict(observations, deterministic=True)
    np.testing.assert_array_equal(actions, expected_actions)
    # The aliases point into the loaded policy, not at stale copies.
    assert loaded.actor is loaded.policy.actor and loaded.critic_target is loaded.policy.critic_target

    # The loaded model keeps training (its replay buffer is empty: it refills it past learning_starts).
    n_updates = loaded._n_updates
    before = {k: v.clone() for k, v in loaded.actor.state_dict().items()}
    loaded.learn(120)
    assert loaded._n_updates > n_updates
    assert any(not th.equal(before[k], v) for k, v in loaded.actor.state_dict().items())

    # Loading without an env still predicts.
    no_env = WPO.load(tmp_path / "wpo.zip")
    assert no_env.get_env() is None
    np.testing.assert_array_equal(no_env.predict(observations, deterministic=True)[0], expected_actions)

    # Loading with a different number of envs goes through WPO.load (a new replay buffer for 2 envs).
    two_envs = WPO.load(tmp_path / "wpo.zip", env=make_vec_env(ENV_ID, n_envs=2, seed=2))
    two_envs.learn(120)
    assert two_envs.n_envs == 2 and two_envs.replay_buffer is not None and two_envs.replay_buffer.n_envs == 2
    assert two_envs._n_updates == n_updates + (120 - FAST["learning_starts"]) // 2


def image_env() -> gym.Env:
    return FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=False)


def reseed(model: WPO, seed: int) -> None:
    """``set_random_seed``, plus the observation spaces that FakeImageEnv samples its observations from."""
    model.set_random_seed(seed)
    for env in model.get_env().unwrapped.envs:  # type: ignore[union-attr]
        env.unwrapped.observation_space.seed(seed)


IMAGE_SETUP = dict(learning_starts=30, batch_size=16, buffer_size=200)
FULL_STATE_SETUPS: dict[str, tuple[str | Callable[[], gym.Env], dict[str, Any], tuple[int, int]]] = {
    "fixed_duals": (ENV_ID, dict(dual_learning_rate=0.0), (150, 100)),
    "learned_duals": (ENV_ID, dict(dual_learning_rate=1e-2), (150, 100)),
    "cnn_shared_extractor_2_critics": (
        image_env,
        dict(policy="CnnPolicy", dual_learning_rate=1e-2, **IMAGE_SETUP,
             policy_kwargs=dict(share_features_extractor=True, n_critics=2, features_extractor_kwargs=dict(features_dim=32))),
        (60, 40),
    ),
}  # fmt: skip


@pytest.mark.parametrize("setup", FULL_STATE_SETUPS)
def test_save_load_keeps_full_training_state(tmp_path: Path, setup: str) -> None:
    """Optimizers, targets, duals (and the dual optimizer) and the replay buffer survive a save/load: continuing
    from the loaded model with the same seed gives exactly the same parameters as continuing the original."""
    env_id, kwargs, (steps, more_steps) = FULL_STATE_SETUPS[setup]
    dual_learning_rate = kwargs["dual_learning_rate"]
    learning_starts = kwargs.get("learning_starts", FAST["learning_starts"])
    model = make_model(env=make_vec_env(env_id, n_envs=1, seed=0), seed=0, target_update_interval=7, **kwargs)
    reseed(model, 0)
    model.learn(steps)
    assert (model.dual_optimizer is not None) == (dual_learning_rate > 0)
    state = full_training_state(model)
    # Targets lag behind the online networks (last target update 2 steps ago), so they are really saved.
    assert model._n_updates == steps - learning_starts and model._n_updates % 7 == 2
    assert not params_equal(model.actor, model.actor_target)
    assert not params_equal(model.critic, model.critic_target)
    if dual_learning_rate > 0:
        assert not th.equal(model.log_alpha_mean, th.zeros_like(model.log_alpha_mean))

    model.save(tmp_path / "wpo.zip")
    model.save_replay_buffer(tmp_path / "replay_buffer.pkl")
    loaded = WPO.load(tmp_path / "wpo.zip", env=make_vec_env(env_id, n_envs=1, seed=0))
    loaded.load_replay_buffer(tmp_path / "replay_buffer.pkl")

    assert_same(full_training_state(loaded), state)
    assert loaded.replay_buffer is not None and model.replay_buffer is not None
    assert loaded.replay_buffer.pos == model.replay_buffer.pos == steps
    np.testing.assert_array_equal(loaded.replay_buffer.observations, model.replay_buffer.observations)
    np.testing.assert_array_equal(loaded.replay_buffer.actions, model.replay_buffer.actions)
    if dual_learning_rate > 0:
        assert loaded.dual_optimizer is not None
        # The dual optimizer must step the model's own log-alphas, not the tensors it was built with before loading.
        dual_params = loaded.dual_optimizer.param_groups[0]["params"]
        assert dual_params[0] is loaded.log_alpha_mean and dual_params[1] is loaded.log_alpha_std
    else:
        assert loaded.dual_optimizer is None

    for continued in (model, loaded):
        reseed(continued, 1)
        continued.learn(more_steps)
    assert loaded._n_updates == model._n_updates == steps + more_steps - 2 * learning_starts
    assert_same(full_training_state(loaded), full_training_state(model))
    # ... and training did move everything it should.
    assert any(not th.equal(v, state["policy"][k]) for k, v in loaded.policy.state_dict().items() if "target" in k)
    if dual_learning_rate > 0:
        assert not th.equal(loaded.log_alpha_mean, state["log_alpha_mean"])


def test_save_load_policy(tmp_path: Path) -> None:
    model = make_model(seed=0, policy_kwargs=dict(n_critics=2, layer_norm=True))
    model.learn(100)
    observations = np.stack([model.observation_space.sample() for _ in range(8)])
    expected_actions, _ = model.predict(observations, deterministic=True)

    # A Path, as users pass it (SB3 annotates str, and takes any path)
    model.policy.save(tmp_path / "policy.pkl")  # type: ignore[arg-type]
    policy = WPOPolicy.load(tmp_path / "policy.pkl")  # type: ignore[arg-type]
    assert type(policy) is type(model.policy)
    assert policy.n_critics == 2 and policy.layer_norm
    assert_same(policy.state_dict(), model.policy.state_dict())
    np.testing.assert_array_equal(policy.predict(observations, deterministic=True)[0], expected_actions)
    assert not policy.actor_target.training and not policy.critic_target.training

    # A policy loaded into a fresh model through its parameters predicts the same.
    fresh = make_model(seed=1, policy_kwargs=dict(n_critics=2, layer_norm=True))
    assert not np.array_equal(fresh.predict(observations, deterministic=True)[0], expected_actions)
    fresh.policy.load_state_dict(policy.state_dict())
    np.testing.assert_array_equal(fresh.predict(observations, deterministic=True)[0], expected_actions)


def test_get_set_parameters(tmp_path: Path) -> None:
    model = make_model(seed=0, dual_learning_rate=1e-3)
    model.learn(80)
    # State dicts share storage with the live parameters. Typed Any: SB3 annotates set_parameters' dict as name ->
    # tensor, but takes get_parameters()' name -> state dict.
    params: Any = copy.deepcopy(model.get_parameters())
    assert set(params) == {"policy", "actor.optimizer", "critic.optimizer", "dual_optimizer"}
    observations = np.stack([model.observation_space.sample() for _ in range(8)])
    original_actions, _ = model.predict(observations, deterministic=True)

    generator = th.Generator().manual_seed(0)
    random_policy = {k: th.randn(v.shape, generator=generator) for k, v in params["policy"].items()}
    only_policy: Any = {"policy": random_policy}
    model.set_parameters(only_policy, exact_match=False)
    assert_same(model.get_parameters()["policy"], random_policy)
    assert_same(model.actor_target.state_dict(), {k[len("actor_target.") :]: v for k, v in random_policy.items()
                                                  if k.startswith("actor_target.")})  # fmt: skip
    assert not np.array_equal(model.predict(observations, deterministic=True)[0], original_actions)

    with pytest.raises(ValueError):
        model.set_parameters(only_policy, exact_match=True)  # optimizers missing

    model.set_parameters(params, exact_match=True)
    np.testing.assert_array_equal(model.predict(observations, deterministic=True)[0], original_actions)
    assert_same(model.get_parameters(), params)

    # From a saved file too.
    model.save(tmp_path / "wpo.zip")
    other = make_model(seed=1, dual_learning_rate=1e-3)
    other.set_parameters(tmp_path / "wpo.zip")  # type: ignore[arg-type]  # a Path, as users pass it
    np.testing.assert_array_equal(other.predict(observations, deterministic=True)[0], original_actions)


def test_set_env() -> None:
    model = make_model(env=make_vec_env(ENV_ID, n_envs=1, seed=0))
    model.learn(64)
    new_env = make_vec_env(ENV_ID, n_envs=1, seed=1)
    model.set_env(new_env, force_reset=True)
    assert model.get_env() is new_env and model._last_obs is None
    model.learn(64, reset_num_timesteps=True)
    assert model.num_timesteps == 64
    # A plain gym env gets wrapped
    model.set_env(gym.make(ENV_ID))
    model.learn(64, reset_num_timesteps=False)
    assert model.num_timesteps == 128
    assert model._n_updates > 0

    with pytest.raises(ValueError):
        model.set_env(AsymmetricBoxEnv())
    with pytest.raises(AssertionError):  # a different number of envs must go through WPO.load
        model.set_env(make_vec_env(ENV_ID, n_envs=2))


# ---------------------------------------------------------------------------------------------------------------------
# Predict
# ---------------------------------------------------------------------------------------------------------------------


def test_predict_shapes() -> None:
    model = make_model()
    obs = model.observation_space.sample()
    action, state = model.predict(obs)
    assert action.shape == (1,) and state is None
    actions, _ = model.predict(np.stack([obs] * 5))
    assert actions.shape == (5, 1)
    assert model.action_space.contains(action)

    model = make_model(env=make_vec_env(ENV_ID, n_envs=2))
    observations = model.get_env().reset()  # type: ignore[union-attr]
    assert isinstance(observations, np.ndarray)
    actions, _ = model.predict(observations, deterministic=True)
    assert actions.shape == (2, 1) and actions.dtype == np.float32


def test_predict_bounds_and_deterministic_clipped_mean() -> None:
    env = AsymmetricBoxEnv()
    low, high = env.action_space.low, env.action_space.high
    model = make_model(env=env, policy_kwargs=dict(init_std=3.0), seed=0)  # a wide policy: many samples leave the box
    observations = np.stack([env.observation_space.sample() for _ in range(256)])

    actions, _ = model.predict(observations)
    assert actions.shape == (256, 2)
    assert np.all(actions >= low) and np.all(actions <= high)
    # Clipped at both ends of each dimension, i.e. clipping happens in the env's (not a symmetric) box.
    assert np.all(np.any(actions == low, axis=0)) and np.all(np.any(actions == high, axis=0))
    assert not np.array_equal(actions, model.predict(observations)[0])  # stochastic

    def expected_deterministic() -> np.ndarray:
        obs_tensor, _ = model.policy.obs_to_tensor(observations)
        with th.no_grad():
            mean, _ = model.actor.distribution_params(obs_tensor)
        return low + (np.clip(mean.cpu().numpy(), -1.0, 1.0) + 1.0) * 0.5 * (high - low)

    with th.no_grad():
        model.actor.mu.bias.copy_(th.tensor([0.3, -0.6]))
    deterministic, _ = model.predict(observations, deterministic=True)
    np.testing.assert_allclose(deterministic, expected_deterministic(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(deterministic, model.predict(observations, deterministic=True)[0])
    assert np.all(deterministic > low) and np.all(deterministic < high)

    # A mean outside the box is clipped to the bounds.
    with th.no_grad():
        model.actor.mu.bias.copy_(th.tensor([5.0, -5.0]))
    deterministic, _ = model.predict(observations, deterministic=True)
    np.testing.assert_array_equal(deterministic, np.tile(np.array([3.0, -2.0], dtype=np.float32), (256, 1)))

    # While learning, the env gets actions in its own box (the wide policy reaches both bounds) and the buffer
    # stores them normalized to [-1, 1].
    with th.no_grad():
        model.actor.mu.bias.zero_()
    model.learn(120)
    received = np.stack(env.received_actions[FAST["learning_starts"] :])
    assert np.all(received >= low) and np.all(received <= high)
    assert np.all(np.any(received == low, axis=0)) and np.all(np.any(received == high, axis=0))
    assert model.replay_buffer is not None
    stored = model.replay_buffer.actions[: model.replay_buffer.pos, 0]
    np.testing.assert_allclose(stored, 2.0 * (np.stack(env.received_actions) - low) / (high - low) - 1.0, atol=1e-6)


def test_action_noise_stays_in_bounds() -> None:
    env = AsymmetricBoxEnv()
    model = make_model(env=env, action_noise=NormalActionNoise(np.zeros(2), 5.0 * np.ones(2)), seed=0)
    model.learn(100)
    received = np.stack(env.received_actions)
    assert np.all(received >= env.action_space.low) and np.all(received <= env.action_space.high)
    assert model._n_updates == 50


def test_optimize_memory_usage() -> None:
    model = make_model(optimize_memory_usage=True, replay_buffer_kwargs=dict(handle_timeout_termination=False), seed=0)
    assert model.replay_buffer is not None and model.replay_buffer.optimize_memory_usage
    model.learn(100)
    assert model._n_updates == 50


# ---------------------------------------------------------------------------------------------------------------------
# Vectorized envs, train_freq
# ---------------------------------------------------------------------------------------------------------------------


def test_two_envs_gradient_steps_minus_one() -> None:
    model = make_model(env=make_vec_env(ENV_ID, n_envs=2, seed=0), learning_starts=100, gradient_steps=-1)
    model.learn(200)
    assert model.num_timesteps == 200
    assert model.replay_buffer is not None and model.replay_buffer.pos == 100  # 100 steps of 2 envs
    # Trained after each step of both envs once past learning_starts: as many gradient steps as transitions.
    assert model._n_updates == 100


def test_train_freq_in_episodes() -> None:
    model = make_model(env=short_pendulum(), train_freq=(1, "episode"), gradient_steps=-1)
    model.learn(200)
    # Rollouts are whole 50-step episodes; the first one ends at learning_starts, the 3 others train 50 steps each.
    assert model._episode_num == 4
    assert model._n_updates == 150


def test_train_freq_tuple_steps() -> None:
    model = make_model(train_freq=(10, "step"), gradient_steps=2)
    model.learn(150)
    assert model._n_updates == 2 * 10  # 10 rollouts of 10 steps after learning_starts=50


# ---------------------------------------------------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------------------------------------------------


def test_checkpoint_and_eval_callbacks_with_progress_bar(tmp_path: Path) -> None:
    model = make_model(env=short_pendulum())
    checkpoint = CheckpointCallback(save_freq=100, save_path=str(tmp_path / "ckpt"), name_prefix="wpo",
                                    save_replay_buffer=True)  # fmt: skip
    evaluation = EvalCallback(short_pendulum(seed=10), eval_freq=100, n_eval_episodes=2,
                              best_model_save_path=str(tmp_path / "best"), log_path=str(tmp_path / "eval"))  # fmt: skip
    model.learn(300, callback=[checkpoint, evaluation], progress_bar=True)

    for steps in (100, 200, 300):
        assert (tmp_path / "ckpt" / f"wpo_{steps}_steps.zip").is_file()
        assert (tmp_path / "ckpt" / f"wpo_replay_buffer_{steps}_steps.pkl").is_file()
    assert len(evaluation.evaluations_results) == 3
    assert all(len(results) == 2 for results in evaluation.evaluations_results)
    assert np.isfinite(evaluation.best_mean_reward)
    assert (tmp_path / "best" / "best_model.zip").is_file()
    evaluations = np.load(tmp_path / "eval" / "evaluations.npz")
    np.testing.assert_array_equal(evaluations["timesteps"], [100, 200, 300])

    restored = WPO.load(tmp_path / "ckpt" / "wpo_200_steps.zip", env=short_pendulum())
    restored.load_replay_buffer(tmp_path / "ckpt" / "wpo_replay_buffer_200_steps.pkl")
    # The checkpoint is taken in the callback's on_step, before the 200th transition is stored.
    assert restored.num_timesteps == 200 and restored.replay_buffer is not None and restored.replay_buffer.pos == 199
    restored.learn(50, reset_num_timesteps=False)
    assert restored.num_timesteps == 250


def test_stop_training_on_max_episodes() -> None:
    model = make_model(env=short_pendulum())
    model.learn(1_000, callback=StopTrainingOnMaxEpisodes(max_episodes=3))
    assert model.num_timesteps == 150  # 3 episodes of 50 steps


# ---------------------------------------------------------------------------------------------------------------------
# Observation spaces: Dict (+ HER), images
# ---------------------------------------------------------------------------------------------------------------------


def test_her_dict_obs(tmp_path: Path) -> None:
    n_bits = 4
    env = BitFlippingEnv(n_bits=n_bits, continuous=True, max_steps=n_bits)
    model = make_model(env=env, policy="MultiInputPolicy", replay_buffer_class=HerReplayBuffer,
                       replay_buffer_kwargs=dict(n_sampled_goal=2, goal_selection_strategy="future"), seed=0)  # fmt: skip
    assert isinstance(model.policy, MultiInputPolicy)
    assert isinstance(model.actor.features_extractor, CombinedExtractor)
    model.learn(150)
    assert isinstance(model.replay_buffer, HerReplayBuffer)
    assert model._n_updates == 100

    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)  # type: ignore[arg-type]  # the env's own observation
    assert action.shape == (n_bits,) and env.action_space.contains(action)
    vec_obs = model.get_env().reset()  # type: ignore[union-attr]
    assert isinstance(vec_obs, dict) and model.predict(vec_obs)[0].shape == (1, n_bits)

    while (model.replay_buffer._current_ep_start == model.replay_buffer.pos).all():  # saved mid-episode, for the warning
        model.learn(1, reset_num_timesteps=False)
    model.save(tmp_path / "her.zip")
    model.save_replay_buffer(tmp_path / "her_buffer.pkl")
    loaded = WPO.load(tmp_path / "her.zip", env=BitFlippingEnv(n_bits=n_bits, continuous=True, max_steps=n_bits))
    with pytest.warns(UserWarning, match="last trajectory in the replay buffer will be truncated"):
        loaded.load_replay_buffer(tmp_path / "her_buffer.pkl")
    assert isinstance(loaded.replay_buffer, HerReplayBuffer)
    action, _ = model.predict(obs, deterministic=True)  # type: ignore[arg-type]
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], action)  # type: ignore[arg-type]
    loaded.learn(40, reset_num_timesteps=False)
    assert loaded._n_updates == model._n_updates + 40


def test_dict_obs_without_her() -> None:
    env = SimpleMultiObsEnv(random_start=True, discrete_actions=False)  # "vec" Box + 64x64 "img", actions in [0, 1]^4
    model = make_model(env=env, policy="MultiInputPolicy", learning_starts=30, batch_size=16, seed=0)
    model.learn(60)
    assert type(model.replay_buffer) is DictReplayBuffer
    assert model._n_updates == 30
    obs, _ = env.reset(seed=0)
    actions, _ = model.predict(obs)
    assert actions.shape == (4,)
    assert np.all(actions >= 0.0) and np.all(actions <= 1.0)


def test_her_two_envs() -> None:
    env = make_vec_env(lambda: BitFlippingEnv(n_bits=3, continuous=True, max_steps=3), n_envs=2, seed=0)
    model = make_model(env=env, policy="MultiInputPolicy", replay_buffer_class=HerReplayBuffer, seed=0)
    model.learn(150)
    assert isinstance(model.replay_buffer, HerReplayBuffer) and model.replay_buffer.n_envs == 2
    assert model._n_updates == (150 - FAST["learning_starts"]) // 2


def test_vec_normalize_dict_obs() -> None:
    # Channel-first images: VecNormalize must not sit below an automatic VecTransposeImage (an SB3 limitation).
    env_fn = lambda: SimpleMultiObsEnv(random_start=True, discrete_actions=False, channel_last=False)  # noqa: E731
    env = VecNormalize(make_vec_env(env_fn, n_envs=1, seed=0), norm_obs_keys=["vec"])  # the uint8 image is left alone
    model = make_model(env=env, policy="MultiInputPolicy", learning_starts=30, batch_size=16, seed=0)
    model.learn(60)
    assert model.get_vec_normalize_env() is env
    assert env.obs_rms["vec"].count > 30 and model._n_updates == 30
    buffer = model.replay_buffer
    assert isinstance(buffer, DictReplayBuffer)
    np.random.seed(0)
    normalized = buffer.sample(16, env=env)
    np.random.seed(0)
    raw = buffer.sample(16)
    raw_obs = {key: value.cpu().numpy() for key, value in raw.observations.items()}
    normalized_obs = {key: value.cpu().numpy() for key, value in normalized.observations.items()}
    assert np.all(raw_obs["vec"] >= 0) and np.all(raw_obs["vec"] <= 1)
    expected = env.normalize_obs(raw_obs)
    np.testing.assert_allclose(normalized_obs["vec"], expected["vec"], rtol=1e-5)
    np.testing.assert_array_equal(normalized_obs["img"], raw_obs["img"])
    assert not np.allclose(normalized_obs["vec"], raw_obs["vec"])


@pytest.mark.parametrize("share_features_extractor", [False, True])
def test_cnn_policy(tmp_path: Path, share_features_extractor: bool) -> None:
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=False)
    model = make_model(env=env, policy="CnnPolicy", learning_starts=30, batch_size=16, buffer_size=200, seed=0,
                       policy_kwargs=dict(share_features_extractor=share_features_extractor,
                                          features_extractor_kwargs=dict(features_dim=32)))  # fmt: skip
    assert isinstance(model.policy, CnnPolicy)
    assert isinstance(model.actor.features_extractor, NatureCNN)
    shared = model.critic.features_extractor is model.actor.features_extractor
    assert shared == share_features_extractor
    assert (model.critic_target.features_extractor is model.actor_target.features_extractor) == share_features_extractor
    critic_optimized = {id(p) for group in model.critic.optimizer.param_groups for p in group["params"]}
    critic_extractor = {id(p) for p in model.critic.features_extractor.parameters()}
    # The shared extractor is trained by the actor only; a separate one by the critic.
    assert critic_extractor.isdisjoint(critic_optimized) == share_features_extractor
    assert critic_extractor <= critic_optimized or share_features_extractor

    actor_extractor = {k: v.clone() for k, v in model.actor.features_extractor.state_dict().items()}
    critic_extractor_before = {k: v.clone() for k, v in model.critic.features_extractor.state_dict().items()}
    model.learn(60)
    assert model._n_updates == 30
    changed = lambda before, module: any(not th.equal(before[k], v) for k, v in module.state_dict().items())  # noqa: E731
    assert changed(actor_extractor, model.actor.features_extractor)
    assert changed(critic_extractor_before, model.critic.features_extractor)

    obs, _ = env.reset()
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (5,)
    model.save(tmp_path / "cnn.zip")
    loaded = WPO.load(tmp_path / "cnn.zip")
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], action)
    assert (loaded.critic.features_extractor is loaded.actor.features_extractor) == share_features_extractor


# ---------------------------------------------------------------------------------------------------------------------
# n-step returns, seeding, policy options, VecNormalize
# ---------------------------------------------------------------------------------------------------------------------


def test_n_steps_replay_buffer() -> None:
    gamma = 0.9
    model = make_model(n_steps=3, gamma=gamma, seed=0)
    assert type(model.replay_buffer) is NStepReplayBuffer
    model.learn(150)
    assert model._n_updates == 100
    assert model.replay_buffer is not None
    buffer = model.replay_buffer
    samples = buffer._get_samples(np.arange(buffer.pos))
    assert samples.discounts is not None
    discounts = samples.discounts.cpu().numpy().ravel()
    # Pendulum (200-step episodes) has not ended: every transition looks 3 steps ahead, except the last two,
    # cut short by the end of the buffer.
    np.testing.assert_allclose(discounts[:-2], gamma**3, rtol=1e-6)
    np.testing.assert_allclose(discounts[-2:], [gamma**2, gamma], rtol=1e-6)
    rewards = buffer.rewards[:3, 0]
    np.testing.assert_allclose(
        samples.rewards[0, 0].item(), rewards[0] + gamma * rewards[1] + gamma**2 * rewards[2], rtol=1e-5
    )
    np.testing.assert_array_equal(samples.next_observations[0].cpu().numpy(), buffer.next_observations[2, 0])


def test_n_steps_one_uses_plain_replay_buffer() -> None:
    assert type(make_model().replay_buffer) is ReplayBuffer


def test_same_seed_same_result() -> None:
    def train(seed: int) -> dict[str, Any]:
        model = make_model(seed=seed, dual_learning_rate=1e-3)
        model.learn(150)
        return model.get_parameters()

    first, second, other_seed = train(3), train(3), train(4)
    assert_same(first, second)
    assert any(not th.equal(v, other_seed["policy"][k]) for k, v in first["policy"].items())


@pytest.mark.parametrize(
    "policy_kwargs",
    [
        dict(net_arch=[16, 8]),
        dict(net_arch=[16], layer_norm=False, n_critics=1),
        dict(net_arch=[]),
        dict(net_arch=[8, 8, 8], layer_norm=False, n_critics=3),
    ],
)
@pytest.mark.parametrize("split", [True, False])
def test_critic_of_sampled_actions_matches_one_action_per_state(policy_kwargs: dict, split: bool, monkeypatch) -> None:
    """The [N, B, D] path, with the first layer split into a per-state and a per-sample half or not, is the same
    function, with the same action-gradient, as evaluating each sample with the plain [B, D] path (float32: equal up
    to rounding)."""
    monkeypatch.setattr(Critic, "split_first_layer_from", 0 if split else 10**9)
    model = make_model(policy_kwargs=policy_kwargs)
    critic = model.critic
    obs = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(5)]), device=model.device)
    actions = th.rand(3, 5, 1, device=model.device, requires_grad=True)
    per_sample = th.stack([critic(obs, actions[n]) for n in range(3)])
    batched = critic(obs, actions)
    assert batched.shape == per_sample.shape == (3, 5, critic.n_critics)
    th.testing.assert_close(batched, per_sample, rtol=1e-5, atol=1e-6)
    (grad_batched,) = th.autograd.grad(batched.sum(), actions)
    (grad_per_sample,) = th.autograd.grad(per_sample.sum(), actions)
    th.testing.assert_close(grad_batched, grad_per_sample, rtol=1e-5, atol=1e-6)
    assert grad_batched.abs().sum() > 0


@pytest.mark.parametrize(
    "policy_kwargs, actor_shapes, critic_shapes, n_critics",
    [
        (dict(net_arch=[16, 8]), [(3, 16), (16, 8), (8, 1), (8, 1)], [(4, 16), (16, 8), (8, 1)] * 2, 2),  # 2 by default
        (dict(net_arch=dict(pi=[16], qf=[24, 12]), n_critics=1), [(3, 16), (16, 1), (16, 1)], [(4, 24), (24, 12), (12, 1)], 1),
        (dict(net_arch=[16], n_critics=3), [(3, 16), (16, 1), (16, 1)], [(4, 16), (16, 1)] * 3, 3),
    ],
)
def test_net_arch(tmp_path: Path, policy_kwargs: dict, actor_shapes: list, critic_shapes: list, n_critics: int) -> None:
    model = make_model(policy_kwargs=policy_kwargs)
    assert linear_shapes(model.actor) == actor_shapes == linear_shapes(model.actor_target)
    assert linear_shapes(model.critic) == critic_shapes == linear_shapes(model.critic_target)
    assert model.critic.n_critics == n_critics
    obs_tensor, _ = model.policy.obs_to_tensor(model.observation_space.sample())
    assert model.critic(obs_tensor, th.zeros(1, 1, device=model.device)).shape == (1, n_critics)
    assert model.critic(obs_tensor, th.zeros(4, 1, 1, device=model.device)).shape == (4, 1, n_critics)
    model.learn(80)
    assert model._n_updates == 30
    model.save(tmp_path / "wpo.zip")
    loaded = WPO.load(tmp_path / "wpo.zip")
    assert linear_shapes(loaded.actor) == actor_shapes and linear_shapes(loaded.critic) == critic_shapes


def test_layer_norm_and_activation_fn() -> None:
    """The reference's LayerNorm MLP with ELU is the default; ``layer_norm=False`` builds SB3's plain MLP."""
    model = make_model(policy_kwargs=dict(net_arch=[16, 16, 16]))
    for network in (model.actor, model.critic, model.actor_target, model.critic_target):
        kinds = [type(m) for m in network.modules()]
        assert nn.LayerNorm in kinds and nn.ELU in kinds and nn.ReLU not in kinds
    model.learn(80)
    assert model._n_updates == 30

    plain = make_model(policy_kwargs=dict(layer_norm=False, activation_fn=nn.Tanh))
    for network in (plain.actor, plain.critic):
        kinds = [type(m) for m in network.modules()]
        assert nn.Tanh in kinds and nn.LayerNorm not in kinds and nn.ReLU not in kinds


def test_optimizer_class_and_kwargs(tmp_path: Path) -> None:
    adamw = dict(optimizer_class=th.optim.AdamW, optimizer_kwargs=dict(weight_decay=0.05, eps=1e-5))
    model = make_model(learning_rate=1e-3, policy_kwargs=adamw)
    for optimizer in (model.actor.optimizer, model.critic.optimizer):
        assert isinstance(optimizer, th.optim.AdamW)
        assert optimizer.param_groups[0]["weight_decay"] == 0.05 and optimizer.param_groups[0]["eps"] == 1e-5
        assert optimizer.param_groups[0]["lr"] == 1e-3
    model.learn(80)
    assert model._n_updates == 30
    model.save(tmp_path / "wpo.zip")
    loaded = WPO.load(tmp_path / "wpo.zip")
    assert isinstance(loaded.actor.optimizer, th.optim.AdamW)
    assert loaded.critic.optimizer.param_groups[0]["weight_decay"] == 0.05
    assert_same(loaded.actor.optimizer.state_dict(), model.actor.optimizer.state_dict())


def test_learning_rate_schedule() -> None:
    model = make_model(learning_rate=lambda progress_remaining: 1e-3 * progress_remaining + 1e-4)
    model.learn(100)
    # The last update happens after the last step, at progress remaining 0.
    for optimizer in (model.actor.optimizer, model.critic.optimizer):
        assert math.isclose(optimizer.param_groups[0]["lr"], 1e-4, rel_tol=1e-6)


def test_vec_normalize() -> None:
    env = VecNormalize(make_vec_env(ENV_ID, n_envs=1, seed=0), norm_obs=True, norm_reward=True, gamma=0.99)
    model = make_model(env=env, seed=0)
    model.learn(150)
    assert model.get_vec_normalize_env() is env
    assert isinstance(env.obs_rms, RunningMeanStd) and env.obs_rms.count > 100 and env.ret_rms.count > 100
    assert model._n_updates == 100
    buffer = model.replay_buffer
    assert buffer is not None
    raw_obs = buffer.observations[: buffer.pos, 0]
    # The buffer stores the original observations (cos θ, sin θ, θ̇) and rewards (<= 0) ...
    np.testing.assert_allclose(raw_obs[:, 0] ** 2 + raw_obs[:, 1] ** 2, 1.0, rtol=1e-5)
    assert np.all(buffer.rewards[: buffer.pos] <= 0)
    # ... and samples normalize them with the current statistics.
    np.random.seed(0)
    normalized = buffer.sample(32, env=env)
    np.random.seed(0)
    raw = buffer.sample(32)
    raw_obs, normalized_obs = raw.observations.cpu().numpy(), normalized.observations.cpu().numpy()
    expected = env.normalize_obs(raw_obs)
    assert isinstance(expected, np.ndarray)
    np.testing.assert_allclose(normalized_obs, expected, rtol=1e-5)
    np.testing.assert_allclose(normalized.rewards.cpu().numpy(), env.normalize_reward(raw.rewards.cpu().numpy()), rtol=1e-5)
    assert not np.allclose(normalized_obs, raw_obs)


# ---------------------------------------------------------------------------------------------------------------------
# Train/eval mode, logging, target networks, errors
# ---------------------------------------------------------------------------------------------------------------------


def modes(module: nn.Module) -> set[bool]:
    return {m.training for m in module.modules()}


def test_training_mode() -> None:
    model = make_model(policy_kwargs=dict(layer_norm=True))
    model.policy.set_training_mode(True)
    assert modes(model.actor) == modes(model.critic) == {True}
    assert modes(model.actor_target) == modes(model.critic_target) == {False}
    model.policy.set_training_mode(False)
    assert modes(model.actor) == modes(model.critic) == {False}
    assert modes(model.actor_target) == modes(model.critic_target) == {False}

    model.learn(60)  # ends with a gradient step
    assert modes(model.actor) == modes(model.critic) == {True}
    assert modes(model.actor_target) == modes(model.critic_target) == {False}
    model.predict(model.observation_space.sample())
    assert modes(model.actor) == {False}
    assert modes(model.actor_target) == modes(model.critic_target) == {False}
    # Target networks are not trainable.
    assert not any(p.requires_grad for p in model.actor_target.parameters())
    assert not any(p.requires_grad for p in model.critic_target.parameters())


TRAIN_KEYS = ["actor_loss", "critic_loss", "kl_mean", "kl_std", "alpha_mean", "alpha_std", "pi_std_min", "pi_std_max",
              "q_mean", "dq_da_norm", "n_updates"]  # fmt: skip


def test_logged_values(tmp_path: Path) -> None:
    model = make_model(env=short_pendulum())
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(200, log_interval=1)
    with open(tmp_path / "progress.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 4  # one row per 50-step episode
    last = rows[-1]
    for key in TRAIN_KEYS:
        value = float(last[f"train/{key}"])
        assert math.isfinite(value), key
    assert float(last["train/n_updates"]) == 149  # the dump at the end of the last episode comes before its update
    assert float(last["train/alpha_mean"]) > 0 and float(last["train/alpha_std"]) > 0
    assert 0 < float(last["train/pi_std_min"]) <= float(last["train/pi_std_max"])
    assert float(last["train/kl_mean"]) >= 0 and float(last["train/kl_std"]) >= 0
    assert float(last["train/critic_loss"]) >= 0 and float(last["train/dq_da_norm"]) >= 0
    assert float(last["time/total_timesteps"]) == 200


def test_tensorboard_log_name(tmp_path: Path) -> None:
    model = make_model(tensorboard_log=str(tmp_path), learning_starts=20)
    model.learn(40)
    model.learn(40)
    assert (tmp_path / "WPO_1").is_dir() and (tmp_path / "WPO_2").is_dir()
    assert any(path.name.startswith("events.out.tfevents") for path in (tmp_path / "WPO_1").iterdir())
    model.learn(40, tb_log_name="custom")
    assert (tmp_path / "custom_1").is_dir()


def snapshot(module: nn.Module) -> list[th.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def filled_model(**kwargs: Any) -> WPO:
    """A model whose replay buffer holds 100 transitions, with no gradient step done yet."""
    model = make_model(learning_starts=100, seed=0, **kwargs)
    model.learn(100)
    assert model._n_updates == 0
    assert params_equal(model.actor, model.actor_target) and params_equal(model.critic, model.critic_target)
    return model


@pytest.mark.parametrize("interval", [1, 3])
def test_hard_target_update(interval: int) -> None:
    model = filled_model(tau=1.0, target_update_interval=interval, policy_delay=1)  # each update moves the actor too
    for step in range(1, 2 * interval + 2):
        model.train(gradient_steps=1, batch_size=32)
        synced = step % interval == 0
        assert params_equal(model.actor, model.actor_target) == synced, step
        assert params_equal(model.critic, model.critic_target) == synced, step


@pytest.mark.parametrize("dual_learning_rate", [0.0, 0.01])
def test_policy_delay_updates_the_actor_at_one_gradient_step_in_policy_delay(dual_learning_rate: float) -> None:
    """TD3's delayed policy updates: the critic at every gradient step, the actor (and the duals) at one in
    ``policy_delay``, counted over the updates so far (not per train() call); the actor's metrics are logged for the
    steps that updated it."""
    model = filled_model(policy_delay=3, dual_learning_rate=dual_learning_rate, target_update_interval=1000)
    model.set_logger(Logger(folder=None, output_formats=[]))
    for update in range(7):
        actor, critic, duals = snapshot(model.actor), snapshot(model.critic), model.log_alpha_mean.detach().clone()
        model.train(gradient_steps=1, batch_size=32)
        updated = update % 3 == 0
        assert not all(th.equal(p, q) for p, q in zip(model.critic.parameters(), critic, strict=True)), update
        assert (not all(th.equal(p, q) for p, q in zip(model.actor.parameters(), actor, strict=True))) == updated, update
        assert (not th.equal(model.log_alpha_mean, duals)) == (updated and dual_learning_rate > 0), update
        logged = model.logger.name_to_value
        assert "train/critic_loss" in logged and ("train/actor_loss" in logged) == updated, update
        model.logger.dump()
    model.train(gradient_steps=5, batch_size=32)  # updates 7-11: the actor at 9 only
    for optimizer, steps in ((model.actor.optimizer, 4.0), (model.critic.optimizer, 12.0)):  # Adam's step counts
        assert {float(state["step"]) for state in optimizer.state.values()} == {steps}


class LinearExtractor(BaseFeaturesExtractor):
    """A features extractor with parameters, to see what happens to them (FlattenExtractor has none)."""

    def __init__(self, observation_space: spaces.Box, features_dim: int = 8):
        super().__init__(observation_space, features_dim)
        self.linear = nn.Linear(get_flattened_obs_dim(observation_space), features_dim)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return th.tanh(self.linear(observations))


@pytest.mark.parametrize("share_features_extractor", [False, True])
def test_polyak_target_update(share_features_extractor: bool) -> None:
    tau, interval = 0.1, 2
    policy_kwargs = dict(features_extractor_class=LinearExtractor, share_features_extractor=share_features_extractor)
    model = filled_model(tau=tau, target_update_interval=interval, policy_kwargs=policy_kwargs)
    pairs = [(model.actor, model.actor_target), (model.critic, model.critic_target)]
    targets_before = [snapshot(target) for _, target in pairs]

    model.train(gradient_steps=1, batch_size=32)  # update 1: targets untouched
    for (_, target), before in zip(pairs, targets_before, strict=True):
        assert all(th.equal(p, q) for p, q in zip(target.parameters(), before, strict=True))

    model.train(gradient_steps=1, batch_size=32)  # update 2: target ← (1 − τ)·target + τ·online, once per parameter
    for (online, target), before in zip(pairs, targets_before, strict=True):
        assert isinstance(online.features_extractor, LinearExtractor)
        assert any(p.data_ptr() == online.features_extractor.linear.weight.data_ptr() for p in online.parameters())
        for online_param, target_param, old in zip(online.parameters(), target.parameters(), before, strict=True):
            th.testing.assert_close(target_param, (1 - tau) * old + tau * online_param)
        assert not params_equal(online, target)


@pytest.mark.parametrize(
    "env",
    [IdentityEnv(3), IdentityEnvMultiDiscrete(2), IdentityEnvMultiBinary(3)],
    ids=["Discrete", "MultiDiscrete", "MultiBinary"],
)
def test_unsupported_action_spaces(env: gym.Env) -> None:
    with pytest.raises(AssertionError) as error:
        WPO("MlpPolicy", env)
    message = str(error.value)
    assert str(env.action_space) in message
    assert "Box" in message


def test_load_n_step_model_keeps_n_step_buffer_without_warning(tmp_path):
    model = make_model(n_steps=5)
    model.save(tmp_path / "n_step")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SB3 would warn that n_steps is ignored
        loaded = WPO.load(tmp_path / "n_step", env=make_vec_env(ENV_ID))
    assert isinstance(loaded.replay_buffer, NStepReplayBuffer) and loaded.replay_buffer.n_steps == 5
