"""Sensitivity of WPO to the KL bound ε_mean on Pendulum-v1, in soft-KL and hard-constraint mode.

Cells: configuration × mode × ε_mean.
- configurations: "ours" = the Pendulum-v1 entry of hyperparams/wpo.yml; "paper" = the same with the paper's full
  setup (target_update_interval 100, tau 1, policy and critic net_arch [256, 256, 256] with layer_norm=True,
  buffer 1e6, n_steps 5);
- modes: "soft" = fixed α (dual_learning_rate 0, α from the entry), "hard" = learned duals (dual_learning_rate
  1e-2, the reference's dual Adam learning rate; init_log_alpha_std at WPO's default), "hard-fast" = the same with
  dual_learning_rate 1e-1 (does a dual that reacts faster keep the KL within 2ε?);
- ε_mean in {0.001, 0.005, 0.01, 0.02, 0.05}.
Each run records its final deterministic evaluation return and, after every train() call, WPO's measured
train/kl_mean, kl_std, alpha_mean, alpha_std, pi_std_min, pi_std_max (binned over 500 steps). Runs are appended to
``runs.jsonl`` as they finish, seed by seed over all cells, and the script resumes where it stopped.
The WPO runs of benchmarks/returns.py (the unmodified wpo.yml entry, which is soft mode at its ε_mean) are reused
as the cell ours/soft/ε of the same steps instead of being re-run. Each run is returns.py's: the RL Zoo's
ExperimentManager builds it from wpo.yml's entry with the cell's settings as ``-params`` overrides.

    python benchmarks/epsilon_sweep.py --seeds 0-1 --configs ours --modes soft hard
    python benchmarks/epsilon_sweep.py --quick
    python benchmarks/epsilon_sweep.py --report-only
    python benchmarks/epsilon_sweep.py --commands   # one command line per run to do, for a scheduler

Each run is one command line (this script with one cell and seed, ``--in-process``), run by the local pool.
"""

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import numpy as np
from returns import parse_seeds, run_here

EPSILONS = (0.001, 0.005, 0.01, 0.02, 0.05)
TRAIN_KEYS = common.WPO_TRAIN_KEYS
PAPER: dict[str, Any] = dict(
    target_update_interval=100,
    tau=1.0,
    buffer_size=1_000_000,
    n_steps=5,
    policy_kwargs=dict(net_arch=[256, 256, 256], layer_norm=True),
)
WPO_DEFAULT_INIT_LOG_ALPHA_STD = 10_000.0
DUAL_LEARNING_RATES = {"soft": 0.0, "hard": 1e-2, "hard-fast": 1e-1}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--epsilons", nargs="+", type=float, default=list(EPSILONS))
    parser.add_argument("--modes", nargs="+", default=["soft", "hard"], choices=list(DUAL_LEARNING_RATES))
    parser.add_argument("--configs", nargs="+", default=["ours", "paper"], choices=["ours", "paper"])
    parser.add_argument("--seeds", nargs="+", default=["0-4"])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--eval-freq", type=int, default=2000)
    parser.add_argument("--n-eval-episodes", type=int, default=10)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 ε, 1 seed, 1,500 steps, results/epsilon_quick")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--commands", action="store_true", help="print one command line per run to do (for a scheduler)")
    parser.add_argument("--in-process", action="store_true", help="run the selected runs here, without the report")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.epsilons, args.seeds, args.steps, args.eval_freq, args.n_eval_episodes = [0.005, 0.05], ["0"], 1500, 500, 2
    args.out = args.out or common.RESULTS / ("epsilon_quick" if args.quick else "epsilon_sweep")
    return args


def cell_overrides(config: str, mode: str, epsilon: float, entry: dict[str, Any]) -> dict[str, Any]:
    overrides: dict[str, Any] = {"epsilon_mean": epsilon}
    if config == "paper":
        overrides.update(PAPER)
        overrides["policy_kwargs"] = dict(PAPER["policy_kwargs"])
    overrides["dual_learning_rate"] = DUAL_LEARNING_RATES[mode]
    if mode != "soft":
        overrides["init_log_alpha_std"] = WPO_DEFAULT_INIT_LOG_ALPHA_STD
    return overrides


