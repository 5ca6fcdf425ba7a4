"""Bad arguments, spaces and combinations are refused at construction (before any environment step) with an error
that names the argument, the value and what is allowed."""

import math
import re
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env

from sb3_wpo import WPO, MultiInputPolicy

BOX_OBS = spaces.Box(-1.0, 1.0, (3,), np.float32)
BOX_ACT = spaces.Box(-2.0, 2.0, (2,), np.float32)
HALF_INFINITE_ACT = spaces.Box(np.array([-1.0, 0.0]), np.array([1.0, np.inf]), dtype=np.float64)
DICT_OBS = spaces.Dict({"position": spaces.Box(-1.0, 1.0, (2,), np.float32), "flag": spaces.Discrete(2)})
TINY = dict(buffer_size=500, learning_starts=10, batch_size=8, num_samples=2, policy_kwargs=dict(net_arch=[8]))


class CountingEnv(gym.Env):
    """An environment of the given spaces that counts its steps and resets (it must see none of them)."""

    steps = 0
    resets = 0

    def __init__(self, observation_space: spaces.Space = BOX_OBS, action_space: spaces.Space = BOX_ACT):
        self.observation_space = observation_space
        self.action_space = action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        CountingEnv.resets += 1
        return self.observation_space.sample(), {}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        CountingEnv.steps += 1
        return self.observation_space.sample(), 0.0, False, CountingEnv.steps % 20 == 0, {}


@pytest.fixture(autouse=True)
def no_environment_step():
    CountingEnv.steps = CountingEnv.resets = 0
    yield
    assert CountingEnv.steps == 0 and CountingEnv.resets == 0, "the environment was used before the error"


def build(**overrides: Any) -> WPO:
    kwargs = {**TINY, **overrides}
    policy = kwargs.pop("policy", "MlpPolicy")
    env = kwargs.pop("env", None) or CountingEnv()
    return WPO(policy, env, **kwargs)


def policy_kwargs(**overrides: Any) -> dict[str, Any]:
    return dict(policy_kwargs={"net_arch": [8], **overrides})


NAN, INF = math.nan, math.inf

