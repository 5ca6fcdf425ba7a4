"""Assertions shared by the tests."""

import inspect
from typing import Any

import numpy as np
import torch as th
from torch import nn

from sb3_wpo import WPO
from sb3_wpo.policies import WPOPolicy


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Exact equality of nested dicts, lists, tensors and arrays (state and optimizer dicts); names the first difference."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, th.Tensor):
        assert th.equal(a.cpu(), b.cpu()), where  # values: a model loaded on a GPU keeps Adam's step there
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, where


def defaults_of(function: Any) -> dict[str, Any]:
    """A function's defaults, by argument name."""
    parameters = inspect.signature(function).parameters.items()
    return {name: parameter.default for name, parameter in parameters if parameter.default is not inspect.Parameter.empty}


def wpo_defaults() -> dict[str, Any]:
    """WPO's constructor defaults, by argument name."""
    return defaults_of(WPO.__init__)


def policy_kwargs_of(value: str | dict[str, Any] | None) -> dict[str, Any]:
    """``policy_kwargs`` as a config holds it: a ``"dict(...)"`` string (evaluated with ``nn``, as the RL Zoo does), a
    dict, or None."""
    if value is None:
        return {}
    return eval(value, {"nn": nn}) if isinstance(value, str) else dict(value)


def policy_defaults() -> dict[str, Any]:
    """The policy's defaults (``policy_kwargs``), by argument name; net_arch as the policy resolves None."""
    return {**defaults_of(WPOPolicy.__init__), "net_arch": [256, 256]}


# WPO's defaults before they became the MuJoCo family's tuned settings, where they differ. The benchmark records
# written before then (benchmarks/results/*/runs.jsonl) ran with these where their hyperparameters do not set the key;
# every campaign variant sets these keys since (tests/test_benchmarks.py), and its networks in full.
EARLIER_DEFAULTS = {"train_freq": 2, "num_samples": 8, "policy_delay": 1}
EARLIER_POLICY_DEFAULTS = {"layer_norm": False, "activation_fn": nn.ReLU, "n_critics": 1}