def make_specs(args: argparse.Namespace, done: set[tuple]) -> list[dict[str, Any]]:
    entry = common.raw_hyperparams("wpo", args.env)
    if isinstance(entry.get("policy_kwargs"), str):
        entry_policy_kwargs = eval(entry["policy_kwargs"], {"nn": common.th.nn, "th": common.th})
    else:
        entry_policy_kwargs = dict(entry.get("policy_kwargs") or {})
    specs = []
    for seed in parse_seeds(args.seeds):
        for config in args.configs:
            for mode in args.modes:
                for epsilon in args.epsilons:
                    cell = f"{config}/{mode}/{epsilon:g}"
                    if (cell, seed, args.steps) in done:
                        continue
                    overrides = cell_overrides(config, mode, epsilon, entry)
                    if config == "paper":  # keep the entry's other policy options (e.g. init_std)
                        other = {k: v for k, v in entry_policy_kwargs.items() if k not in ("net_arch", "layer_norm")}
                        overrides["policy_kwargs"] = {**other, **overrides["policy_kwargs"]}
                    specs.append(
                        dict(
                            name=f"wpo_{config}_{mode}_eps{epsilon:g}_s{seed}",
                            cell=cell,
                            algo="wpo",
                            env_id=args.env,
                            seed=seed,
                            steps=args.steps,
                            overrides=overrides,
                            eval_freq=args.eval_freq,
                            n_eval_episodes=args.n_eval_episodes,
                            train_keys=TRAIN_KEYS,
                            train_bin=500,
                        )
                    )
                    if "hyperparams_from" in entry:  # wpo.yml has the task at another version: run from that entry
                        specs[-1]["hyperparams_from"] = entry["hyperparams_from"]
                        specs[-1]["config_entry"] = {k: v for k, v in entry.items() if k != "hyperparams_from"}
    return specs


def returns_runs(env_id: str, steps: int) -> list[dict[str, Any]]:
    """WPO runs of benchmarks/returns.py with the unmodified wpo.yml entry: the cell ours/soft/ε of its ε_mean
    (their train/* statistics are recorded the same way), reused instead of re-run."""
    records = []
    for record in common.read_jsonl(common.RESULTS / "returns" / "runs.jsonl"):
        hp = record.get("hyperparams", {})
        if record["algo"] != "wpo" or record["env_id"] != env_id or int(record["steps"]) != steps:
            continue
        if not record.get("train_stats") or float(hp.get("dual_learning_rate", 0.0)) != 0.0:
            continue
        record = dict(record, cell=f"ours/soft/{float(hp.get('epsilon_mean', 0.01)):g}", source="returns.py")
        records.append(record)
    return records


def all_records(out: Path, env_id: str, steps: int) -> list[dict[str, Any]]:
    own = common.read_jsonl(out / "runs.jsonl")
    seen = {(r["cell"], int(r["seed"]), int(r["steps"])) for r in own}
    imported = [r for r in returns_runs(env_id, steps) if (r["cell"], int(r["seed"]), int(r["steps"])) not in seen]
    return own + imported


def cells_of(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[float, list[dict[str, Any]]]]:
    cells: dict[tuple[str, str], dict[float, list[dict[str, Any]]]] = {}
    for record in records:
        config, mode, epsilon = record["cell"].split("/")
        cells.setdefault((config, mode), {}).setdefault(float(epsilon), []).append(record)
    return cells


def late_mean(record: dict[str, Any], key: str, steps_from: float) -> float:
    """Mean of a train/* statistic over the bins recorded after ``steps_from`` environment steps."""
    values = [p[key] for p in record["train_stats"] if p["timesteps"] > steps_from]
    return float(np.mean(values)) if values else float("nan")