# (argument named in the error, constructor overrides, expected error type)
BAD_ARGUMENTS = [
    ("learning_rate", dict(learning_rate=0.0), ValueError),
    ("learning_rate", dict(learning_rate=-3e-4), ValueError),
    ("learning_rate", dict(learning_rate=NAN), ValueError),
    ("learning_rate", dict(learning_rate="fast"), TypeError),
    ("buffer_size", dict(buffer_size=0), ValueError),
    ("buffer_size", dict(buffer_size=1e4 + 0.5), TypeError),
    ("learning_starts", dict(learning_starts=-1), ValueError),
    ("batch_size", dict(batch_size=0), ValueError),
    ("batch_size", dict(batch_size=True), TypeError),
    ("tau", dict(tau=0.0), ValueError),
    ("tau", dict(tau=1.5), ValueError),
    ("tau", dict(tau=NAN), ValueError),
    ("gamma", dict(gamma=-0.1), ValueError),
    ("gamma", dict(gamma=1.01), ValueError),
    ("gamma", dict(gamma="0.99"), TypeError),
    ("train_freq", dict(train_freq=0), ValueError),
    ("train_freq", dict(train_freq=(1, "epoch")), ValueError),
    ("train_freq", dict(train_freq=(1, "step", 2)), TypeError),
    ("train_freq", dict(train_freq=1.5), TypeError),
    ("gradient_steps", dict(gradient_steps=-2), ValueError),
    ("action_noise", dict(action_noise="gaussian"), TypeError),
    ("replay_buffer_class", dict(replay_buffer_class=dict), TypeError),
    ("replay_buffer_kwargs", dict(replay_buffer_kwargs=[("n_steps", 3)]), TypeError),
    ("optimize_memory_usage", dict(optimize_memory_usage="yes"), TypeError),
    ("n_steps", dict(n_steps=0), ValueError),
    ("num_samples", dict(num_samples=0), ValueError),
    ("num_samples", dict(num_samples=2.5), TypeError),
    ("epsilon_mean", dict(epsilon_mean=0.0), ValueError),
    ("epsilon_std", dict(epsilon_std=-1e-6), ValueError),
    ("epsilon_std", dict(epsilon_std=INF), ValueError),
    ("init_log_alpha_mean", dict(init_log_alpha_mean=INF), ValueError),
    ("init_log_alpha_mean", dict(init_log_alpha_mean=1e39), ValueError),  # beyond float32
    ("init_log_alpha_std", dict(init_log_alpha_std="big"), TypeError),
    ("dual_learning_rate", dict(dual_learning_rate=-1e-3), ValueError),
    ("per_dim_constraining", dict(per_dim_constraining=1), TypeError),
    ("squashing", dict(squashing="tanh"), ValueError),
    ("squashing", dict(squashing=None), TypeError),
    ("natural_gradient", dict(natural_gradient=None), TypeError),
    ("target_aggregation", dict(target_aggregation="min"), ValueError),
    ("target_update_interval", dict(target_update_interval=0), ValueError),
    ("target_update_interval", dict(target_update_interval=2.5), TypeError),
    ("policy_delay", dict(policy_delay=0), ValueError),
    ("policy_delay", dict(policy_delay=1.5), TypeError),
    ("ent_coef", dict(ent_coef=-0.1), ValueError),
    ("ent_coef", dict(ent_coef=INF), ValueError),
    ("ent_coef", dict(ent_coef="automatic"), ValueError),
    ("ent_coef", dict(ent_coef="auto_0"), ValueError),
    ("ent_coef", dict(ent_coef="auto_high"), ValueError),
    ("ent_coef", dict(ent_coef=None), TypeError),
    ("target_entropy", dict(target_entropy="high"), ValueError),
    ("target_entropy", dict(target_entropy=NAN), ValueError),
    ("entropy_in_target", dict(entropy_in_target=1), TypeError),
    ("max_grad_norm", dict(max_grad_norm=0.0), ValueError),
    ("max_grad_norm", dict(max_grad_norm=NAN), ValueError),
    ("check_finite", dict(check_finite="no"), TypeError),
    ("stats_window_size", dict(stats_window_size=0), ValueError),
    ("tensorboard_log", dict(tensorboard_log=5), TypeError),
    ("policy_kwargs", dict(policy_kwargs=[("net_arch", [8])]), TypeError),
    ("verbose", dict(verbose=-1), ValueError),
    ("verbose", dict(verbose="loud"), TypeError),
    ("seed", dict(seed=-5), ValueError),
    ("seed", dict(seed=1.5), TypeError),
    ("device", dict(device="tpu9"), ValueError),
    ("device", dict(device=3), TypeError),
    ("policy", dict(policy="FooPolicy"), ValueError),
    ("policy", dict(policy=dict), TypeError),
    ("env", dict(env=[1, 2]), TypeError),
]

