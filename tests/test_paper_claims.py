"""What the paper says about the WPO update, checked numerically with known Q-functions, through the loss the
algorithm trains with (``sb3_wpo.losses.wpo_loss``, ``autograd_score``, ``wpo_policy_loss``).

Notation: a Gaussian policy N(μ, σ²) per action dimension, a = μ + σε, g = ∇a Q(a), J(μ, σ) = E_{a~π} Q(a).
"The WPO update" is −∂L/∂(μ, σ) of the loss (plain: ``natural_gradient=False``; rescaled: the default variance
rescaling, σ² on the mean and σ²/2 on the std). Where a statement comes from: the paper's Eq. 6 and its remark
that ∇a log π = −(a−μ)/σ² blows up as σ → 0 are quoted in the team's reference notes
(shared/reference/WPO_REFERENCE.md); everything else below was derived here (with Stein's lemma,
E[ε f(μ + σε)] = σ E[f'(μ + σε)]) and is marked "derived".

Claim 1 (the Gaussian score; its consequence derived): ∇a log π = −(a−μ)/σ², so a sample at the mean adds nothing
  to the loss and nothing to the std's update; it does move the mean, by g (rescaled) or g/σ² (plain). A sample at
  μ + σε adds (g, εg) rescaled, (g/σ², 2εg/σ²) plain.
Claim 2 (derived): if ∇a Q = c for every sampled action (Q linear), the update of the mean does not depend on which
  actions were sampled: it is N·c (rescaled) or N·c/σ² (plain), exactly. The std's update, Σ εₙ·c, is random;
  only its expectation, 0 = ∂J/∂σ, is right. The score-function policy gradient's mean estimate still has variance.
Claim 3 (derived): for a diagonal Gaussian (1-D, and any D with any Q), E[rescaled WPO update / N] = ∇J, the
  expected (vanilla, score-function) policy gradient; the plain update is F·∇J with the Fisher F = diag(1/σ², 2/σ²).
  So the identity holds WITH the variance rescaling and fails without it. Sample by sample the rescaled update
  is the reparameterization gradient (g, εg) of Q(μ + σε), the gradient SAC's actor uses.
Claim 4 (the paper: WPO approximates a Wasserstein gradient flow, in which each unit of probability mass moves
  along ∇a Q; the exact finite statements are derived): (a) for a Gaussian, the rescaled update moves the quantile
  a = μ + σε with velocity μ̇ + σ̇ε = E[g] + ε E[εg], the L²(π)-best affine fit of ∇a Q; when ∇a Q is affine
  (Q quadratic) every quantile moves exactly with ∇a Q(a). (b) For a mixture of well-separated Gaussians with
  fixed weights w_k, the plain update of component k is its Fisher diag(w_k/σ_k², 2w_k/σ_k²) times
  (E_k[g], E_k[εg]): rescaled by the inverse of that Fisher, each component's mass moves with the mean of ∇a Q
  over it, E_k[g] → ∇a Q(μ_k) as σ_k → 0 (particles), however light the component. Without the weight in the
  rescaling, a component of weight w_k moves at w_k times that speed.

Tolerances: Monte-Carlo checks accept |mean − expected| ≤ K_SE standard errors (SE = sample std / √M, from the
same samples), plus float64 rounding slack; exact statements use a relative tolerance of 1e-12. Each check is a
function that returns False when the claim fails, and each test also runs it on a broken variant (a sign error,
the natural gradient off, a wrong Fisher factor, a wrong score, a non-linear Q where linearity is the premise)
and asserts that the same check rejects it. Broken library code is simulated with ``mock.patch.object`` on
``sb3_wpo.losses``, so ``wpo_loss`` itself computes the broken update.
"""

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from unittest import mock

import numpy as np
import pytest
import torch as th
from torch import distributions as thd

from sb3_wpo import losses

DT = th.float64
K_SE = 5.0  # Monte-Carlo tolerance in standard errors: a correct check fails with probability < 1e-6 per component
EXACT_RTOL = 1e-12


# ----------------------------------------------------------------------------------------------------------------
# Known Q-functions: Q(a) for actions [..., D] -> [...], and J(μ, σ) = E Q(μ + σε) in closed form (for ∇J by autograd)
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KnownQ:
    name: str
    value: Callable[[th.Tensor], th.Tensor]
    expected: Callable[[th.Tensor, th.Tensor], th.Tensor]  # J(μ [D], σ [D])