def summarize(records: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    rows = []
    for (config, mode), by_eps in sorted(cells_of(records).items()):
        for epsilon, runs in sorted(by_eps.items()):
            runs = sorted(runs, key=lambda r: r["seed"])
            finals = np.array([r["final_return"] for r in runs], dtype=float)
            kl_means = np.array([r["train_means"].get("kl_mean", np.nan) for r in runs])
            kl_stds = np.array([r["train_means"].get("kl_std", np.nan) for r in runs])
            kl_means_late = np.array([late_mean(r, "kl_mean", steps_from=0.9 * r["steps"]) for r in runs])
            last3 = np.array([np.mean([c["eval_mean"] for c in r["curve"][-3:]]) if r.get("curve") else np.nan for r in runs])
            to_step = [common.first_crossing(r.get("curve", []), threshold, "timesteps") for r in runs]
            reached = [s for s in to_step if s is not None]
            mean = float(np.nanmean(finals))
            rows.append(
                {
                    "config": config,
                    "mode": mode,
                    "epsilon_mean": epsilon,
                    "seeds": [r["seed"] for r in runs],
                    "sources": sorted({r.get("source", "epsilon_sweep.py") for r in runs}),
                    "final_returns": [round(float(x), 1) for x in finals],
                    "n_success": int((np.nan_to_num(finals, nan=-np.inf) >= threshold).sum()),
                    "n_success_last3": int((np.nan_to_num(last3, nan=-np.inf) >= threshold).sum()),  # less eval noise
                    "n_seeds": len(runs),
                    "steps_to_threshold_median": float(np.median(reached)) if reached else None,  # over seeds that got there
                    "run_wall_s_median": float(np.median([r.get("total_wall_s", np.nan) for r in runs])),
                    "final_mean": mean,
                    "final_std": float(np.nanstd(finals)),
                    "cv": float(np.nanstd(finals) / abs(mean)) if mean and len(runs) > 1 else None,  # undefined for 1 seed
                    "kl_mean_measured": float(np.nanmean(kl_means)),
                    "kl_mean_over_eps": float(np.nanmean(kl_means) / epsilon),
                    "kl_mean_within_2eps": bool(np.nanmean(kl_means) <= 2 * epsilon),
                    "kl_mean_last10pct_over_eps": float(np.nanmean(kl_means_late) / epsilon),
                    "kl_std_measured": float(np.nanmean(kl_stds)),
                    "alpha_mean_final": float(
                        np.nanmean([r["train_stats"][-1]["alpha_mean"] for r in runs if r["train_stats"]])
                    ),
                    "errors": [r["error"] for r in runs if r.get("error")],
                }
            )
    return {"threshold": threshold, "cells": rows}


def markdown_tables(summary: dict[str, Any]) -> str:
    lines = [
        "| config | mode | ε_mean | seeds | success (final ≥ −200) | success (mean of last 3 evals ≥ −200) | final return "
        "mean ± std | CV | median steps to −200 | median run wall-clock (s) | measured KL_mean (mean over training) | "
        "KL_mean / ε | KL_mean / ε, last 10% of steps | KL_std | α_mean at end |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in summary["cells"]:
        cv = "—" if c["cv"] is None else f"{c['cv']:.2f}"
        to_step = "—" if c["steps_to_threshold_median"] is None else f"{c['steps_to_threshold_median']:,.0f}"
        lines.append(
            f"| {c['config']} | {c['mode']} | {c['epsilon_mean']:g} | {c['n_seeds']} | {c['n_success']}/{c['n_seeds']} | "
            f"{c['n_success_last3']}/{c['n_seeds']} | "
            f"{c['final_mean']:.1f} ± {c['final_std']:.1f} | {cv} | {to_step} | {c['run_wall_s_median']:.0f} | "
            f"{c['kl_mean_measured']:.3g} | "
            f"{c['kl_mean_over_eps']:.2f} | {c['kl_mean_last10pct_over_eps']:.2f} | {c['kl_std_measured']:.3g} | "
            f"{c['alpha_mean_final']:.3g} |"
        )
    return "\n".join(lines) + "\n"


STYLE = {("ours", "soft"): ("tab:blue", "-"), ("ours", "hard"): ("tab:red", "-")}
STYLE.update({("paper", "soft"): ("tab:cyan", "--"), ("paper", "hard"): ("tab:orange", "--")})
STYLE.update({("ours", "hard-fast"): ("tab:purple", "-."), ("paper", "hard-fast"): ("tab:pink", ":")})


def _vs_epsilon_panels(axes: Any, summary: dict[str, Any], records: list[dict[str, Any]]) -> None:
    for (config, mode), by_eps in sorted(cells_of(records).items()):
        color, ls = STYLE[(config, mode)]
        label = f"{config}/{mode}"
        rows = [c for c in summary["cells"] if c["config"] == config and c["mode"] == mode]
        eps = np.array([c["epsilon_mean"] for c in rows])
        for epsilon, runs in by_eps.items():
            axes[0].scatter([epsilon] * len(runs), [r["final_return"] for r in runs], color=color, s=10, alpha=0.5)
        axes[0].plot(eps, [c["final_mean"] for c in rows], color=color, ls=ls, marker="o", label=label)
        axes[1].plot(eps, [c["cv"] if c["cv"] is not None else np.nan for c in rows], color=color, ls=ls, marker="o")
        axes[2].plot(eps, [c["kl_mean_measured"] for c in rows], color=color, ls=ls, marker="o", label=label)
        axes[3].plot(eps, [c["kl_std_measured"] for c in rows], color=color, ls=ls, marker="o", label=label)
    grid = np.array(sorted({c["epsilon_mean"] for c in summary["cells"]}))
    axes[0].axhline(summary["threshold"], color="0.5", ls=":", lw=1)
    axes[2].plot(grid, grid, color="k", lw=1, label="y = ε")
    axes[2].plot(grid, 2 * grid, color="k", lw=1, ls="--", label="y = 2ε")
    titles = [
        "final eval return vs ε (dots: seeds)",
        "coefficient of variation across seeds",
        "measured KL(mean) vs ε",
        "measured KL(std) vs ε (ε_std = 1e-6)",
    ]
    for ax, title in zip(axes[:4], titles, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("ε_mean")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[2].set_yscale("log")
    axes[3].set_yscale("log")
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=7)


def _over_training_panels(axes: Any, records: list[dict[str, Any]]) -> None:
    import matplotlib.pyplot as plt

    epsilons = sorted({float(r["cell"].split("/")[2]) for r in records})
    cmap = plt.get_cmap("viridis")
    colors = {eps: cmap(i / max(len(epsilons) - 1, 1)) for i, eps in enumerate(epsilons)}
    for (config, mode), by_eps in sorted(cells_of(records).items()):
        ls = STYLE[(config, mode)][1] if mode != "soft" else ":"
        for epsilon, runs in sorted(by_eps.items()):
            runs = [r for r in runs if r["train_stats"]]
            if not runs:
                continue
            length = min(len(r["train_stats"]) for r in runs)
            steps = [p["timesteps"] for p in runs[0]["train_stats"][:length]]
            alpha = np.mean([[p["alpha_mean"] for p in r["train_stats"][:length]] for r in runs], axis=0)
            pi_std = np.mean(
                [[0.5 * (p["pi_std_min"] + p["pi_std_max"]) for p in r["train_stats"][:length]] for r in runs], axis=0
            )
            label = f"{config}/{mode} ε={epsilon:g}"
            if mode != "soft":
                axes[4].plot(steps, alpha, color=colors[epsilon], ls=ls, label=label)
            axes[5].plot(steps, pi_std, color=colors[epsilon], ls=ls, label=label)
    axes[4].set_title("α_mean over training (hard mode, learned; mean over seeds)", fontsize=10)
    axes[4].set_yscale("log")
    axes[5].set_title("policy std over training (mean over seeds; dotted = soft)", fontsize=10)
    axes[5].set_yscale("log")
    for ax in axes[4:]:
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)


def plot(records: list[dict[str, Any]], summary: dict[str, Any], path: Path, meta: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 9.5))
    axes = axes.flatten()
    _vs_epsilon_panels(axes, summary, records)
    _over_training_panels(axes, records)
    fig.suptitle("WPO ε_mean sweep on Pendulum-v1 (20k steps)")
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    common.save_figure(fig, path, meta)