BAD_POLICY_ARGUMENTS = [
    ("net_arch", dict(net_arch=[64, 0]), ValueError),
    ("net_arch", dict(net_arch=[64, -8]), ValueError),
    ("net_arch", dict(net_arch=[64, "wide"]), TypeError),
    ("net_arch", dict(net_arch=[64, 32.0]), TypeError),
    ("net_arch", dict(net_arch=64), TypeError),
    ("net_arch", dict(net_arch=dict(pi=[8])), ValueError),
    ("net_arch", dict(net_arch=dict(pi=[8], qf=[0])), ValueError),
    ("init_std", dict(init_std=0.0), ValueError),
    ("init_std", dict(init_std=-0.5), ValueError),
    ("init_std", dict(init_std=NAN), ValueError),
    ("init_std", dict(init_std=1e30), ValueError),  # σ² overflows float32
    ("min_std", dict(min_std=-1e-3), ValueError),
    ("min_std", dict(min_std="tiny"), TypeError),
    ("max_std", dict(max_std=0.0), ValueError),
    ("max_std", dict(max_std=0.4), ValueError),  # not above init_std (0.5)
    ("max_std", dict(max_std="big"), TypeError),
    ("n_critics", dict(n_critics=0), ValueError),
    ("n_critics", dict(n_critics=1.5), TypeError),
    ("activation_fn", dict(activation_fn="relu"), TypeError),
    ("activation_fn", dict(activation_fn=th.relu), TypeError),
    ("layer_norm", dict(layer_norm="yes"), TypeError),
    ("tanh_actions", dict(tanh_actions=1), TypeError),
    ("optimizer_class", dict(optimizer_class=str), TypeError),
    ("optimizer_kwargs", dict(optimizer_kwargs=3), TypeError),
    ("features_extractor_class", dict(features_extractor_class=th.nn.Linear), TypeError),
    ("normalize_images", dict(normalize_images=None), TypeError),
    ("share_features_extractor", dict(share_features_extractor=1), TypeError),
    ("nett_arch", dict(nett_arch=[8]), ValueError),  # unknown key
    ("use_sde", dict(use_sde=True), ValueError),  # a SAC option, unknown to WPO
]

BAD_SPACES = [
    ("action_space", dict(env=CountingEnv(action_space=spaces.Discrete(3)))),
    ("action_space", dict(env=CountingEnv(action_space=spaces.MultiDiscrete([2, 3])))),
    ("action_space", dict(env=CountingEnv(action_space=spaces.MultiBinary(2)))),
    ("action_space", dict(env=CountingEnv(action_space=spaces.Box(-np.inf, np.inf, (2,), np.float32)))),
    ("action_space", dict(env=CountingEnv(action_space=HALF_INFINITE_ACT))),
    ("action_space", dict(env=CountingEnv(action_space=spaces.Box(-3, 3, (2,), np.int64)))),
    ("action_space", dict(env=CountingEnv(action_space=spaces.Box(1.0, 1.0, (2,), np.float32)))),
    ("action_space", dict(env=CountingEnv(action_space=spaces.Box(-3e38, 3e38, (2,), np.float32)))),  # high - low = inf
    ("observation_space", dict(env=CountingEnv(observation_space=spaces.Tuple([BOX_OBS, BOX_OBS])))),
    ("observation_space", dict(env=CountingEnv(observation_space=spaces.Dict({"nested": DICT_OBS})))),
    ("policy", dict(policy="MultiInputPolicy")),  # with a Box observation space
    ("policy", dict(policy=MultiInputPolicy)),
]

BAD_COMBINATIONS = [
    ("n_steps", dict(policy="MultiInputPolicy", env=CountingEnv(DICT_OBS), n_steps=3)),
    ("optimize_memory_usage", dict(policy="MultiInputPolicy", env=CountingEnv(DICT_OBS), optimize_memory_usage=True)),
    ("optimize_memory_usage", dict(optimize_memory_usage=True)),  # SB3's ReplayBuffer also handles timeouts by default
    ("optimize_memory_usage", dict(optimize_memory_usage=True, n_steps=3)),
    ("train_freq", dict(env=make_vec_env(CountingEnv, n_envs=2), train_freq=(1, "episode"))),
    ("ent_coef", dict(ent_coef="auto")),  # an entropy bonus needs tanh actions
    ("ent_coef", dict(ent_coef=0.1)),
    ("entropy_in_target", dict(entropy_in_target=True)),  # with no entropy bonus (ent_coef=0)
]


def case_id(case: tuple) -> str:
    """A test id that is the same in every process (pytest-xdist workers must agree): no memory addresses."""
    value = next(iter(case[1].values()))
    shown = getattr(value, "__qualname__", None) or repr(value)
    return f"{case[0]}={shown}"[:60]


