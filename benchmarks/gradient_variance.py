"""Variance of the estimators of the policy gradient of J(μ, σ) = E_{a~N(μ, σ²)} Q(a), as a function of N.

One state, a 1-D Gaussian policy, a known Q; each estimator uses N actions a_n = μ + σε_n and returns an estimate
of the gradient w.r.t. (μ, σ). The same ε feed every estimator in a cell (common random numbers):

- ``wpo``: sb3_wpo.losses.wpo_loss (KL and dual terms off), variance-rescaled (the default), update / N;
  it estimates ∇J (tests/test_paper_claims.py, claim 3);
- ``wpo_plain``: the same with ``natural_gradient=False``; it estimates F·∇J, F = diag(1/σ², 2/σ²);
- ``reinforce``: the score-function gradient mean_n Q(a_n)·∇θ log π(a_n) (∇θ log π from torch.distributions);
- ``reinforce_loo``: the same with a leave-one-out baseline, Q(a_n) − mean_{m≠n} Q(a_m) (unbiased; N ≥ 2);
- ``reparam``: the reparameterization gradient ∇θ mean_n Q(μ + σε_n), the estimator of SAC's actor loss.

The like-for-like measure is the relative variance Var[estimate] / (expected estimate)², with the exact expected
value of each estimator (∇J from J in closed form, F·∇J for ``wpo_plain``): a constant factor between two
estimators (plain vs rescaled WPO) leaves it unchanged. It is the number of samples needed per unit of
squared relative error: N·relvar is constant for i.i.d. estimators. Each cell also records each estimator's
bias in standard errors (a check that all are unbiased) and the largest |wpo − reparam| over the cell.

Q functions: ``quadratic`` −(a−1)² at μ = 0 (∇a Q affine: per sample, WPO's and reparameterization's relative
variance is σ² for the mean, 0 as σ → 0, and 2 + 1/σ² for the std), and ``two_bumps``
exp(−(a−1)²/(2·0.3²)) + 0.5·exp(−(a+1)²/(2·0.3²)) at μ = 1.5 (two peaks of width 0.3: ∇a Q is large and changes
sign within a wide policy).

    python benchmarks/gradient_variance.py            # full run: 100,000 repeats per cell (about a minute, 1 thread)
    python benchmarks/gradient_variance.py --quick    # smoke test: 300 repeats, results/gradient_variance_quick
"""

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import numpy as np
import torch as th
from torch import distributions as thd

from sb3_wpo.losses import wpo_loss

DT = th.float64
ESTIMATORS = ("wpo", "wpo_plain", "reparam", "reinforce", "reinforce_loo")
LABELS = {
    "wpo": "WPO (variance-rescaled)",
    "wpo_plain": "WPO (plain)",
    "reparam": "reparameterization (SAC)",
    "reinforce": "REINFORCE",
    "reinforce_loo": "REINFORCE, leave-one-out baseline",
}
STYLES = {
    "wpo": dict(color="tab:red", marker="o", linestyle="-", markersize=5),
    "wpo_plain": dict(color="darkred", marker="x", linestyle="--", markersize=7),
    "reparam": dict(color="tab:blue", marker="o", linestyle=":", markersize=9, markerfacecolor="none"),
    "reinforce": dict(color="0.45", marker="s", linestyle="-", markersize=4),
    "reinforce_loo": dict(color="tab:green", marker="^", linestyle="-", markersize=5),
}
PARAMS = ("mu", "sigma")
WIDTH = 0.3


def q_quadratic(a: th.Tensor) -> th.Tensor:
    return -((a - 1.0) ** 2)


def j_quadratic(mu: th.Tensor, sigma: th.Tensor) -> th.Tensor:
    return -((mu - 1.0) ** 2) - sigma**2


def q_two_bumps(a: th.Tensor) -> th.Tensor:
    return th.exp(-((a - 1.0) ** 2) / (2 * WIDTH**2)) + 0.5 * th.exp(-((a + 1.0) ** 2) / (2 * WIDTH**2))


