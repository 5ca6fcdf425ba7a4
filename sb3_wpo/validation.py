"""What WPO accepts, checked before it is used, with errors that name the argument, the value and what is allowed.

Wrong types raise ``TypeError``, values out of range or not among the choices raise ``ValueError``. Each rule is a
callable ``rule(name, value)``; a table ``{name: rule}`` is checked with :func:`check_all`. WPO's table is
``ARGUMENT_RULES``, checked with the combinations SB3 would reject later by :func:`check_arguments`; the policy and
device are checked before SB3's constructor (:func:`check_policy_and_device`), the environment when SB3 wraps it
(:func:`check_env`), before any step.
"""

import inspect
import math
import numbers
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.type_aliases import TrainFrequencyUnit

from sb3_wpo.losses import SQUASHING_TYPES

Rule = Callable[[str, Any], None]
FLOAT32_MAX = float(np.finfo(np.float32).max)  # networks, duals and actions are float32 tensors


class UnsupportedError(ValueError, AssertionError):
    """A ``ValueError`` for what SB3 itself only asserts (unsupported spaces, n-step Dict buffers): code written
    against SB3's ``AssertionError`` keeps working."""


def _type_error(name: str, value: Any, allowed: str) -> TypeError:
    return TypeError(f"{name} must be {allowed}, got {value!r} of type {type(value).__name__}")