@pytest.mark.parametrize(("name", "overrides", "error"), BAD_ARGUMENTS, ids=[case_id(c) for c in BAD_ARGUMENTS])
def test_bad_argument(name: str, overrides: dict, error: type[Exception]):
    with pytest.raises(error, match=name) as raised:
        build(**overrides)
    value = next(iter(overrides.values()))
    assert repr(value) in str(raised.value), "the message shows the value"
    assert " must be " in str(raised.value), "the message says what is allowed"


@pytest.mark.parametrize(("name", "overrides", "error"), BAD_POLICY_ARGUMENTS, ids=[case_id(c) for c in BAD_POLICY_ARGUMENTS])
def test_bad_policy_argument(name: str, overrides: dict, error: type[Exception]):
    with pytest.raises(error, match=name) as raised:
        build(**policy_kwargs(**overrides))
    if name in ("nett_arch", "use_sde"):  # an unknown key: the message lists the allowed ones
        assert "init_std" in str(raised.value) and "n_critics" in str(raised.value)
    else:
        assert repr(overrides[name]) in str(raised.value) and " must be " in str(raised.value)


@pytest.mark.parametrize(("name", "overrides"), BAD_SPACES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_SPACES)])
def test_unsupported_space(name: str, overrides: dict):
    # A ValueError that is also SB3's AssertionError, for code written against SB3.
    with pytest.raises(ValueError, match=name) as raised:
        build(**overrides)
    assert isinstance(raised.value, AssertionError) or name == "policy"


def test_an_environment_id_is_made_by_sb3_and_refused_before_any_step():
    """SB3 makes the environment from its id; WPO checks its spaces when SB3 wraps it, before a reset or a step."""
    if "CountingDiscreteActions-v0" not in gym.registry:
        gym.register("CountingDiscreteActions-v0", entry_point=lambda: CountingEnv(action_space=spaces.Discrete(3)))
    with pytest.raises(ValueError, match=re.escape("action_space must be a gymnasium.spaces.Box")):
        build(env="CountingDiscreteActions-v0")


@pytest.mark.parametrize(("name", "overrides"), BAD_COMBINATIONS, ids=[n for n, _ in BAD_COMBINATIONS])
def test_inconsistent_combination(name: str, overrides: dict):
    with pytest.raises(ValueError, match=name):
        build(**overrides)


def test_learn_shorter_than_learning_starts_collects_data_like_sac():
    """SB3 lets learn() run shorter than learning_starts (to fill a buffer): no update, transitions kept."""
    model = build(learning_starts=500)
    model.learn(total_timesteps=200)
    assert model.num_timesteps == 200 and model._n_updates == 0 and model.replay_buffer.size() == 200
    CountingEnv.steps = CountingEnv.resets = 0
    with pytest.raises(ValueError, match="total_timesteps"):
        model.learn(total_timesteps=-5)
    with pytest.raises(TypeError, match="total_timesteps"):
        model.learn(total_timesteps="200")


def test_numbers_are_taken_as_sac_takes_them():
    """1e4 for an integer (YAML files write it so), NumPy numbers, np.float32 learning rates (SB3's schedule needs a
    Python float: SAC fails on it with an assertion)."""
    model = build(
        learning_starts=1e3, buffer_size=1e4, batch_size=np.int64(16), learning_rate=np.float32(1e-3), train_freq=2.0
    )
    assert model.train_freq.frequency == 2 and type(model.train_freq.frequency) is int
    assert (model.learning_starts, model.buffer_size, model.batch_size) == (1000, 10_000, 16)
    assert all(type(value) is int for value in (model.learning_starts, model.buffer_size, model.batch_size))
    assert type(model.learning_rate) is float and model.lr_schedule(1.0) == pytest.approx(1e-3)


