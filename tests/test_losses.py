"""The WPO loss against the reference (Acme, JAX) golden values, and the generic score path on a mixture policy."""

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from torch import distributions as thd

from sb3_wpo.losses import ScoreMethod, autograd_score, gaussian_score, wpo_loss, wpo_policy_loss

DATA = Path(__file__).parent / "data"
GOLDEN = np.load(DATA / "wpo_reference_golden.npz")  # a missing fixture fails collection, never skips
CASES = json.loads((DATA / "wpo_reference_golden.json").read_text())
TOLERANCE = {th.float64: 1e-9, th.float32: 1e-4}


def relative_error(actual: th.Tensor, expected: np.ndarray) -> float:
    """Max-norm relative error; exact zeros in the reference must be matched to the tolerance in absolute terms."""
    actual_np = actual.detach().cpu().double().numpy()
    scale = max(float(np.max(np.abs(expected))), 1.0 if not np.any(expected) else 0.0)
    return float(np.max(np.abs(actual_np - expected))) / scale


def case_inputs(case: str, dtype: th.dtype) -> dict[str, Any]:
    def tensor(name: str, requires_grad: bool = False) -> th.Tensor:
        return th.tensor(GOLDEN[f"{case}/{name}"], dtype=dtype, requires_grad=requires_grad)

    return dict(
        online_mean=tensor("online_mean", True),
        online_std=tensor("online_std", True),
        target_mean=tensor("target_mean"),
        target_std=tensor("target_std"),
        actions=tensor("actions"),
        q_grads=tensor("q_grads"),
        log_alpha_mean=tensor("log_alpha_mean", True),
        log_alpha_std=tensor("log_alpha_std", True),
        mask=th.tensor(~GOLDEN[f"{case}/is_terminal"]),
    )


def case_settings(case: str) -> dict[str, Any]:
    settings = {k: v for k, v in CASES[case].items() if k not in ("batch_size", "num_samples", "action_dim")}
    return settings


def test_fixture_lists_every_case():
    assert len(CASES) >= 7
    for case, settings in CASES.items():
        actions = GOLDEN[f"{case}/actions"]
        assert actions.shape == (settings["num_samples"], settings["batch_size"], settings["action_dim"])