def _value_error(name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{name} must be {allowed}, got {value!r}")


def is_int(value: Any) -> bool:
    """Python or NumPy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """Python or NumPy real number, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def as_int(value: Any) -> Any:
    """An integral number as an int (``1e4`` → 10000, as YAML files and SAC users write it); anything else as it is,
    for the rules to refuse."""
    if is_int(value):
        return int(value)
    if is_real(value) and math.isfinite(float(value)) and float(value).is_integer():
        return int(value)
    return value


def as_float(value: Any) -> Any:
    """A real number as a Python float (NumPy's float32 is not a ``float``, which SB3's schedules require)."""
    return float(value) if is_real(value) and not is_int(value) else value


def integer(min_value: int | None = None, max_value: int | None = None) -> Rule:
    """An integer in [min_value, max_value]."""
    bounds = [f">= {min_value}" if min_value is not None else "", f"<= {max_value}" if max_value is not None else ""]
    allowed = "an integer" + (" " + " and ".join(b for b in bounds if b) if any(bounds) else "")

    def rule(name: str, value: Any) -> None:
        if not is_int(value):
            raise _type_error(name, value, allowed)
        if (min_value is not None and value < min_value) or (max_value is not None and value > max_value):
            raise _value_error(name, value, allowed)

    return rule


def real(
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
) -> Rule:
    """A real number (never NaN) in the interval between ``low`` and ``high``, finite unless ``allow_inf``."""
    if low is None and high is None:
        allowed = "a finite number" if not allow_inf else "a number (not NaN)"
    else:
        left = "-inf" if low is None else f"{low:g}"
        right = "inf" if high is None else f"{high:g}"
        opening = "(" if low_open or low is None else "["
        closing = ")" if high_open or high is None else "]"
        allowed = f"a number in {opening}{left}, {right}{closing}"
        if allow_inf and high is None:
            allowed += " (inf allowed)"

    def rule(name: str, value: Any) -> None:
        if not is_real(value):
            raise _type_error(name, value, allowed)
        number = float(value)
        if math.isnan(number) or (math.isinf(number) and not allow_inf):
            raise _value_error(name, value, allowed)
        if low is not None and (number < low or (low_open and number == low)):
            raise _value_error(name, value, allowed)
        if high is not None and (number > high or (high_open and number == high)):
            raise _value_error(name, value, allowed)

    return rule


def boolean() -> Rule:
    def rule(name: str, value: Any) -> None:
        if not isinstance(value, bool):
            raise _type_error(name, value, "a bool (True or False)")

    return rule


def one_of(choices: Iterable[Any]) -> Rule:
    choices = tuple(choices)

    def rule(name: str, value: Any) -> None:
        if not isinstance(value, str) and all(isinstance(choice, str) for choice in choices):
            raise _type_error(name, value, f"one of {choices}")
        if value not in choices:
            raise _value_error(name, value, f"one of {choices}")

    return rule


def instance_of(types: type | tuple[type, ...], allowed: str) -> Rule:
    def rule(name: str, value: Any) -> None:
        if not isinstance(value, types):
            raise _type_error(name, value, allowed)

    return rule


def subclass_of(base: type, allowed: str | None = None) -> Rule:
    allowed = allowed or f"a subclass of {base.__module__}.{base.__qualname__}"

    def rule(name: str, value: Any) -> None:
        if not (isinstance(value, type) and issubclass(value, base)):
            raise _type_error(name, value, allowed)

    return rule


def a_callable() -> Rule:
    def rule(name: str, value: Any) -> None:
        if not callable(value):
            raise _type_error(name, value, "a callable")

    return rule


def optional(inner: Rule) -> Rule:
    """``None`` or a value accepted by ``inner``."""

    def rule(name: str, value: Any) -> None:
        if value is not None:
            inner(name, value)

    return rule


def either(*rules: Rule, allowed: str) -> Rule:
    """A value accepted by at least one of ``rules``; the error is that of the first rule if all refuse."""

    def rule(name: str, value: Any) -> None:
        errors: list[Exception] = []
        for inner in rules:
            try:
                inner(name, value)
                return
            except (TypeError, ValueError) as error:
                errors.append(error)
        if all(isinstance(error, TypeError) for error in errors):
            raise _type_error(name, value, allowed)
        raise _value_error(name, value, allowed)

    return rule


def check_all(rules: Mapping[str, Rule], values: Mapping[str, Any], prefix: str = "") -> None:
    """Check ``values[name]`` with ``rules[name]`` for each name present in both."""
    for name, rule in rules.items():
        if name in values:
            rule(f"{prefix}{name}", values[name])


def check_net_arch(name: str, net_arch: Any) -> None:
    """``None``, a list of positive layer sizes, or a dict with the keys ``pi`` and ``qf`` mapping to such lists."""
    allowed = "a list of positive integers (layer sizes) or a dict(pi=[...], qf=[...]) of such lists"
    if net_arch is None:
        return
    if isinstance(net_arch, dict):
        if set(net_arch) != {"pi", "qf"}:
            raise _value_error(name, net_arch, f"{allowed} (a dict needs exactly the keys 'pi' and 'qf')")
        layer_lists = list(net_arch.values())
    else:
        layer_lists = [net_arch]
    for layers in layer_lists:
        if not isinstance(layers, list) or not all(is_int(layer) for layer in layers):
            raise _type_error(name, net_arch, allowed)
        if any(layer < 1 for layer in layers):
            raise _value_error(name, net_arch, allowed)


def accepted_keywords(cls: type, exclude: Iterable[str] = ()) -> set[str] | None:
    """Keyword arguments of ``cls.__init__``, following ``**kwargs`` up the MRO; None if any are accepted."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()  # type: ignore[misc]
        names |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return names - {"self", *exclude}
    return None


# Observation spaces SB3's preprocessing handles (a Dict may hold any of them, not another Dict or a Tuple).
SUPPORTED_OBSERVATION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def check_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """WPO's Gaussian policy needs a Box action space with a float dtype and finite, non-empty bounds."""
    if not isinstance(action_space, spaces.Box):
        raise UnsupportedError(
            f"action_space must be a gymnasium.spaces.Box (continuous actions): WPO's Gaussian policy cannot produce "
            f"{type(action_space).__name__} actions, got {action_space}"
        )
    if not np.issubdtype(action_space.dtype, np.floating):
        raise UnsupportedError(
            f"action_space must have a floating-point dtype, got {action_space} with dtype {action_space.dtype}"
        )
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise UnsupportedError(
            "action_space must have finite bounds (actions are scaled to [-1, 1] between low and high), "
            f"got low={action_space.low}, high={action_space.high}"
        )
    if np.any(np.abs(action_space.low.astype(np.float64)) > FLOAT32_MAX / 2) or np.any(
        np.abs(action_space.high.astype(np.float64)) > FLOAT32_MAX / 2
    ):
        raise UnsupportedError(
            f"action_space bounds must be within ±{FLOAT32_MAX / 2:.3g} (high - low must be a finite float32: actions "
            f"are scaled to [-1, 1] between them), got low={action_space.low}, high={action_space.high}"
        )
    if not np.all(action_space.high > action_space.low):
        raise UnsupportedError(
            f"action_space must have high > low in every dimension, got low={action_space.low}, high={action_space.high}"
        )
    allowed = "a Box, Discrete, MultiDiscrete, MultiBinary, or a Dict of those"
    subspaces = observation_space.spaces.values() if isinstance(observation_space, spaces.Dict) else [observation_space]
    for subspace in subspaces:
        if not isinstance(subspace, SUPPORTED_OBSERVATION_SPACES):
            raise UnsupportedError(f"observation_space must be {allowed}, got {observation_space}")


def check_policy_and_device(
    policy: Any, device: Any, verbose: Any, policy_aliases: Mapping[str, type], base_policy: type
) -> None:
    """The policy, device and verbosity, before SB3's constructor uses them (it would fail on them unclearly)."""
    integer(0)("verbose", verbose)
    allowed = f"one of {tuple(policy_aliases)} or a {base_policy.__name__} subclass"
    if isinstance(policy, str) and policy not in policy_aliases:
        raise ValueError(f"policy must be {allowed}, got {policy!r}")
    if not isinstance(policy, str) and not (isinstance(policy, type) and issubclass(policy, base_policy)):
        raise TypeError(f"policy must be {allowed}, got {policy!r}")
    if not isinstance(device, str | th.device):
        raise TypeError(f"device must be a str or a torch.device, got {device!r} of type {type(device).__name__}")
    if isinstance(device, str) and device != "auto":
        try:
            th.device(device)
        except (RuntimeError, ValueError) as error:
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda', 'cuda:<index>' or another torch device, got {device!r}"
            ) from error