def test_unknown_policy_kwarg_lists_the_allowed_keys():
    with pytest.raises(ValueError, match=re.escape("'nett_arch'")) as raised:
        build(policy_kwargs=dict(nett_arch=[8]))
    for allowed in ("net_arch", "init_std", "min_std", "n_critics", "layer_norm"):
        assert allowed in str(raised.value)


def test_counted_bad_inputs():
    total = len(BAD_ARGUMENTS) + len(BAD_POLICY_ARGUMENTS) + len(BAD_SPACES) + len(BAD_COMBINATIONS) + 2 + 1
    assert total >= 30


GOOD_EDGE_CASES = [
    dict(tau=1.0, target_update_interval=1),
    dict(tau=0.005, target_update_interval=10),  # Polyak every 10 updates: allowed by design
    dict(max_grad_norm=INF),
    dict(learning_rate=lambda progress: 1e-3 * progress),
    dict(train_freq=(2, "episode"), gradient_steps=-1),
    dict(gradient_steps=0, learning_starts=0, seed=0, gamma=1.0, dual_learning_rate=0.0),
    dict(num_samples=np.int64(3), batch_size=np.int32(4), epsilon_mean=np.float32(0.1), dual_learning_rate=0.1),
    dict(optimize_memory_usage=True, replay_buffer_kwargs=dict(handle_timeout_termination=False)),
    dict(policy_kwargs=dict(net_arch=dict(pi=[8], qf=[8, 8]), min_std=0.0, n_critics=2, layer_norm=True)),
    dict(policy_kwargs=dict(net_arch=[], init_std=1e-3)),
    dict(policy_kwargs=dict(init_std=0.5, max_std=0.5001, min_std=0.0)),
    dict(policy="MultiInputPolicy", env=CountingEnv(DICT_OBS)),
    dict(env=CountingEnv(action_space=spaces.Box(-1.0, 1.0, (2, 2), np.float64))),
]


@pytest.mark.parametrize("overrides", GOOD_EDGE_CASES, ids=range(len(GOOD_EDGE_CASES)))
def test_edge_values_are_accepted(overrides: dict):
    build(**overrides)


def test_epsilon_without_learned_duals_warns(tmp_path):
    """With a fixed α (dual_learning_rate=0) ε never enters the loss: setting it is a silent no-op unless we say so."""
    with pytest.warns(UserWarning, match=r"epsilon_mean=0.001 .* no effect with dual_learning_rate=0"):
        model = build(epsilon_mean=0.001)
    model.save(tmp_path / "model")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build(epsilon_mean=0.001, dual_learning_rate=0.1)
        build(init_log_alpha_mean=2.0)
        WPO.load(tmp_path / "model")


def test_load_overrides_are_validated(tmp_path):
    build().save(tmp_path / "model")
    with pytest.raises(ValueError, match="tau") as raised:
        WPO.load(tmp_path / "model", tau=5.0)
    assert "model.zip" in str(raised.value)
    assert WPO.load(tmp_path / "model", tau=0.5).tau == 0.5


class EndlessEnv(gym.Env):
    observation_space = BOX_OBS
    action_space = BOX_ACT

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        return self.observation_space.sample(), 0.0, False, False, {}


def test_episodic_train_freq_on_an_endless_env_raises_instead_of_hanging():
    model = WPO("MlpPolicy", EndlessEnv(), train_freq=(1, "episode"), **TINY)
    with pytest.raises(RuntimeError, match="TimeLimit") as raised:
        model.learn(100)
    assert "none has ended in 10000 steps" in str(raised.value) and model.num_timesteps == 10_001
    model = WPO("MlpPolicy", gym.wrappers.TimeLimit(EndlessEnv(), 50), train_freq=(1, "episode"), **TINY)
    model.learn(100)  # episodes end: SB3's behaviour, an episode longer than the budget included
    assert model.num_timesteps == 100