def _bump(mu: th.Tensor, sigma: th.Tensor, center: float, width: float) -> th.Tensor:
    """E exp(−(a−c)²/(2w²)) for a ~ N(μ, σ²)."""
    var = width**2 + sigma**2
    return width / th.sqrt(var) * th.exp(-((mu - center) ** 2) / (2 * var))


A_STAR = th.tensor([1.0, -0.5], dtype=DT)
COUPLING = th.tensor([[1.0, 0.5], [0.5, 2.0]], dtype=DT)  # Q = −(a−a*)ᵀ A (a−a*), not separable

QUADRATIC = KnownQ(
    "quadratic",
    lambda a: -((a[..., 0] - 1.0) ** 2),
    lambda mu, s: -((mu[0] - 1.0) ** 2) - s[0] ** 2,
)
# The paper's two-peak toy (maxima at ±√50), as in tests/test_losses.py's mixture test
QUARTIC = KnownQ(
    "two_peak_quartic",
    lambda a: -(a[..., 0] ** 4) / 100 + a[..., 0] ** 2,
    lambda mu, s: -(mu[0] ** 4 + 6 * mu[0] ** 2 * s[0] ** 2 + 3 * s[0] ** 4) / 100 + mu[0] ** 2 + s[0] ** 2,
)
BUMPS = KnownQ(
    "two_bumps",
    lambda a: th.exp(-((a[..., 0] - 1.0) ** 2) / 0.18) + 0.5 * th.exp(-((a[..., 0] + 1.0) ** 2) / 0.18),
    lambda mu, s: _bump(mu[0], s[0], 1.0, 0.3) + 0.5 * _bump(mu[0], s[0], -1.0, 0.3),
)
COUPLED_2D = KnownQ(
    "coupled_quadratic_2d",
    lambda a: -th.einsum("...i,ij,...j->...", a - A_STAR, COUPLING, a - A_STAR),
    lambda mu, s: -((mu - A_STAR) @ COUPLING @ (mu - A_STAR)) - (th.diagonal(COUPLING) * s**2).sum(),
)


def q_grad(q: KnownQ, actions: th.Tensor) -> th.Tensor:
    """∇a Q by autograd (not written out by hand)."""
    actions = actions.detach().requires_grad_(True)
    (grad,) = th.autograd.grad(q.value(actions).sum(), actions)
    return grad