def report(out: Path, env_id: str, steps: int, meta: dict[str, Any]) -> None:
    records = all_records(out, env_id, steps)
    if not records:
        print(f"no runs in {out / 'runs.jsonl'}")
        return
    summary = summarize(records, common.THRESHOLDS.get(env_id, -200.0))
    summary["meta"] = meta
    common.write_json(out / "summary.json", summary)
    (out / "summary.md").write_text(markdown_tables(summary))
    plot(records, summary, out / "epsilon_sweep.png", meta)
    print(markdown_tables(summary))


def command(spec: dict[str, Any], args: argparse.Namespace) -> common.Command:
    """One run's command line: this script with the run's cell and seed, in process (``--in-process``)."""
    config, mode, epsilon = spec["cell"].split("/")
    argv = [sys.executable, str(Path(__file__).resolve()), "--env", spec["env_id"], "--configs", config, "--modes", mode]
    argv += ["--epsilons", epsilon, "--seeds", str(spec["seed"]), "--steps", str(spec["steps"])]
    argv += ["--eval-freq", str(spec["eval_freq"]), "--n-eval-episodes", str(spec["n_eval_episodes"])]
    return common.Command(spec["name"], (*argv, "--out", str(args.out), "--in-process"))


def main() -> None:
    args = parse_args()
    meta = common.provenance()
    runs_file = args.out / "runs.jsonl"
    if not args.report_only:
        done = {(r["cell"], int(r["seed"]), int(r["steps"])) for r in all_records(args.out, args.env, args.steps)}
        specs = make_specs(args, done)
        commands = [command(spec, args) for spec in specs]
        if args.commands:
            print("\n".join(c.line() for c in commands))
            return
        print(f"{len(specs)} runs to do ({len(done)} already in {runs_file}); load average {common.load_average()}")
        if args.in_process:
            run_here(specs, runs_file)
            return
        common.run_commands(lambda: commands, processes=args.processes)
    report(args.out, args.env, args.steps, meta)


if __name__ == "__main__":
    main()