def check_env(env: Any) -> None:
    """An environment WPO can learn on: SB3 hands it over to be wrapped, before any reset or step."""
    if not (hasattr(env, "observation_space") and hasattr(env, "action_space")):
        raise TypeError(f"env must be a gymnasium.Env, a VecEnv or a registered environment id, got {env!r}")
    check_spaces(env.observation_space, env.action_space)


# ---------------------------------------------------------------------------------------------------------------
# WPO's arguments

TARGET_AGGREGATIONS = ("mean", "max")
# Arguments given as numbers of another type that WPO takes as SAC does: 1e4 for an integer, np.float32 for a float.
INTEGER_ARGUMENTS = (
    "buffer_size",
    "learning_starts",
    "batch_size",
    "gradient_steps",
    "n_steps",
    "num_samples",
    "target_update_interval",
    "policy_delay",
)
FLOAT_ARGUMENTS = (
    "learning_rate",
    "tau",
    "gamma",
    "epsilon_mean",
    "epsilon_std",
    "init_log_alpha_mean",
    "init_log_alpha_std",
    "dual_learning_rate",
    "ent_coef",
    "target_entropy",
    "max_grad_norm",
)


def normalize_numbers(arguments: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` with integral numbers of the integer arguments as ints and the real ones as Python floats."""
    normalized = dict(arguments)
    for name in INTEGER_ARGUMENTS:
        if name in normalized:
            normalized[name] = as_int(normalized[name])
    for name in FLOAT_ARGUMENTS:
        if name in normalized:
            normalized[name] = as_float(normalized[name])
    train_freq = normalized.get("train_freq")
    if isinstance(train_freq, tuple) and len(train_freq) == 2:
        normalized["train_freq"] = (as_int(train_freq[0]), train_freq[1])
    elif train_freq is not None:
        normalized["train_freq"] = as_int(train_freq)
    return normalized


def train_frequency() -> Rule:
    """An integer >= 1 (steps), or a tuple (integer >= 1, "step" or "episode"), as SB3 takes ``train_freq``."""
    allowed = 'an integer >= 1 or a tuple (integer >= 1, "step" or "episode")'

    def rule(name: str, value: Any) -> None:
        if isinstance(value, tuple) and len(value) != 2:
            raise TypeError(f"{name} must be {allowed}, got {value!r}")
        frequency, unit = value if isinstance(value, tuple) else (value, "step")
        integer(1)(name, frequency)
        if not isinstance(unit, TrainFrequencyUnit) and unit not in ("step", "episode"):
            raise ValueError(f"{name} must be {allowed}, got {value!r}")

    return rule


def entropy_coefficient() -> Rule:
    """A number >= 0 (a fixed weight), "auto" or "auto_<initial value > 0>" (learned), as SAC takes ``ent_coef``."""
    allowed = 'a number >= 0, "auto" or "auto_<initial value>" (e.g. "auto_0.1", a value > 0)'

    def rule(name: str, value: Any) -> None:
        if not isinstance(value, str):
            either(real(0.0, FLOAT32_MAX), allowed=allowed)(name, value)
            return
        prefix, _, initial = value.partition("_")
        try:
            valid = prefix == "auto" and (not initial or 0 < float(initial) < math.inf)
        except ValueError:
            valid = False
        if not valid:
            raise _value_error(name, value, allowed)

    return rule


ARGUMENT_RULES: dict[str, Rule] = {
    "learning_rate": either(real(0.0, low_open=True), a_callable(), allowed="a number > 0 or a schedule (callable)"),
    "buffer_size": integer(1),
    "learning_starts": integer(0),
    "batch_size": integer(1),
    "tau": real(0.0, 1.0, low_open=True),
    "gamma": real(0.0, 1.0),
    "train_freq": train_frequency(),
    "gradient_steps": integer(-1),
    "action_noise": optional(instance_of(ActionNoise, "an ActionNoise or None")),
    "replay_buffer_class": optional(subclass_of(ReplayBuffer)),
    "replay_buffer_kwargs": optional(instance_of(dict, "a dict or None")),
    "optimize_memory_usage": boolean(),
    "n_steps": integer(1),
    "num_samples": integer(1),
    "epsilon_mean": real(0.0, low_open=True),
    "epsilon_std": real(0.0, low_open=True),
    "init_log_alpha_mean": real(-FLOAT32_MAX, FLOAT32_MAX),  # the duals are float32 tensors
    "init_log_alpha_std": real(-FLOAT32_MAX, FLOAT32_MAX),
    "dual_learning_rate": real(0.0),
    "per_dim_constraining": boolean(),
    "squashing": one_of(SQUASHING_TYPES),
    "natural_gradient": boolean(),
    "target_aggregation": one_of(TARGET_AGGREGATIONS),
    "target_update_interval": integer(1),
    "policy_delay": integer(1),
    "ent_coef": entropy_coefficient(),
    "target_entropy": either(one_of(["auto"]), real(), allowed='"auto" or a finite number'),
    "entropy_in_target": boolean(),
    "max_grad_norm": real(0.0, low_open=True, allow_inf=True),
    "check_finite": boolean(),
    "stats_window_size": integer(1),
    "tensorboard_log": optional(instance_of((str, os.PathLike), "a path (str) or None")),
    "policy_kwargs": optional(instance_of(dict, "a dict or None")),
    "seed": optional(integer(0, 2**32 - 1)),
}


def check_arguments(model: OffPolicyAlgorithm, unchecked: Iterable[str] = ()) -> None:
    """A WPO model's arguments (``ARGUMENT_RULES``) but ``unchecked``, then the combinations SB3 would reject later;
    at construction and after ``load`` (whose overrides are arguments too)."""
    values = {name: getattr(model, name) for name in ARGUMENT_RULES if hasattr(model, name) and name not in unchecked}
    values["stats_window_size"] = model._stats_window_size
    check_all(ARGUMENT_RULES, values)

    observation_space = getattr(model, "observation_space", None)
    dict_observations = isinstance(observation_space, spaces.Dict)
    if (
        observation_space is not None
        and not dict_observations
        and issubclass(model.policy_class, model.policy_aliases["MultiInputPolicy"])
    ):
        raise ValueError(f"policy {model.policy_class.__name__} needs a Dict observation_space, got {observation_space}")
    default_buffer = model.replay_buffer_class is None
    if model.n_steps > 1 and dict_observations and default_buffer:
        raise no_n_step_dict_buffer(model.n_steps)
    if model.optimize_memory_usage:
        if dict_observations:
            raise UnsupportedError(
                "optimize_memory_usage=True is not supported with Dict observation spaces (DictReplayBuffer)"
            )
        if model.n_steps > 1 and default_buffer:
            raise ValueError(f"optimize_memory_usage=True is not supported with n_steps > 1, got n_steps={model.n_steps}")
        if model.replay_buffer_class in (None, ReplayBuffer) and model.replay_buffer_kwargs.get(
            "handle_timeout_termination", True
        ):
            raise ValueError(
                "optimize_memory_usage=True needs replay_buffer_kwargs=dict(handle_timeout_termination=False): "
                "SB3's ReplayBuffer cannot do both"
            )
    unit = model.train_freq[1] if isinstance(model.train_freq, tuple) else "step"
    if unit in ("episode", TrainFrequencyUnit.EPISODE) and getattr(model, "n_envs", 1) > 1:
        raise ValueError(f"train_freq in episodes needs a single environment, got {model.train_freq} with {model.n_envs} envs")

    ent_coef = getattr(model, "ent_coef", 0.0)
    if ent_coef != 0 and not model.policy_kwargs.get("tanh_actions", False):
        raise ValueError(
            f"ent_coef={ent_coef!r} needs policy_kwargs=dict(tanh_actions=True): with actions clipped to the "
            "bounds the Gaussian's entropy grows without limit while its samples pile up on the bounds, where ∇a Q is 0"
        )
    if getattr(model, "entropy_in_target", False) and ent_coef == 0:
        raise ValueError('entropy_in_target=True needs an entropy bonus: set ent_coef to a number > 0 or "auto"')
    allowed = accepted_keywords(model.policy_class, exclude=("observation_space", "action_space", "lr_schedule"))
    unknown = sorted(set(model.policy_kwargs) - allowed) if allowed is not None else []
    if unknown:
        raise ValueError(
            f"policy_kwargs has an unknown key {unknown[0]!r} for {model.policy_class.__name__}; "
            f"the allowed keys are {sorted(allowed)}"  # type: ignore[arg-type]
        )


def no_n_step_dict_buffer(n_steps: int) -> UnsupportedError:
    return UnsupportedError(f"n_steps must be 1 with Dict observation spaces (SB3 has no n-step Dict buffer), got {n_steps}")


def check_n_steps_take_effect(model: OffPolicyAlgorithm) -> None:
    """After ``load(..., n_steps=...)``: refuse an ``n_steps`` that the replay buffer does not compute, instead of a
    model whose ``n_steps`` says one thing and whose buffer does another (SB3 only warns)."""
    buffer_n_steps = getattr(model.replay_buffer, "n_steps", 1)
    if buffer_n_steps == model.n_steps:
        return
    if isinstance(model.observation_space, spaces.Dict) and model.replay_buffer_class is DictReplayBuffer:
        raise no_n_step_dict_buffer(model.n_steps)
    buffer_class = model.replay_buffer_class.__name__ if model.replay_buffer_class is not None else None
    raise ValueError(
        f"n_steps={model.n_steps} cannot take effect: the model's replay buffer is the replay_buffer_class passed at "
        f"construction ({buffer_class}, {buffer_n_steps}-step), and SB3 sets up n-step returns only for the buffer it "
        "picks (replay_buffer_class=None)"
    )


def check_saved_duals(model: Any) -> None:
    """After ``load``: the duals saved in the file have the shape that ``per_dim_constraining`` gives them."""
    n_duals = int(np.prod(model.action_space.shape)) if model.per_dim_constraining else 1
    if model.log_alpha_mean.numel() != n_duals:
        raise ValueError(
            f"per_dim_constraining={model.per_dim_constraining} cannot override the saved model's: its duals hold "
            f"{model.log_alpha_mean.numel()} values, one per {'action dimension' if n_duals == 1 else 'model'}"
        )