def true_gradient(q: KnownQ, mu: th.Tensor, sigma: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """∇J w.r.t. (μ, σ) from the closed-form expectation."""
    mu, sigma = mu.clone().requires_grad_(True), sigma.clone().requires_grad_(True)
    grad_mu, grad_sigma = th.autograd.grad(q.expected(mu, sigma), [mu, sigma])
    return grad_mu, grad_sigma


# ----------------------------------------------------------------------------------------------------------------
# The update, through the library
# ----------------------------------------------------------------------------------------------------------------
def wpo_update(
    actions: th.Tensor,
    q_grads: th.Tensor,
    mean: th.Tensor,
    std: th.Tensor,
    natural_gradient: bool = True,
    score_method: str = "closed_form",
) -> tuple[th.Tensor, th.Tensor]:
    """The update WPO applies to each state's (μ, σ): −∂L/∂μ, −∂L/∂σ of ``wpo_loss`` with the KL and dual terms off.

    actions, q_grads [N, B, D]; mean, std [B, D] -> two [B, D] tensors (×B undoes the loss's mean over states)."""
    mean, std = mean.clone().requires_grad_(True), std.clone().requires_grad_(True)
    no_dual = th.zeros(mean.shape[-1], dtype=mean.dtype)
    loss, _ = losses.wpo_loss(
        mean,
        std,
        mean.detach(),
        std.detach(),
        actions,
        q_grads,
        no_dual,
        no_dual,
        epsilon_mean=0.01,
        epsilon_std=1e-6,
        natural_gradient=natural_gradient,
        kl_loss_scale=0.0,
        dual_loss_scale=0.0,
        score_method=score_method,  # type: ignore[arg-type]
    )
    grad_mean, grad_std = th.autograd.grad(loss, [mean, std])
    batch = mean.shape[0]
    return -grad_mean * batch, -grad_std * batch


def gaussian_draws(mu: th.Tensor, sigma: th.Tensor, num_samples: int, batch: int, seed: int) -> th.Tensor:
    """ε ~ N(0, 1) of shape [N, B, D] from a fixed seed."""
    gen = th.Generator().manual_seed(seed)
    return th.randn(num_samples, batch, mu.shape[0], generator=gen, dtype=DT)


def per_sample_wpo(
    q: KnownQ, mu: th.Tensor, sigma: th.Tensor, m: int, seed: int, natural_gradient: bool = True
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """M independent one-sample WPO updates (N = 1 per state, M states with the same (μ, σ)); also returns ε [M, D]."""
    eps = gaussian_draws(mu, sigma, 1, m, seed)
    actions = mu + sigma * eps
    mean, std = mu.expand(m, -1).clone(), sigma.expand(m, -1).clone()
    up_mu, up_sigma = wpo_update(actions, q_grad(q, actions), mean, std, natural_gradient)
    return up_mu, up_sigma, eps[0]


def reinforce(q: KnownQ, mu: th.Tensor, sigma: th.Tensor, eps: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """Score-function policy gradient per sample, Q(a)·∇θ log π(a), with ∇θ log π from torch.distributions.
    eps [..., B, D] -> per-state sums over the leading sample axis, [B, D]."""
    batch_shape = eps.shape[1:]
    mean, std = mu.expand(batch_shape).clone().requires_grad_(True), sigma.expand(batch_shape).clone().requires_grad_(True)
    actions = (mu + sigma * eps).detach()
    surrogate = (thd.Normal(mean, std).log_prob(actions).sum(-1) * q.value(actions)).sum()
    grad_mean, grad_std = th.autograd.grad(surrogate, [mean, std])
    return grad_mean, grad_std


# ----------------------------------------------------------------------------------------------------------------
# Checks (each returns whether the claim holds for what it is given)
# ----------------------------------------------------------------------------------------------------------------
def mc_agrees(samples: th.Tensor, expected: th.Tensor, k: float = K_SE) -> bool:
    """|sample mean − expected| ≤ k·SE in every component, SE = sample std / √M over the first axis."""
    m = samples.shape[0]
    mean = samples.mean(dim=0)
    se = samples.std(dim=0) / math.sqrt(m)
    slack = 1e-10 * (1.0 + expected.abs())
    return bool(((mean - expected).abs() <= k * se + slack).all())


def exactly(actual: th.Tensor, expected: th.Tensor) -> bool:
    return bool(((actual - expected).abs() <= EXACT_RTOL * (1.0 + expected.abs())).all())


@contextmanager
def broken_library(kind: str | None) -> Iterator[None]:
    """Simulated bugs in sb3_wpo.losses: wpo_loss looks these functions up in the module when it runs."""
    patches = {
        None: None,
        "q_grad_sign": ("squash_q_grads", lambda q, squashing: -q),
        "score_sign": ("gaussian_score", lambda a, mean, std: (a - mean) / std**2),
        "score_sigma_power": ("gaussian_score", lambda a, mean, std: -(a - mean) / std),
        "score_off_centre": ("gaussian_score", lambda a, mean, std: -(a - mean - 0.1 * std) / std**2),
        "natural_gradient_off": ("natural_gaussian_params", lambda mean, std: (mean, std)),
        "std_factor_sigma2": (
            "natural_gaussian_params",
            lambda mean, std: (
                losses.scale_gradient(mean, std.detach() ** 2),
                losses.scale_gradient(std, std.detach() ** 2),  # σ² instead of σ²/2 on the std
            ),
        ),
    }
    patch = patches[kind]
    with nullcontext() if patch is None else mock.patch.object(losses, patch[0], patch[1]):
        yield


# ----------------------------------------------------------------------------------------------------------------
# Claim 1: ∇a log π = −(a−μ)/σ²; a sample at the mean moves the mean by g and the std by nothing
# ----------------------------------------------------------------------------------------------------------------
def claim1_holds(score_method: str = "closed_form") -> bool:
    gen = th.Generator().manual_seed(1)
    mean = th.randn(3, 2, generator=gen, dtype=DT)
    std = th.tensor([[0.3, 1.7], [0.05, 2.5], [0.8, 0.4]], dtype=DT)
    eps = th.tensor([0.0, 0.7, -0.7, 2.0], dtype=DT).view(4, 1, 1).expand(4, 3, 2)
    actions = mean + std * eps
    q_grads = th.randn(4, 3, 2, generator=gen, dtype=DT)
    q_grads[2] = q_grads[1]  # samples at μ ± 0.7σ with the same g: their std contributions must cancel
    ok = exactly(losses.gaussian_score(actions, mean, std), -(actions - mean) / std**2)
    ok &= exactly(losses.gaussian_score(actions, mean, std), losses.autograd_score(thd.Normal(mean, std).log_prob, actions))
    for natural in (True, False):
        mean_factor, std_factor = (1.0, 1.0) if natural else (1 / std**2, 2 / std**2)
        for n in range(4):  # each sample on its own: its contribution to the loss and to the update
            up_mu, up_sigma = wpo_update(actions[n : n + 1], q_grads[n : n + 1], mean, std, natural, score_method)
            ok &= exactly(up_mu, mean_factor * q_grads[n])
            ok &= exactly(up_sigma, std_factor * eps[n] * q_grads[n])
        at_mean = th.zeros(1, 3, 2, dtype=DT) + mean
        loss_at_mean = losses.wpo_policy_loss(losses.gaussian_score(at_mean, mean, std), q_grads[:1])
        ok &= exactly(loss_at_mean, th.zeros((), dtype=DT))
        _, up_sigma_pair = wpo_update(actions[1:3], q_grads[1:3], mean, std, natural, score_method)
        ok &= exactly(up_sigma_pair, th.zeros_like(up_sigma_pair))
    return ok


@pytest.mark.parametrize("score_method", ["closed_form", "autograd"])
def test_claim1_sample_at_mean_moves_only_the_mean(score_method: str):
    assert claim1_holds(score_method)


@pytest.mark.parametrize("bug", ["score_sign", "score_sigma_power", "score_off_centre", "q_grad_sign", "natural_gradient_off"])
def test_claim1_check_rejects_broken_library(bug: str):
    with broken_library(bug):
        assert not claim1_holds("closed_form")


# ----------------------------------------------------------------------------------------------------------------
# Claim 2: with ∇a Q constant, the mean's update does not depend on the samples; the std's is right in expectation
# ----------------------------------------------------------------------------------------------------------------
LINEAR_C = th.tensor([0.7, -1.3], dtype=DT)
LINEAR = KnownQ("linear", lambda a: 0.4 + (a * LINEAR_C).sum(-1), lambda mu, s: 0.4 + (mu * LINEAR_C).sum())


def claim2_holds(q: KnownQ, natural: bool, draws: int = 4000, n: int = 8) -> bool:
    mu, sigma = th.tensor([0.5, -1.0], dtype=DT), th.tensor([0.3, 2.0], dtype=DT)
    eps = gaussian_draws(mu, sigma, n, draws, seed=2)  # `draws` independent sets of N actions, one per state
    actions = mu + sigma * eps
    mean, std = mu.expand(draws, -1).clone(), sigma.expand(draws, -1).clone()
    up_mu, up_sigma = wpo_update(actions, q_grad(q, actions), mean, std, natural)
    exact_mu = n * LINEAR_C / (1.0 if natural else sigma**2)
    ok = exactly(up_mu, exact_mu.expand_as(up_mu))  # every draw: the same update, N·c (·1/σ² plain)
    ok &= bool((up_sigma.std(dim=0) > 0.1 * LINEAR_C.abs()).all())  # the std's update is random ...
    ok &= mc_agrees(up_sigma, th.zeros(2, dtype=DT))  # ... and right in expectation: ∂J/∂σ = 0
    return ok


def reinforce_mean_variance_is_positive(draws: int = 4000, n: int = 8) -> bool:
    """The score-function estimate of ∂J/∂μ on the same linear Q is unbiased and has the variance
    Var[Q(a)(a−μ)/σ²]/N > 0, checked against the samples' own variance estimate (with its standard error)."""
    mu, sigma = th.tensor([0.5, -1.0], dtype=DT), th.tensor([0.3, 2.0], dtype=DT)
    eps = gaussian_draws(mu, sigma, n, draws, seed=2)
    grad_mu, _ = reinforce(LINEAR, mu, sigma, eps)
    estimate = grad_mu / n  # [draws, D]
    ok = mc_agrees(estimate, LINEAR_C)  # unbiased
    # Per-sample X_d = Q(a)·ε_d/σ_d, Q = q0 + Σ c_i μ_i + Σ c_i σ_i ε_i: Var X_d = ((q0 + c·μ)² + Σ_i c_i²σ_i² + c_d²σ_d²)/σ_d²
    offset = 0.4 + (LINEAR_C * mu).sum()
    var_per_sample = (offset**2 + (LINEAR_C**2 * sigma**2).sum() + LINEAR_C**2 * sigma**2) / sigma**2
    centred = (estimate - estimate.mean(0)) ** 2
    ok &= mc_agrees(centred * (draws / (draws - 1)), var_per_sample / n)  # the sample variance, with its own SE
    ok &= bool((var_per_sample > 0).all())
    return ok


@pytest.mark.parametrize("natural", [True, False], ids=["rescaled", "plain"])
def test_claim2_linear_q_mean_update_has_zero_variance(natural: bool):
    assert claim2_holds(LINEAR, natural)


def test_claim2_score_function_gradient_still_has_variance():
    assert reinforce_mean_variance_is_positive()


@pytest.mark.parametrize("bug", ["q_grad_sign", "score_sign", "natural_gradient_off", "nonlinear_q"])
def test_claim2_check_rejects_broken_library(bug: str):
    if bug == "nonlinear_q":  # the premise broken: ∇a Q varies with the action, so the mean's update does too
        nonlinear = KnownQ(
            "nonlinear",
            lambda a: LINEAR.value(a) - 0.2 * (a**2).sum(-1),
            lambda mu, s: LINEAR.expected(mu, s) - 0.2 * (mu**2 + s**2).sum(),
        )
        assert not claim2_holds(nonlinear, natural=True)
        return
    with broken_library(bug):
        assert not claim2_holds(LINEAR, natural=True)


# ----------------------------------------------------------------------------------------------------------------
# Claim 3: E[rescaled WPO] = ∇J = E[score-function PG]; plain WPO = F·∇J; rescaled WPO = reparameterization
# ----------------------------------------------------------------------------------------------------------------
M_SAMPLES = 100_000
CLAIM3_CASES = [
    (QUADRATIC, [0.0], [0.3]),
    (QUADRATIC, [0.0], [1.5]),
    (QUARTIC, [1.0], [0.5]),
    (QUARTIC, [-2.0], [3.0]),
    (BUMPS, [1.5], [0.1]),
    (BUMPS, [1.5], [0.5]),
    (COUPLED_2D, [0.3, 0.2], [0.4, 1.2]),
]
CLAIM3_IDS = [f"{q.name}-mu{mu}-sigma{s}" for q, mu, s in CLAIM3_CASES]


def claim3_holds(q: KnownQ, mu: th.Tensor, sigma: th.Tensor, natural: bool) -> bool:
    """natural: E[rescaled update] = ∇J, and the paired difference with REINFORCE has mean 0;
    plain: E[plain update] = F·∇J, F = diag(1/σ², 2/σ²)."""
    up_mu, up_sigma, eps = per_sample_wpo(q, mu, sigma, M_SAMPLES, seed=3, natural_gradient=natural)
    grad_mu, grad_sigma = true_gradient(q, mu, sigma)
    if not natural:
        return mc_agrees(up_mu, grad_mu / sigma**2) and mc_agrees(up_sigma, 2 * grad_sigma / sigma**2)
    pg_mu, pg_sigma = reinforce(q, mu, sigma, eps.unsqueeze(0))
    ok = mc_agrees(up_mu, grad_mu) and mc_agrees(up_sigma, grad_sigma)
    ok &= mc_agrees(up_mu - pg_mu, th.zeros_like(grad_mu)) and mc_agrees(up_sigma - pg_sigma, th.zeros_like(grad_sigma))
    return ok


@pytest.mark.parametrize(("q", "mu", "sigma"), CLAIM3_CASES, ids=CLAIM3_IDS)
@pytest.mark.parametrize("natural", [True, False], ids=["rescaled_equals_pg", "plain_equals_fisher_times_pg"])
def test_claim3_expected_update(q: KnownQ, mu: list, sigma: list, natural: bool):
    assert claim3_holds(q, th.tensor(mu, dtype=DT), th.tensor(sigma, dtype=DT), natural)


@pytest.mark.parametrize("bug", ["natural_gradient_off", "std_factor_sigma2", "q_grad_sign"])
@pytest.mark.parametrize("case", [0, 2, 5], ids=[CLAIM3_IDS[i] for i in (0, 2, 5)])
def test_claim3_check_rejects_broken_library(bug: str, case: int):
    q, mu, sigma = CLAIM3_CASES[case]
    with broken_library(bug):
        assert not claim3_holds(q, th.tensor(mu, dtype=DT), th.tensor(sigma, dtype=DT), natural=True)


def test_claim3_rescaling_in_the_wrong_place_is_rejected():
    """The plain identity (F·∇J) rejects the rescaled update, and the rescaled identity (∇J) the plain one."""
    q, mu, sigma = QUARTIC, th.tensor([1.0], dtype=DT), th.tensor([0.5], dtype=DT)
    with broken_library("natural_gradient_off"):  # natural=True asks for rescaling; the library does not rescale
        assert not claim3_holds(q, mu, sigma, natural=True)
    up_mu, up_sigma, _ = per_sample_wpo(q, mu, sigma, M_SAMPLES, seed=3, natural_gradient=True)
    grad_mu, grad_sigma = true_gradient(q, mu, sigma)
    assert not mc_agrees(up_mu, grad_mu / sigma**2) and not mc_agrees(up_sigma, 2 * grad_sigma / sigma**2)


def rescaled_wpo_is_reparameterization(q: KnownQ, mu: th.Tensor, sigma: th.Tensor) -> bool:
    """Sample by sample, on the same ε: the rescaled WPO update equals ∇(μ,σ) Q(μ + σε) (SAC's estimator)."""
    up_mu, up_sigma, eps = per_sample_wpo(q, mu, sigma, 1000, seed=4)
    mean = mu.expand(1000, -1).clone().requires_grad_(True)
    std = sigma.expand(1000, -1).clone().requires_grad_(True)
    rep_mu, rep_sigma = th.autograd.grad(q.value(mean + std * eps).sum(), [mean, std])
    return exactly(up_mu, rep_mu) and exactly(up_sigma, rep_sigma)


@pytest.mark.parametrize(("q", "mu", "sigma"), CLAIM3_CASES, ids=CLAIM3_IDS)
def test_claim3_rescaled_wpo_is_the_reparameterization_gradient(q: KnownQ, mu: list, sigma: list):
    assert rescaled_wpo_is_reparameterization(q, th.tensor(mu, dtype=DT), th.tensor(sigma, dtype=DT))
    with broken_library("natural_gradient_off"):
        assert not rescaled_wpo_is_reparameterization(q, th.tensor(mu, dtype=DT), th.tensor(sigma, dtype=DT))


# ----------------------------------------------------------------------------------------------------------------
# Claim 4: each unit of mass moves along ∇a Q
# ----------------------------------------------------------------------------------------------------------------
QUANTILES = th.tensor([-2.5, -1.0, 0.0, 0.5, 2.0], dtype=DT)


def gaussian_follows_field(q: KnownQ, mu: float, sigma: float) -> bool:
    """The quantile a = μ + σε moves at μ̇ + σ̇ε (rescaled update); compare with ∇a Q(μ + σε) at QUANTILES."""
    mu_t, sigma_t = th.tensor([mu], dtype=DT), th.tensor([sigma], dtype=DT)
    up_mu, up_sigma, _ = per_sample_wpo(q, mu_t, sigma_t, M_SAMPLES, seed=5)
    velocities = up_mu + up_sigma * QUANTILES  # [M, quantiles]: per-sample estimates of each quantile's velocity
    field = q_grad(q, (mu + sigma * QUANTILES).unsqueeze(-1))[..., 0]
    return mc_agrees(velocities, field)


@pytest.mark.parametrize(("mu", "sigma"), [(0.0, 0.3), (2.0, 1.5), (-1.0, 4.0)])
def test_claim4_gaussian_on_quadratic_q_moves_every_quantile_along_the_field(mu: float, sigma: float):
    assert gaussian_follows_field(QUADRATIC, mu, sigma)


@pytest.mark.parametrize("bug", ["natural_gradient_off", "std_factor_sigma2", "q_grad_sign", "nonaffine_field"])
def test_claim4_gaussian_check_rejects_broken_library(bug: str):
    if bug == "nonaffine_field":  # exact only where ∇a Q is affine: on the quartic the Gaussian cannot follow it
        assert not gaussian_follows_field(QUARTIC, 1.0, 2.0)
        return
    with broken_library(bug):
        assert not gaussian_follows_field(QUADRATIC, 2.0, 1.5)


MIX_WEIGHTS = th.tensor([0.25, 0.75], dtype=DT)
MIX_LOCS = th.tensor([-3.0, 4.0], dtype=DT)


def quartic_component_expectations(loc: float, scale: float) -> tuple[float, float]:
    """E_k[Q'(a)] and E_k[ε Q'(a)] for a ~ N(loc, scale²) on the quartic, by Gauss-Hermite quadrature (exact
    for polynomials of degree < 2·40)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)
    weights = weights / math.sqrt(2 * math.pi)
    a = loc + scale * nodes
    dq = -(a**3) / 25 + 2 * a
    return float((weights * dq).sum()), float((weights * nodes * dq).sum())


def mixture_components_move_with_their_mass(scales: tuple[float, float], use_weights: bool = True) -> bool:
    """Two well-separated components with fixed weights; per component, plain update × (σ_k²/w_k, σ_k²/(2w_k))
    (the inverse of the mixture's Fisher for that component) against (E_k[g], E_k[εg]). Through autograd_score
    and wpo_policy_loss, as WPO trains a non-Gaussian policy."""
    m = M_SAMPLES
    scales_t = th.tensor(scales, dtype=DT)
    locs = MIX_LOCS.expand(m, 2).clone().requires_grad_(True)
    log_scales = scales_t.log().expand(m, 2).clone().requires_grad_(True)

    def mixture() -> thd.MixtureSameFamily:
        return thd.MixtureSameFamily(thd.Categorical(probs=MIX_WEIGHTS.expand(m, 2)), thd.Normal(locs, log_scales.exp()))

    gen = th.Generator().manual_seed(6)
    component = (th.rand(m, generator=gen, dtype=DT) < MIX_WEIGHTS[1]).long()  # k = 1 with probability w_1
    eps = th.randn(m, generator=gen, dtype=DT)
    actions = (MIX_LOCS[component] + scales_t[component] * eps).view(1, m, 1)  # [N=1, B=M, D=1]
    q_grads = q_grad(QUARTIC, actions)
    score = losses.autograd_score(lambda a: mixture().log_prob(a[..., 0]), actions)
    loss = losses.wpo_policy_loss(score, q_grads)
    grad_locs, grad_log_scales = th.autograd.grad(loss, [locs, log_scales])
    up_locs = -grad_locs * m  # per-sample plain updates of each component's mean, [M, 2]
    up_scales = -grad_log_scales * m / scales_t  # d/dσ = d/dlog σ · 1/σ
    mass = MIX_WEIGHTS if use_weights else th.ones(2, dtype=DT)
    velocity_loc = up_locs * scales_t**2 / mass
    velocity_scale = up_scales * scales_t**2 / (2 * mass)
    expected = [quartic_component_expectations(float(loc), s) for loc, s in zip(MIX_LOCS, scales, strict=True)]
    expected_loc = th.tensor([e[0] for e in expected], dtype=DT)
    expected_scale = th.tensor([e[1] for e in expected], dtype=DT)
    return mc_agrees(velocity_loc, expected_loc) and mc_agrees(velocity_scale, expected_scale)


@pytest.mark.parametrize("scales", [(0.3, 0.5), (1e-3, 1e-3)], ids=["narrow", "particles"])
def test_claim4_mixture_each_component_moves_with_its_mass(scales: tuple[float, float]):
    assert mixture_components_move_with_their_mass(scales)
    if scales[0] < 0.01:  # the particle limit: E_k[∇a Q] is ∇a Q at the component, to O(σ_k²)
        for loc, s in zip(MIX_LOCS, scales, strict=True):
            expected_loc, _ = quartic_component_expectations(float(loc), s)
            assert abs(expected_loc - (-(float(loc) ** 3) / 25 + 2 * float(loc))) < 1e-5


@pytest.mark.parametrize("bug", ["q_grad_sign", "fisher_without_weights"])
def test_claim4_mixture_check_rejects_broken_variants(bug: str):
    if bug == "fisher_without_weights":  # a per-Gaussian σ² rescaling: a component moves at w_k times the speed
        assert not mixture_components_move_with_their_mass((0.3, 0.5), use_weights=False)
        return
    with broken_library(bug):
        assert not mixture_components_move_with_their_mass((0.3, 0.5))
