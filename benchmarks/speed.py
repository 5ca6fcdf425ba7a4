"""Wall-clock cost of WPO against SB3's SAC and TD3, in one process on one torch thread.

Parts (all in one run, algorithms interleaved across repeats, min and median over repeats):
1. matmul throughput of this CPU (one thread, float32 th.mm), the reference for the FLOP efficiency;
2. gradient updates: ``model.train(gradient_steps=k, batch_size=256)`` after filling the buffer, WPO (N=20, with
   and without check_finite), SAC, TD3, all with net_arch [256, 256], on Pendulum-v1 and HalfCheetah-v5;
3. whole ``learn()`` calls at update-to-data ratio 1 (train_freq 1, gradient_steps 1), steady state (buffer
   already past learning_starts), per environment step;
4. headline: WPO at the shipped Pendulum-v1 settings (hyperparams/wpo.yml) vs SAC at rl-zoo3's Pendulum-v1
   settings, learn() wall-clock per environment step;
5. closed-form Gaussian score vs generic autograd score: ``wpo_loss`` forward+backward at N=20, B=256, D=6, and a
   full WPO update on HalfCheetah-v5 (D=6) with ``sb3_wpo.wpo.wpo_loss`` switched to ``score_method="autograd"``;
6. cost of one WPO update as a function of num_samples N in {1, 4, 8, 20} and batch size in {64, 256, 1024};
7. torch.profiler table of WPO updates at the shipped Pendulum settings (results/profile_update.txt);
8. the critic's first layer on N sampled actions per state: split (state half once per state) against the
   concatenated input (state half recomputed for each sample), full WPO updates on each env and on Humanoid-v5
   (obs_dim 348), where the state half dominates; WPO ships the split from ``Critic.split_first_layer_from`` features;
9. matmul FLOPs of one WPO update (formula in ``wpo_update_flops``) and the achieved fraction of the measured
   matmul throughput.

    python benchmarks/speed.py            # full run (about 10 minutes on an idle 2-core machine)
    python benchmarks/speed.py --quick    # smoke test (tiny budgets, 2 repeats)
"""

import argparse
import functools
import itertools
import statistics
import sys
import time
from unittest import mock
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import numpy as np
import torch as th