def j_two_bumps(mu: th.Tensor, sigma: th.Tensor) -> th.Tensor:
    var = WIDTH**2 + sigma**2
    bump = lambda center: WIDTH / th.sqrt(var) * th.exp(-((mu - center) ** 2) / (2 * var))  # noqa: E731
    return bump(1.0) + 0.5 * bump(-1.0)


Q_FUNCTIONS: dict[str, dict[str, Any]] = {
    "quadratic": dict(q=q_quadratic, j=j_quadratic, mu=0.0, formula="-(a-1)^2"),
    "two_bumps": dict(q=q_two_bumps, j=j_two_bumps, mu=1.5, formula="exp(-(a-1)^2/0.18) + 0.5 exp(-(a+1)^2/0.18)"),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=100_000, help="independent estimates per cell")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 0.5, 2.0])
    parser.add_argument("--max-log2-n", type=int, default=8, help="N in 1, 2, 4, ..., 2**max_log2_n")
    parser.add_argument("--q", nargs="+", default=list(Q_FUNCTIONS), choices=list(Q_FUNCTIONS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke test: 300 repeats, results/gradient_variance_quick")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.repeats = 300
    args.out = args.out or common.RESULTS / ("gradient_variance_quick" if args.quick else "gradient_variance")
    return args


def true_gradient(j: Callable[[th.Tensor, th.Tensor], th.Tensor], mu: float, sigma: float) -> tuple[float, float]:
    mu_t = th.tensor(mu, dtype=DT, requires_grad=True)
    sigma_t = th.tensor(sigma, dtype=DT, requires_grad=True)
    grad_mu, grad_sigma = th.autograd.grad(j(mu_t, sigma_t), [mu_t, sigma_t])
    return float(grad_mu), float(grad_sigma)


def wpo_estimates(eps: th.Tensor, q: Callable, mu: float, sigma: float, natural: bool) -> th.Tensor:
    """wpo_loss on R states (one per repeat) with N actions each: the per-state update / N, shape [R, 2]."""
    n, r = eps.shape
    actions = (mu + sigma * eps).unsqueeze(-1)  # [N, R, 1]
    with th.enable_grad():
        a = actions.clone().requires_grad_(True)
        (q_grads,) = th.autograd.grad(q(a).sum(), a)
        mean = th.full((r, 1), mu, dtype=DT, requires_grad=True)
        std = th.full((r, 1), sigma, dtype=DT, requires_grad=True)
        no_dual = th.zeros(1, dtype=DT)
        loss, _ = wpo_loss(
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
            natural_gradient=natural,
            kl_loss_scale=0.0,
            dual_loss_scale=0.0,
        )
        grad_mean, grad_std = th.autograd.grad(loss, [mean, std])
    # the loss is −Σ_n (summed over samples), averaged over the R states: the update of one state is −grad·R
    return th.cat([-grad_mean, -grad_std], dim=1) * r / n


def score_and_reparam_estimates(eps: th.Tensor, q: Callable, mu: float, sigma: float) -> dict[str, th.Tensor]:
    """REINFORCE (with and without the leave-one-out baseline) and the reparameterization gradient, [R, 2] each."""
    n, r = eps.shape
    actions = mu + sigma * eps  # [N, R]
    q_values = q(actions)
    with th.enable_grad():
        # ∇θ log π(a_n) of each sample, by autograd through torch.distributions.Normal.log_prob on [N, R] copies
        mean_s = th.full((n, r), mu, dtype=DT, requires_grad=True)
        std_s = th.full((n, r), sigma, dtype=DT, requires_grad=True)
        score_mu, score_sigma = th.autograd.grad(thd.Normal(mean_s, std_s).log_prob(actions).sum(), [mean_s, std_s])
        # reparameterization: ∇θ of mean_n Q(μ + σε_n), one (μ, σ) per repeat
        mean = th.full((r,), mu, dtype=DT, requires_grad=True)
        std = th.full((r,), sigma, dtype=DT, requires_grad=True)
        reparam = th.autograd.grad(q(mean + std * eps).sum(), [mean, std])
    out = {
        "reparam": th.stack(reparam, dim=1) / n,
        "reinforce": th.stack([(q_values * score_mu).mean(0), (q_values * score_sigma).mean(0)], dim=1),
    }
    if n >= 2:
        baseline = (q_values.sum(0, keepdim=True) - q_values) / (n - 1)  # leave-one-out mean of Q
        advantage = q_values - baseline
        out["reinforce_loo"] = th.stack([(advantage * score_mu).mean(0), (advantage * score_sigma).mean(0)], dim=1)
    return out


def run_cell(q_name: str, sigma: float, n: int, repeats: int, seed: int) -> dict[str, Any]:
    spec = Q_FUNCTIONS[q_name]
    q, mu = spec["q"], spec["mu"]
    grad_mu, grad_sigma = true_gradient(spec["j"], mu, sigma)
    truth = {
        name: np.array([grad_mu, grad_sigma]) * (np.array([1 / sigma**2, 2 / sigma**2]) if name == "wpo_plain" else 1.0)
        for name in ESTIMATORS
    }
    gen = th.Generator().manual_seed(seed)
    chunk = max(1, (1 << 20) // n)  # at most ~1M samples per chunk
    parts: dict[str, list[th.Tensor]] = {name: [] for name in ESTIMATORS}
    for start in range(0, repeats, chunk):
        eps = th.randn(n, min(chunk, repeats - start), generator=gen, dtype=DT)
        parts["wpo"].append(wpo_estimates(eps, q, mu, sigma, natural=True))
        parts["wpo_plain"].append(wpo_estimates(eps, q, mu, sigma, natural=False))
        for name, value in score_and_reparam_estimates(eps, q, mu, sigma).items():
            parts[name].append(value)
    estimates = {name: th.cat(values).numpy() for name, values in parts.items() if values}
    record: dict[str, Any] = {"q": q_name, "mu": mu, "sigma": sigma, "n": n, "repeats": repeats, "seed": seed}
    record["true_grad"] = {"mu": grad_mu, "sigma": grad_sigma}
    record["max_abs_wpo_minus_reparam"] = float(np.abs(estimates["wpo"] - estimates["reparam"]).max())
    for name, values in estimates.items():
        mean, var = values.mean(axis=0), values.var(axis=0, ddof=1)
        for i, param in enumerate(PARAMS):
            expected = truth[name][i]
            record[f"{name}/{param}/expected"] = float(expected)
            record[f"{name}/{param}/mean"] = float(mean[i])
            record[f"{name}/{param}/var"] = float(var[i])
            record[f"{name}/{param}/rel_var"] = float(var[i] / expected**2)
            record[f"{name}/{param}/bias_z"] = float((mean[i] - expected) / math.sqrt(var[i] / len(values)))
    return record


def summarize(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (Q, σ, parameter): each estimator's relative variance at N = 1 (N·relvar is about constant) and the
    ratio of each score-function estimator's relative variance to WPO's over N ≥ 2 (min, median, max)."""
    rows = []
    for q_name in dict.fromkeys(c["q"] for c in cells):
        for sigma in dict.fromkeys(c["sigma"] for c in cells if c["q"] == q_name):
            group = sorted((c for c in cells if c["q"] == q_name and c["sigma"] == sigma), key=lambda c: c["n"])
            for param in PARAMS:
                row: dict[str, Any] = {"q": q_name, "sigma": sigma, "param": param}
                row["true_grad"] = group[0]["true_grad"][param]
                for name in ESTIMATORS:
                    n_rel = [c["n"] * c[f"{name}/{param}/rel_var"] for c in group if f"{name}/{param}/rel_var" in c]
                    row[f"{name}_n_times_rel_var_median"] = float(np.median(n_rel))
                for name in ("reinforce", "reinforce_loo", "reparam"):
                    ratios = [
                        c[f"{name}/{param}/rel_var"] / c[f"wpo/{param}/rel_var"]
                        for c in group
                        if c["n"] >= 2 and c[f"wpo/{param}/rel_var"] > 0
                    ]
                    row[f"{name}_over_wpo_min"] = float(min(ratios)) if ratios else None
                    row[f"{name}_over_wpo_median"] = float(np.median(ratios)) if ratios else None
                    row[f"{name}_over_wpo_max"] = float(max(ratios)) if ratios else None
                row["max_abs_bias_z"] = max(
                    abs(c[f"{name}/{param}/bias_z"]) for c in group for name in ESTIMATORS if f"{name}/{param}/bias_z" in c
                )
                rows.append(row)
    return rows


def plot(cells: list[dict[str, Any]], meta: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    q_names = list(dict.fromkeys(c["q"] for c in cells))
    sigmas = sorted(dict.fromkeys(c["sigma"] for c in cells))
    rows = [(q, p) for q in q_names for p in PARAMS]
    fig, axes = plt.subplots(len(rows), len(sigmas), figsize=(4.2 * len(sigmas), 3.1 * len(rows) + 0.9), squeeze=False)
    for i, (q_name, param) in enumerate(rows):
        for j, sigma in enumerate(sigmas):
            ax = axes[i][j]
            group = sorted((c for c in cells if c["q"] == q_name and c["sigma"] == sigma), key=lambda c: c["n"])
            for name in ESTIMATORS:
                points = [(c["n"], c[f"{name}/{param}/rel_var"]) for c in group if f"{name}/{param}/rel_var" in c]
                if points:
                    ns, values = zip(*points, strict=True)
                    ax.loglog(ns, values, label=LABELS[name], **STYLES[name])
            ax.set_xscale("log", base=2)
            ax.grid(True, which="major", alpha=0.3)
            grad = group[0]["true_grad"][param]
            symbol = "μ" if param == "mu" else "σ"
            ax.set_title(f"{q_name}, ∂J/∂{symbol} = {grad:.3g}, σ = {sigma:g}", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"Var / E² of ∂J/∂{symbol} estimate")
            if i == len(rows) - 1:
                ax.set_xlabel("N (actions per estimate)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle(
        "Relative variance of policy-gradient estimators of J = E Q(a), a ~ N(μ, σ²), known Q "
        "(WPO rescaled, WPO plain and reparameterization coincide)",
        y=0.995,
        fontsize=10,
    )
    fig.legend(
        handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.98), ncol=len(ESTIMATORS), fontsize=9, frameon=False
    )
    fig.tight_layout(rect=(0, 0.03, 1, 0.955))
    common.save_figure(fig, path, meta)


def main() -> None:
    args = parse_args()
    th.set_num_threads(1)
    from tqdm import tqdm

    meta = common.provenance()
    load_before = common.load_average()
    ns = [2**k for k in range(args.max_log2_n + 1)]
    grid = [(q, s, n) for q in args.q for s in args.sigmas for n in ns]
    cells = []
    for index, (q_name, sigma, n) in enumerate(tqdm(grid, desc="gradient variance cells", file=sys.stdout)):
        cells.append(run_cell(q_name, sigma, n, args.repeats, args.seed + index))
    summary = summarize(cells)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    result = {
        "meta": meta,
        "settings": settings,
        "q_functions": {name: {"formula": spec["formula"], "mu": spec["mu"]} for name, spec in Q_FUNCTIONS.items()},
        "load_before": load_before,
        "load_after": common.load_average(),
        "summary": summary,
        "cells": cells,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    common.write_json(args.out / "results.json", result)
    common.write_csv(args.out / "summary.csv", summary)
    plot(cells, meta, args.out / "gradient_variance.png")
    print(f"wrote {args.out / 'results.json'}, {args.out / 'summary.csv'}, {args.out / 'gradient_variance.png'}")


if __name__ == "__main__":
    main()