@pytest.mark.parametrize("dtype", [th.float64, th.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("score_method", ["closed_form", "autograd"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_total_loss_and_gradients_match_reference(case: str, score_method: ScoreMethod, dtype: th.dtype):
    inputs = case_inputs(case, dtype)
    loss, stats = wpo_loss(**inputs, **case_settings(case), score_method=score_method)
    wrt = ["online_mean", "online_std", "log_alpha_mean", "log_alpha_std"]
    grads = th.autograd.grad(loss, [inputs[name] for name in wrt])
    tolerance = TOLERANCE[dtype]
    assert relative_error(loss, GOLDEN[f"{case}/loss"]) <= tolerance
    for name, grad in zip(wrt, grads, strict=True):
        assert relative_error(grad, GOLDEN[f"{case}/grad_{name}"]) <= tolerance, name
    assert relative_error(stats["policy_loss"], GOLDEN[f"{case}/policy_loss"]) <= tolerance
    assert relative_error(stats["alpha_mean"], GOLDEN[f"{case}/stat_alpha_mean"]) <= tolerance
    assert relative_error(stats["alpha_std"], GOLDEN[f"{case}/stat_alpha_std"]) <= tolerance
    assert relative_error(stats["kl_mean_rel"], GOLDEN[f"{case}/stat_kl_mean_rel"]) <= tolerance
    assert relative_error(stats["kl_std_rel"], GOLDEN[f"{case}/stat_kl_std_rel"]) <= tolerance


@pytest.mark.parametrize("dtype", [th.float64, th.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("score_method", ["closed_form", "autograd"])
@pytest.mark.parametrize("natural_gradient", [True, False], ids=["natural", "plain"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_policy_term_gradients_match_reference(case: str, natural_gradient: bool, score_method: ScoreMethod, dtype: th.dtype):
    inputs = case_inputs(case, dtype)
    settings = dict(case_settings(case), policy_loss_scale=1.0, kl_loss_scale=0.0, dual_loss_scale=0.0)
    policy_loss, _ = wpo_loss(**inputs, **settings, natural_gradient=natural_gradient, score_method=score_method)
    grad_mean, grad_std = th.autograd.grad(policy_loss, [inputs["online_mean"], inputs["online_std"]])
    kind = "natural" if natural_gradient else "plain"
    assert relative_error(policy_loss, GOLDEN[f"{case}/policy_loss"]) <= TOLERANCE[dtype]
    assert relative_error(grad_mean, GOLDEN[f"{case}/policy_grad_mean_{kind}"]) <= TOLERANCE[dtype]
    assert relative_error(grad_std, GOLDEN[f"{case}/policy_grad_std_{kind}"]) <= TOLERANCE[dtype]


def test_natural_gradient_is_variance_rescaling():
    """Closed form: the natural gradient is the plain one times σ² (mean) and σ²/2 (std)."""
    inputs = case_inputs("paper_example", th.float64)
    settings = dict(case_settings("paper_example"), kl_loss_scale=0.0, dual_loss_scale=0.0)
    grads = {}
    for natural in (True, False):
        loss, _ = wpo_loss(**inputs, **settings, natural_gradient=natural)
        grads[natural] = th.autograd.grad(loss, [inputs["online_mean"], inputs["online_std"]])
    variance = inputs["online_std"].detach() ** 2
    th.testing.assert_close(grads[True][0], grads[False][0] * variance)
    th.testing.assert_close(grads[True][1], grads[False][1] * variance / 2)


def test_gaussian_score_equals_autograd_score():
    mean, std = th.randn(5, 3, dtype=th.float64), th.rand(5, 3, dtype=th.float64) + 0.1
    actions = mean + std * th.randn(7, 5, 3, dtype=th.float64)
    th.testing.assert_close(gaussian_score(actions, mean, std), autograd_score(thd.Normal(mean, std).log_prob, actions))


@pytest.mark.parametrize("bad", [{"squashing": "tanh"}, {"score_method": "double_backward"}])
def test_loss_rejects_unknown_options(bad: dict):
    inputs = case_inputs("acme_defaults", th.float64)
    with pytest.raises(ValueError, match=next(iter(bad))):
        wpo_loss(**inputs, epsilon_mean=0.01, epsilon_std=1e-6, **bad)


def test_all_masked_batch_gives_zero_policy_term():
    inputs = case_inputs("acme_defaults", th.float64)
    inputs["mask"] = th.zeros_like(inputs["mask"])
    _, stats = wpo_loss(**inputs, epsilon_mean=0.01, epsilon_std=1e-6)
    assert stats["policy_loss"].item() == 0.0


def test_mixture_policy_moves_to_both_maxima():
    """The paper's toy: Q(a) = −a⁴/100 + a² has maxima at ±√50. A per-dimension mixture of two Gaussians,
    trained with the generic (autograd) score, puts one component on each maximum."""
    th.manual_seed(0)
    action_dim, num_samples = 2, 64
    locs = th.tensor([[-0.5, 0.5]] * action_dim, requires_grad=True)  # [D, 2 components]
    log_scales = th.full((action_dim, 2), math.log(0.3), requires_grad=True)
    logits = th.zeros(action_dim, 2)  # equal, fixed weights: the toy is about where the components go
    optimizer = th.optim.Adam([locs, log_scales], lr=0.05)

    def policy() -> thd.Distribution:
        components = thd.Normal(locs, log_scales.exp())
        return thd.Independent(thd.MixtureSameFamily(thd.Categorical(logits=logits), components), 1)

    for _ in range(600):
        with th.no_grad():
            actions = policy().sample((num_samples, 1))  # [N, B=1, D]
        q_grads = -(actions**3) / 25 + 2 * actions  # ∇a Q
        score = autograd_score(policy().log_prob, actions)
        loss = wpo_policy_loss(score, q_grads)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    maxima = th.tensor([-math.sqrt(50), math.sqrt(50)])
    sorted_locs = locs.detach().sort(dim=-1).values
    assert th.allclose(sorted_locs, maxima.expand_as(sorted_locs), atol=0.5), sorted_locs