HIDDEN = [256, 256]
ENTRY = {"policy": "MlpPolicy", "n_timesteps": 1}  # a zoo entry of the constructor defaults (no training budget here)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["Pendulum-v1", "HalfCheetah-v5"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--updates", type=int, default=20, help="gradient steps per timed train() call")
    parser.add_argument("--learn-steps", type=int, default=100, help="env steps per timed learn() call (UTD 1)")
    parser.add_argument("--headline-steps", type=int, default=300, help="env steps per timed learn() call (headline)")
    parser.add_argument("--grid-updates", type=int, default=5, help="updates per timing in the N x batch grid")
    parser.add_argument("--profile-updates", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 repeats, tiny budgets, results/speed_quick")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.updates, args.learn_steps, args.headline_steps = 2, 3, 20, 40
        args.grid_updates, args.profile_updates = 1, 3
    args.out = args.out or common.RESULTS / ("speed_quick" if args.quick else "speed")
    return args


# ----------------------------------------------------------------------------------------------------------------
# Timing helpers
# ----------------------------------------------------------------------------------------------------------------
def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(tasks: dict[str, Callable[[], Any]], repeats: int, per: int = 1) -> dict[str, dict[str, Any]]:
    """Run each task once per repeat, rotating their order across repeats; seconds per unit (``per`` units/call)."""
    names = list(tasks)
    walls: dict[str, list[float]] = {name: [] for name in names}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    for _, name in common.interleaved_order(names, repeats):
        wall, cpu = timed(tasks[name])
        walls[name].append(wall / per)
        cpus[name].append(cpu / per)
    return {name: stats(walls[name], cpus[name]) for name in names}


def stats(walls: list[float], cpus: list[float]) -> dict[str, Any]:
    return {
        "wall_min": min(walls),
        "wall_median": statistics.median(walls),
        "cpu_min": min(cpus),
        "cpu_median": statistics.median(cpus),
        "wall_all": [round(x, 6) for x in walls],
        "repeats": len(walls),
    }


def ratio(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    return {key: a[key] / b[key] for key in ("wall_min", "wall_median", "cpu_min", "cpu_median")}


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------
def make_model(algo: str, env_id: str, seed: int, learning_starts: int, **kwargs: Any) -> Any:
    """``algo`` at its constructor defaults but for the matched sizes and ``kwargs``, built by the zoo (an entry with
    just the policy, the rest as ``-params``)."""
    kwargs.setdefault("policy_kwargs", dict(net_arch=list(HIDDEN)))
    kwargs.setdefault("batch_size", 256)
    kwargs.setdefault("buffer_size", 100_000)
    kwargs.setdefault("train_freq", 1)
    kwargs.setdefault("gradient_steps", 1)
    model, _ = common.zoo_model(algo, env_id, seed, ENTRY, {"learning_starts": learning_starts, **kwargs})
    return model


def filled(model: Any, steps: int) -> Any:
    """Collect ``steps`` transitions (no update: learning_starts == steps); later learn() calls train every step."""
    model.learn(total_timesteps=steps)
    return model


def continue_learning(model: Any, steps: int) -> Callable[[], Any]:
    return functools.partial(model.learn, total_timesteps=steps, reset_num_timesteps=False)


def updates(model: Any, k: int, batch_size: int = 256) -> Callable[[], Any]:
    return functools.partial(model.train, gradient_steps=k, batch_size=batch_size)


def updates_patched(model: Any, k: int, target: Any, attribute: str, value: Any) -> Callable[[], None]:
    """``k`` updates with ``target.attribute`` set to ``value`` for their duration (an A/B switch inside sb3_wpo)."""

    def run() -> None:
        with mock.patch.object(target, attribute, value):
            model.train(gradient_steps=k, batch_size=256)

    return run


def matched_models(env_id: str, seed: int, fill: int) -> dict[str, Any]:
    return {
        # "WPO": the default num_samples (the shipped Pendulum value); "WPO N=20": the reference's num_samples.
        "WPO": filled(make_model("wpo", env_id, seed, fill), fill),
        "WPO N=20": filled(make_model("wpo", env_id, seed, fill, num_samples=20), fill),
        "WPO (check_finite=False)": filled(make_model("wpo", env_id, seed, fill, check_finite=False), fill),
        "SAC": filled(make_model("sac", env_id, seed, fill), fill),
        "TD3": filled(make_model("td3", env_id, seed, fill), fill),
    }


def shipped_models(seed: int, fill: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """WPO with hyperparams/wpo.yml's Pendulum-v1 entry, SAC with rl-zoo3's sac.yml Pendulum-v1 entry, built by the zoo."""
    models, settings = {}, {}
    for algo in ("wpo", "sac"):
        model, _ = common.zoo_model(algo, "Pendulum-v1", seed, hyperparams={"learning_starts": fill})
        models[algo.upper()] = filled(model, fill)
        settings[algo.upper()] = common.hyperparams_for_json(common.raw_hyperparams(algo, "Pendulum-v1"))
    return models, settings


# ----------------------------------------------------------------------------------------------------------------
# Parts
# ----------------------------------------------------------------------------------------------------------------
def matmul_throughput(quick: bool) -> dict[str, Any]:
    """Single-thread float32 th.mm throughput: a big square product and the critic's hidden-layer shape."""
    results = {}
    for name, (m, k, n) in {"square_2048": (2048, 2048, 2048), "critic_hidden_5120x256x256": (5120, 256, 256)}.items():
        a, b = th.randn(m, k), th.randn(k, n)
        th.mm(a, b)
        reps = 2 if quick else 10
        times = [timed(functools.partial(th.mm, a, b))[0] for _ in range(reps)]
        results[name] = {
            "shape": [m, k, n],
            "gflops_best": 2 * m * k * n / min(times) / 1e9,
            "gflops_median": 2 * m * k * n / statistics.median(times) / 1e9,
        }
    return results


def mlp_flops(sizes: list[int]) -> int:
    """Multiply-add FLOPs (2·in·out per layer) of one forward pass of an MLP with these layer sizes, per row."""
    return sum(2 * a * b for a, b in itertools.pairwise(sizes))


def wpo_update_flops(obs_dim: int, act_dim: int, hidden: list[int], n: int, batch: int, n_critics: int = 1) -> dict:
    """Matmul FLOPs of one WPO update (biases, activations, LayerNorm, Adam ignored).

    F_c = critic forward per row (obs+act → hidden → 1), F_a = actor forward per row (obs → hidden → 2·act).
    On N sampled actions per state, with obs_dim ≥ ``Critic.split_first_layer_from``, the critic's first layer is
    split: its state half F_s = 2·obs·hidden[0] runs once per state, the rest F_n = F_c − F_s once per sample
    (otherwise F_s = 0 and F_n = F_c).
    A backward pass costs 2·F (weight and input gradients) when both are needed, F when only one is.
      critic target:  target actor fwd on B next states        F_a·B
                      target critic fwd on N·B rows            n_critics·(F_n·N·B + F_s·B)
      critic loss:    critic fwd + bwd (weight grads) on B     n_critics·(F_c + F_c)·B   (input grads not needed)
      ∇a Q:           critic fwd + bwd (action grads only)     n_critics·(2·F_n·N·B + F_s·B)
      actor:          online fwd + target fwd + bwd (weights)  (F_a + F_a + F_a)·B
    """
    from sb3_wpo.policies import Critic

    f_c = mlp_flops([obs_dim + act_dim, *hidden, 1])
    f_s = 2 * obs_dim * hidden[0] if obs_dim >= Critic.split_first_layer_from else 0
    f_n = f_c - f_s
    f_a = mlp_flops([obs_dim, *hidden, 2 * act_dim])
    parts = {
        "target_actor_fwd": f_a * batch,
        "target_critic_fwd_NB": n_critics * (f_n * n + f_s) * batch,
        "critic_fwd_bwd_B": n_critics * 2 * f_c * batch,
        "dQda_fwd_bwd_NB": n_critics * (2 * f_n * n + f_s) * batch,
        "actor_fwd_target_fwd_bwd_B": 3 * f_a * batch,
    }
    return {"per_row_critic_fwd": f_c, "per_row_actor_fwd": f_a, "parts": parts, "total": sum(parts.values())}


def part_updates(args: argparse.Namespace, fill: int) -> dict[str, Any]:
    results = {}
    for env_id in args.envs:
        models = matched_models(env_id, args.seed, fill)
        for model in models.values():  # warm-up
            model.train(gradient_steps=2, batch_size=256)
        timings = interleaved({name: updates(m, args.updates) for name, m in models.items()}, args.repeats, args.updates)
        results[env_id] = {
            "per_update_s": timings,
            "ratio_WPO_over_SAC": ratio(timings["WPO"], timings["SAC"]),
            "ratio_WPO_over_TD3": ratio(timings["WPO"], timings["TD3"]),
            "ratio_WPO_N20_over_SAC": ratio(timings["WPO N=20"], timings["SAC"]),
            "wpo_num_samples": models["WPO"].num_samples,
        }
        print(f"  updates {env_id}: " + ", ".join(f"{k} {v['wall_median'] * 1e3:.1f} ms" for k, v in timings.items()))
    return results


def part_learn(args: argparse.Namespace, fill: int) -> dict[str, Any]:
    results = {}
    for env_id in args.envs:
        models = matched_models(env_id, args.seed, fill)
        models.pop("WPO (check_finite=False)")
        tasks = {name: continue_learning(m, args.learn_steps) for name, m in models.items()}
        timings = interleaved(tasks, args.repeats, args.learn_steps)
        results[env_id] = {
            "per_env_step_s": timings,
            "ratio_WPO_over_SAC": ratio(timings["WPO"], timings["SAC"]),
            "ratio_WPO_N20_over_SAC": ratio(timings["WPO N=20"], timings["SAC"]),
            "wpo_num_samples": models["WPO"].num_samples,
        }
        print(f"  learn {env_id}: " + ", ".join(f"{k} {v['wall_median'] * 1e3:.1f} ms/step" for k, v in timings.items()))
    return results


def part_headline(args: argparse.Namespace) -> dict[str, Any]:
    models, settings = shipped_models(args.seed, 1000 if not args.quick else 300)
    tasks = {name: continue_learning(m, args.headline_steps) for name, m in models.items()}
    timings = interleaved(tasks, args.repeats, args.headline_steps)
    result = {"settings": settings, "per_env_step_s": timings, "ratio_WPO_over_SAC": ratio(timings["WPO"], timings["SAC"])}
    r = result["ratio_WPO_over_SAC"]
    print(f"  headline: WPO/SAC per env step = {r['wall_median']:.2f} (wall median), {r['cpu_median']:.2f} (CPU median)")
    return result


def loss_inputs(n: int, b: int, d: int) -> tuple[list[th.Tensor], list[th.Tensor]]:
    mean = th.randn(b, d, requires_grad=True)
    std = (0.5 + th.rand(b, d)).requires_grad_(True)
    actions = mean.detach() + std.detach() * th.randn(n, b, d)
    return [mean, std, mean.detach() + 0.01, std.detach(), actions, th.randn(n, b, d), th.zeros(d), th.full((d,), 1e4)], [
        mean,
        std,
    ]


def part_score_method(args: argparse.Namespace, fill: int) -> dict[str, Any]:
    import sb3_wpo.wpo as wpo_module
    from sb3_wpo import losses

    tensors, leaves = loss_inputs(20, 256, 6)
    reps = 20 if args.quick else 200

    def loss_fwd_bwd(method: losses.ScoreMethod) -> Callable[[], None]:
        def run() -> None:
            for _ in range(reps):
                loss, _ = losses.wpo_loss(*tensors, epsilon_mean=0.01, epsilon_std=1e-6, score_method=method)
                th.autograd.grad(loss, leaves)

        return run

    loss_timings = interleaved({m: loss_fwd_bwd(m) for m in losses.SCORE_METHODS}, args.repeats, reps)
    env_id = "HalfCheetah-v5" if "HalfCheetah-v5" in args.envs else args.envs[0]
    model = filled(make_model("wpo", env_id, args.seed, fill), fill)
    tasks = {
        m: updates_patched(model, args.updates, wpo_module, "wpo_loss", functools.partial(wpo_module.wpo_loss, score_method=m))
        for m in ("closed_form", "autograd")
    }
    update_timings = interleaved(tasks, args.repeats, args.updates)
    return {
        "loss_fwd_bwd_N20_B256_D6_s": loss_timings,
        "loss_ratio_autograd_over_closed_form": ratio(loss_timings["autograd"], loss_timings["closed_form"]),
        "full_update_env": env_id,
        "full_update_s": update_timings,
        "update_ratio_autograd_over_closed_form": ratio(update_timings["autograd"], update_timings["closed_form"]),
    }


def part_critic_split(args: argparse.Namespace, fill: int) -> dict[str, Any]:
    from sb3_wpo.policies import Critic

    results = {}
    for env_id in dict.fromkeys([*args.envs, "Humanoid-v5"]):
        model = filled(make_model("wpo", env_id, args.seed, fill), fill)
        model.train(gradient_steps=2, batch_size=256)  # warm-up
        tasks = {
            name: updates_patched(model, args.updates, Critic, "split_first_layer_from", threshold)
            for name, threshold in (("split", 0), ("concatenated", 10**9))
        }
        timings = interleaved(tasks, args.repeats, args.updates)
        obs_dim = int(np.prod(model.observation_space.shape))
        results[env_id] = {
            "obs_dim": obs_dim,
            "shipped": "split" if obs_dim >= Critic.split_first_layer_from else "concatenated",
            "wpo_num_samples": model.num_samples,
            "per_update_s": timings,
            "ratio_split_over_concatenated": ratio(timings["split"], timings["concatenated"]),
        }
        r = results[env_id]["ratio_split_over_concatenated"]
        print(f"  critic split {env_id}: split/concatenated per update = {r['wall_median']:.2f} (wall median)")
    return results


def part_grid(args: argparse.Namespace, fill: int, peak: float) -> dict[str, Any]:
    env_id = "Pendulum-v1"
    rows = []
    models = {}
    for n in (1, 4, 8, 20):
        models[n] = filled(make_model("wpo", env_id, args.seed, fill, num_samples=n), fill)
        models[n].train(gradient_steps=1, batch_size=64)
    tasks = {f"N={n},B={b}": updates(models[n], args.grid_updates, b) for n in (1, 4, 8, 20) for b in (64, 256, 1024)}
    timings = interleaved(tasks, max(2, args.repeats - 2), args.grid_updates)
    obs_dim, act_dim = 3, 1
    for n in (1, 4, 8, 20):
        for b in (64, 256, 1024):
            t = timings[f"N={n},B={b}"]
            flops = wpo_update_flops(obs_dim, act_dim, HIDDEN, n, b)["total"]
            rows.append(
                {
                    "num_samples": n,
                    "batch_size": b,
                    **{k: v for k, v in t.items() if k != "wall_all"},
                    "flops": flops,
                    "gflops_achieved": flops / t["wall_median"] / 1e9,
                    "fraction_of_matmul_peak": flops / t["wall_median"] / 1e9 / peak,
                }
            )
    return {"env_id": env_id, "rows": rows}


def part_profile(args: argparse.Namespace, out: Path, fill: int) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    models, _ = shipped_models(args.seed, fill)
    model = models["WPO"]
    model.train(gradient_steps=2, batch_size=model.batch_size)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        model.train(gradient_steps=args.profile_updates, batch_size=model.batch_size)
    averages = prof.key_averages()
    by_self = averages.table(sort_by="self_cpu_time_total", row_limit=35)
    by_total = averages.table(sort_by="cpu_time_total", row_limit=25)
    shapes = prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=15)
    header = (
        f"torch.profiler, {args.profile_updates} WPO updates (one train() call) at the shipped Pendulum-v1 settings "
        f"(num_samples={model.num_samples}, batch_size={model.batch_size}, check_finite={model.check_finite}).\n"
        f"{common.footer_text(common.provenance())}\n\n"
    )
    text = (
        header
        + "== top ops by self CPU time ==\n"
        + by_self
        + "\n\n== top ops by total CPU time (incl. children) ==\n"
        + by_total
        + "\n\n== top ops by self CPU time, grouped by input shape ==\n"
        + shapes
    )
    (out if args.quick else common.RESULTS).joinpath("profile_update.txt").write_text(text)
    total_self = sum(e.self_cpu_time_total for e in averages)
    top = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    return {
        "updates": args.profile_updates,
        "total_self_cpu_ms": total_self / 1e3,
        "top_self_cpu": [
            {
                "op": e.key,
                "count": e.count,
                "self_cpu_ms": e.self_cpu_time_total / 1e3,
                "share": e.self_cpu_time_total / total_self,
            }
            for e in top
        ],
    }


# ----------------------------------------------------------------------------------------------------------------
# Plot
# ----------------------------------------------------------------------------------------------------------------
def _bars(ax: Any, groups: dict[str, dict[str, Any]], key: str, scale: float, ylabel: str, title: str) -> None:
    envs = list(groups)
    names = list(next(iter(groups.values())))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        med = [groups[e][name]["wall_median"] * scale for e in envs]
        low = [groups[e][name]["wall_min"] * scale for e in envs]
        x = np.arange(len(envs)) + i * width
        ax.bar(x, med, width, label=name)
        ax.scatter(x, low, color="k", s=8, zorder=3)
    ax.set_xticks(np.arange(len(envs)) + 0.4 - width / 2, envs)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)


def plot(results: dict[str, Any], path: Path, meta: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(20, 10))
    axes = axes.flatten()
    _bars(
        axes[0],
        {e: r["per_update_s"] for e, r in results["updates"].items()},
        "wall",
        1e3,
        "ms per update",
        "one gradient update, net [256,256], batch 256 (bar: median, dot: min)",
    )
    learn = {e: r["per_env_step_s"] for e, r in results["learn"].items()}
    names = list(next(iter(learn.values())))
    missing = {"wall_median": np.nan, "wall_min": np.nan}
    headline = results["headline"]["per_env_step_s"]
    learn["Pendulum-v1 shipped\n(WPO yml vs SAC zoo)"] = {name: headline.get(name, missing) for name in names}
    _bars(
        axes[1],
        learn,
        "wall",
        1e3,
        "ms per environment step",
        "learn() per env step: UTD 1 at matched sizes, and shipped settings",
    )
    for n in (1, 4, 8, 20):
        rows = [r for r in results["grid"]["rows"] if r["num_samples"] == n]
        axes[2].plot([r["batch_size"] for r in rows], [r["wall_median"] * 1e3 for r in rows], marker="o", label=f"N={n}")
    axes[2].set_xscale("log", base=2)
    axes[2].set_yscale("log")
    axes[2].set_xlabel("batch size B")
    axes[2].set_ylabel("ms per WPO update (median)")
    axes[2].set_title("WPO update cost vs num_samples N and batch size (Pendulum-v1)", fontsize=10)
    axes[2].legend(fontsize=8)
    axes[2].grid(alpha=0.3)
    s = results["score_method"]
    labels = ["loss fwd+bwd\nN=20,B=256,D=6", f"full update\n{s['full_update_env']}"]
    for i, method in enumerate(("closed_form", "autograd")):
        vals = [s["loss_fwd_bwd_N20_B256_D6_s"][method]["wall_median"] * 1e3, s["full_update_s"][method]["wall_median"] * 1e3]
        axes[3].bar(np.arange(2) + i * 0.4, vals, 0.4, label=method)
    axes[3].set_xticks(np.arange(2) + 0.2, labels)
    axes[3].set_yscale("log")
    axes[3].set_ylabel("ms (median)")
    axes[3].set_title("closed-form Gaussian score vs autograd (double backward)", fontsize=10)
    axes[3].legend(fontsize=8)
    _bars(
        axes[4],
        {f"{e}\nobs_dim {r['obs_dim']}": r["per_update_s"] for e, r in results["critic_split"].items()},
        "wall",
        1e3,
        "ms per WPO update",
        "critic on N sampled actions: first layer split vs concatenated input",
    )
    axes[5].axis("off")
    h = results["headline"]["ratio_WPO_over_SAC"]
    fig.suptitle(
        f"WPO vs SAC/TD3 speed, 1 torch thread. Shipped Pendulum: WPO/SAC wall-clock per env step = "
        f"{h['wall_median']:.2f} (median), load avg before {results['load_before']} after {results['load_after']}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.035, 1, 0.97))
    common.save_figure(fig, path, meta)


def main() -> None:
    from tqdm import tqdm

    args = parse_args()
    th.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = common.provenance()
    fill = 300 if args.quick else 2000
    results: dict[str, Any] = {"meta": meta, "load_before": common.load_average(), "args": vars(args) | {"out": str(args.out)}}
    print(f"load average before: {results['load_before']}")
    steps = ["matmul", "updates", "learn", "headline", "score_method", "critic_split", "grid", "profile"]
    for step in tqdm(steps, desc="speed parts", file=sys.stdout):
        start = time.perf_counter()
        if step == "matmul":
            results["matmul"] = matmul_throughput(args.quick)
        elif step == "updates":
            results["updates"] = part_updates(args, fill)
        elif step == "learn":
            results["learn"] = part_learn(args, fill)
        elif step == "headline":
            results["headline"] = part_headline(args)
        elif step == "score_method":
            results["score_method"] = part_score_method(args, fill)
        elif step == "critic_split":
            results["critic_split"] = part_critic_split(args, fill)
        elif step == "grid":
            results["grid"] = part_grid(args, fill, results["matmul"]["square_2048"]["gflops_best"])
        elif step == "profile":
            results["profile"] = part_profile(args, args.out, fill)
        results.setdefault("part_seconds", {})[step] = round(time.perf_counter() - start, 1)
    peak = results["matmul"]["square_2048"]["gflops_best"]
    timings = results["updates"].get("Pendulum-v1", next(iter(results["updates"].values())))
    results["flops"] = {"formula": wpo_update_flops.__doc__, "matmul_peak_gflops": peak, "pendulum_B256": {}}
    for name, n in (("WPO", timings["wpo_num_samples"]), ("WPO N=20", 20)):
        flops = wpo_update_flops(3, 1, HIDDEN, n, 256)
        t = timings["per_update_s"][name]
        results["flops"]["pendulum_B256"][f"N={n}"] = {
            **flops,
            "achieved_gflops": flops["total"] / t["wall_median"] / 1e9,
            "fraction_of_peak": flops["total"] / t["wall_median"] / 1e9 / peak,
            "achieved_gflops_cpu_time": flops["total"] / t["cpu_median"] / 1e9,
            "fraction_of_peak_cpu_time": flops["total"] / t["cpu_median"] / 1e9 / peak,
        }
    results["load_after"] = common.load_average()
    print(f"load average after: {results['load_after']}")
    common.write_json(args.out / "speed.json", results)
    plot(results, args.out / "speed.png", meta)
    for key, f in results["flops"]["pendulum_B256"].items():
        print(
            f"FLOPs per WPO update (Pendulum, {key}, B=256): {f['total'] / 1e9:.2f} GFLOP, "
            f"{f['achieved_gflops']:.1f} GFLOP/s = {f['fraction_of_peak']:.0%} of th.mm peak"
        )


if __name__ == "__main__":
    main()
