"""Property tests of the WPO loss: over random shapes, stds from 1e-6 to 1e3, large action-gradients of Q and
masked-out batches, the loss and its gradients stay finite, and the closed-form and autograd score paths agree."""

from typing import Any

import numpy as np
import pytest
import torch as th
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sb3_wpo.losses import ScoreMethod, wpo_loss

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True)
WRT = ("online_mean", "online_std", "log_alpha_mean", "log_alpha_std")


def floats(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


@st.composite
def loss_inputs(draw: st.DrawFn) -> dict:
    n, b, d = draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.integers(1, 3))
    per_dim = draw(st.booleans())

    def array(shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
        return draw(hnp.arrays(np.float64, shape, elements=floats(low, high)))

    online_std = 10.0 ** array((b, d), -6.0, 3.0)
    target_std = 10.0 ** array((b, d), -6.0, 3.0)
    online_mean = array((b, d), -10.0, 10.0)
    target_mean = online_mean + array((b, d), -3.0, 3.0) * target_std
    actions = online_mean + online_std * array((n, b, d), -5.0, 5.0)  # samples of the online policy
    q_scale = draw(st.sampled_from([0.0, 1e-3, 1.0, 1e3, 1e6]))
    q_grads = array((n, b, d), -1.0, 1.0) * q_scale
    n_duals = d if per_dim else 1
    mask_kind = draw(st.sampled_from(["none", "random", "all_masked"]))
    mask = {
        "none": None,
        "random": draw(hnp.arrays(np.bool_, (b,))),
        "all_masked": np.zeros(b, np.bool_),
    }[mask_kind]
    return dict(
        tensors=dict(
            online_mean=online_mean,
            online_std=online_std,
            target_mean=target_mean,
            target_std=target_std,
            actions=actions,
            q_grads=q_grads,
            log_alpha_mean=array((n_duals,), -18.0, 20.0),
            log_alpha_std=array((n_duals,), -18.0, 1e4),
        ),
        mask=mask,
        settings=dict(
            epsilon_mean=draw(st.sampled_from([1e-3, 0.01, 0.1])),
            epsilon_std=draw(st.sampled_from([1e-6, 1e-4, 0.01])),
            per_dim_constraining=per_dim,
            squashing=draw(st.sampled_from(["identity", "cube_root"])),
            natural_gradient=draw(st.booleans()),
        ),
    )


def loss_and_grads(inputs: dict, score_method: ScoreMethod, dtype: th.dtype) -> tuple[th.Tensor, list[th.Tensor]]:
    tensors: dict[str, Any] = {
        name: th.tensor(value, dtype=dtype, requires_grad=name in WRT) for name, value in inputs["tensors"].items()
    }
    mask = None if inputs["mask"] is None else th.tensor(inputs["mask"])
    loss, stats = wpo_loss(**tensors, mask=mask, **inputs["settings"], score_method=score_method)
    grads = th.autograd.grad(loss, [tensors[name] for name in WRT])
    for name, value in stats.items():
        assert th.isfinite(value).all(), name
    return loss.detach(), [grad.detach() for grad in grads]


@pytest.mark.parametrize("dtype", [th.float64, th.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("score_method", ["closed_form", "autograd"])
@SETTINGS
@given(inputs=loss_inputs())
def test_loss_and_gradients_stay_finite(inputs: dict, score_method: ScoreMethod, dtype: th.dtype):
    loss, grads = loss_and_grads(inputs, score_method, dtype)
    assert th.isfinite(loss)
    for name, grad in zip(WRT, grads, strict=True):
        assert th.isfinite(grad).all(), name


def close(a: th.Tensor, b: th.Tensor, scale: float, rtol: float = 1e-9) -> bool:
    return bool(th.all((a - b).abs() <= rtol * (scale + a.abs().max() + b.abs().max())))


@SETTINGS
@given(inputs=loss_inputs())
def test_closed_form_and_autograd_scores_agree(inputs: dict):
    loss_closed, grads_closed = loss_and_grads(inputs, "closed_form", th.float64)
    loss_auto, grads_auto = loss_and_grads(inputs, "autograd", th.float64)
    assert close(loss_closed, loss_auto, 1.0)
    for name, closed, auto in zip(WRT, grads_closed, grads_auto, strict=True):
        assert close(closed, auto, 1.0), name


@SETTINGS
@given(inputs=loss_inputs())
def test_masked_states_do_not_enter_the_policy_term(inputs: dict):
    """Masked-out states change neither the loss nor the mean's gradient through the policy term: with all states
    masked, the mean only gets the KL term's gradient (the same as with zero action-gradients of Q)."""
    b = inputs["tensors"]["online_mean"].shape[0]
    masked = {**inputs, "mask": np.zeros(b, np.bool_)}
    no_q = {**inputs, "tensors": {**inputs["tensors"], "q_grads": np.zeros_like(inputs["tensors"]["q_grads"])}, "mask": None}
    loss_masked, grads_masked = loss_and_grads(masked, "closed_form", th.float64)
    loss_no_q, grads_no_q = loss_and_grads(no_q, "closed_form", th.float64)
    assert close(loss_masked, loss_no_q, 1.0)
    for name, grad_masked, grad_no_q in zip(WRT, grads_masked, grads_no_q, strict=True):
        assert close(grad_masked, grad_no_q, 1.0), name
