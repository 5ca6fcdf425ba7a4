"""Save and load keep every constructor argument: a model built with a non-default value for each argument of
``WPO.__init__`` (read off its signature, so that a new argument is covered or fails here) loads with the same values."""

import inspect
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import NormalActionNoise
from torch import nn

from sb3_wpo import WPO, MlpPolicy

ENV_ID = "Pendulum-v1"


class SubclassedPolicy(MlpPolicy):
    """A policy class other than the aliases' (required: the default model uses "MlpPolicy")."""


class SubclassedReplayBuffer(ReplayBuffer):
    """A replay buffer class other than the one SB3 picks."""


# A value unlike the default for each argument, together valid (e.g. ε matters only with learned duals).
NON_DEFAULTS: dict[str, Any] = dict(
    policy=SubclassedPolicy,
    learning_rate=5e-4,
    buffer_size=5_000,
    learning_starts=10,
    batch_size=16,
    tau=0.5,
    gamma=0.9,
    train_freq=(3, "step"),
    gradient_steps=2,
    action_noise=NormalActionNoise(mean=np.zeros(1), sigma=0.1 * np.ones(1)),
    replay_buffer_class=SubclassedReplayBuffer,  # given, not picked: SB3's n-step buffer has no optimize_memory_usage
    replay_buffer_kwargs=dict(handle_timeout_termination=False),
    optimize_memory_usage=True,
    n_steps=3,
    num_samples=4,
    epsilon_mean=0.02,
    epsilon_std=1e-5,
    init_log_alpha_mean=0.5,
    init_log_alpha_std=100.0,
    dual_learning_rate=0.1,
    per_dim_constraining=False,
    squashing="cube_root",
    natural_gradient=False,
    target_aggregation="max",
    target_update_interval=7,
    policy_delay=3,
    ent_coef="auto_0.5",
    target_entropy=-0.5,
    entropy_in_target=True,
    max_grad_norm=10.0,
    check_finite=False,
    stats_window_size=10,
    tensorboard_log="tensorboard",  # under tmp_path in the test
    policy_kwargs=dict(
        net_arch=[16], n_critics=3, layer_norm=True, init_std=0.3, max_std=2.0, activation_fn=nn.Tanh, tanh_actions=True
    ),
    verbose=2,
    seed=3,
)
# Arguments that are not part of the saved model, with the reason.
NOT_SAVED = {
    "env": "SB3 saves the spaces, not the environment: load takes env",
    "device": "SB3 does not save the device: load takes device",
    "_init_setup_model": "load always sets the model up",
}
# Where the model keeps an argument, when not under its own name.
ATTRIBUTE = {"policy": "policy_class", "stats_window_size": "_stats_window_size"}


def same(a: Any, b: Any) -> bool:
    """Equality, by type and attributes for objects without their own (action noise)."""
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a).__eq__ is object.__eq__ and hasattr(a, "__dict__"):
        return type(a) is type(b) and same(vars(a), vars(b))
    return bool(a == b)


def stored(model: WPO, name: str) -> Any:
    return getattr(model, ATTRIBUTE.get(name, name))


def test_every_constructor_argument_is_known_to_the_round_trip():
    arguments = set(inspect.signature(WPO.__init__).parameters) - {"self"}
    unknown = sorted(arguments - NON_DEFAULTS.keys() - NOT_SAVED.keys())
    assert not unknown, f"new WPO.__init__ arguments {unknown}: add a non-default value to NON_DEFAULTS (or to NOT_SAVED)"
    stale = sorted((NON_DEFAULTS.keys() | NOT_SAVED.keys()) - arguments)
    assert not stale, f"{stale} are no longer WPO.__init__ arguments"


def test_save_and_load_keep_every_constructor_argument(tmp_path: Path):
    arguments = {**NON_DEFAULTS, "tensorboard_log": str(tmp_path / NON_DEFAULTS["tensorboard_log"])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SB3's note that n_steps does not reach a replay_buffer_class given
        model = WPO(env=ENV_ID, **arguments)
        default = WPO("MlpPolicy", ENV_ID)
        model.save(tmp_path / "wpo.zip")
        loaded = WPO.load(tmp_path / "wpo.zip", env=gym.make(ENV_ID))
    for name in arguments:
        assert not same(stored(model, name), stored(default, name)), f"{name}: the test's value is the default"
        assert same(stored(loaded, name), stored(model, name)), (
            f"{name}: saved {stored(model, name)!r}, loaded {stored(loaded, name)!r}"
        )
