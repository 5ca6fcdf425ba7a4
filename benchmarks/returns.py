"""Returns of WPO against SAC, TD3 and TQC with rl-zoo3's tuned hyperparameters (WPO: hyperparams/wpo.yml).

Each run trains one algorithm on one seed, evaluates the deterministic policy every ``--eval-freq`` steps on a
separate environment (``--n-eval-episodes`` episodes) and appends its record to ``runs.jsonl`` as soon as it
finishes: the script resumes where it stopped and skips the runs already recorded. Then it writes one CSV per
run (the curve), ``summary.json``, ``summary.md`` and a learning-curve plot per environment.

The RL Zoo's own code builds each run, as ``python -m rl_zoo3.train`` does: its ``ExperimentManager`` reads the
algorithm's config (rl_zoo3's sac/td3/tqc.yml, WPO's hyperparams/wpo.yml), applies ``--set`` as ``-params`` and
makes the model and the training environment (``setup_experiment``) and the evaluation environment
(``create_envs(1, eval_env=True)``). The zoo seeds its evaluation environment with the run's seed; these runs
reseed it with seed + 10,000 (EVAL_SEED_OFFSET), as the runs before the zoo did. ``--defaults`` runs from a
temporary config with just ``{ENV: {policy: MlpPolicy, n_timesteps: STEPS}}``; an environment that the zoo's
file lists only at another version (HalfCheetah-v5: rl-zoo3 has -v4) runs from a temporary config holding that
entry, and the record's hyperparams name it (``hyperparams_from``).

    python benchmarks/returns.py --envs Pendulum-v1 --algos wpo sac --seeds 0-9 --steps 20000
    python benchmarks/returns.py --quick            # smoke test: 2 seeds, 2,000 steps, separate output folder
    python benchmarks/returns.py --report-only      # only redo the summary and plots from runs.jsonl
    python benchmarks/returns.py --seeds 0-9 --commands   # one command line per run to do, for a scheduler

Each run is one command line (this script with one run's selection and ``--in-process``), run by the local pool
``--processes`` at a time (``common.run_commands``); each appends its record to ``runs.jsonl``.
    python benchmarks/returns.py --algos wpo --defaults --set learning_starts=100 --out benchmarks/results/defaults/ls100
"""

import argparse
import ast
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import numpy as np
import torch as th
import yaml

ALGOS = ("wpo", "sac", "td3", "tqc")
COLORS = {"wpo": "tab:red", "sac": "tab:blue", "td3": "tab:green", "tqc": "tab:purple"}
EVAL_SEED_OFFSET = 10_000  # the evaluation environment's seed is the run's seed + this


def parse_seeds(text: list[str]) -> list[int]:
    seeds: list[int] = []
    for item in text:
        for part in item.split(","):
            if "-" in part:
                low, high = part.split("-")
                seeds += list(range(int(low), int(high) + 1))
            elif part:
                seeds.append(int(part))
    return seeds


def parse_setting(parser: argparse.ArgumentParser, item: str) -> tuple[str, Any]:
    """One ``--set KEY=VALUE``, its value read as the zoo's ``-params`` reads one: a Python literal (``1e-3``, ``100``,
    ``True``, ``[256, 256]``), else the text itself (``dict(...)``, which the zoo evaluates, or a name such as
    ``mean``). YAML would keep ``1e-3`` a string, which the zoo then takes for a schedule."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        parser.error(f"--set: {item!r} is not KEY=VALUE (e.g. learning_rate=1e-3)")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["Pendulum-v1"])
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    parser.add_argument("--seeds", nargs="+", default=None, help="e.g. 0-9 or 0,1,2 (default 0-9; --quick: 0,1)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: 20,000 on Pendulum, else zoo)")
    parser.add_argument("--eval-freq", type=int, default=2000)
    parser.add_argument("--n-eval-episodes", type=int, default=10)
    parser.add_argument("--processes", type=int, default=2, help="parallel runs (at most 2)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 2,000 steps, seeds 0,1 unless --seeds, results/returns_quick"
    )
    parser.add_argument("--report-only", action="store_true", help="no training; redo summary and plots")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results/returns)")
    parser.add_argument(
        "--defaults", action="store_true", help="the algorithms' constructor defaults instead of their zoo entries"
    )
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="e.g. learning_starts=100")
    parser.add_argument("--commands", action="store_true", help="print one command line per run to do (for a scheduler)")
    parser.add_argument("--in-process", action="store_true", help="run the selected runs here, without the report")
    args = parser.parse_args()
    args.overrides = dict(parse_setting(parser, item) for item in args.set)
    if args.quick:
        args.seeds, args.steps, args.eval_freq, args.n_eval_episodes = args.seeds or ["0,1"], 2000, 500, 2
    args.seeds = args.seeds or ["0-9"]
    if args.defaults and args.steps is None and set(args.envs) - {"Pendulum-v1"}:
        parser.error("--defaults needs --steps for environments other than Pendulum-v1")
    args.out = args.out or common.RESULTS / ("returns_quick" if args.quick else "returns")
    return args


def run_key(record: dict[str, Any]) -> tuple:
    return record["algo"], record["env_id"], int(record["seed"]), int(record["steps"])


def make_specs(args: argparse.Namespace, done: set[tuple]) -> list[dict[str, Any]]:
    """One spec per run not yet done. ``config_entry``, where present: the entry of the temporary zoo config the run
    reads (--defaults, or the entry of another version of the task); otherwise the zoo reads its own config."""
    specs = []
    for env_id in args.envs:
        for seed in parse_seeds(args.seeds):
            for algo in args.algos:  # interleaved: whatever finishes first is balanced across algorithms
                entry = {"policy": "MlpPolicy"} if args.defaults else common.raw_hyperparams(algo, env_id)
                steps = args.steps or (20_000 if env_id == "Pendulum-v1" else int(float(entry["n_timesteps"])))
                spec = dict(
                    name=f"{algo}_{env_id}_s{seed}",
                    algo=algo,
                    env_id=env_id,
                    seed=seed,
                    steps=steps,
                    eval_freq=args.eval_freq,
                    n_eval_episodes=args.n_eval_episodes,
                    train_keys=common.WPO_TRAIN_KEYS if algo == "wpo" else (),
                    overrides=args.overrides,
                )
                if args.defaults:
                    spec["config_entry"] = {"policy": "MlpPolicy", "n_timesteps": steps}
                elif "hyperparams_from" in entry:
                    spec["hyperparams_from"] = entry.pop("hyperparams_from")
                    spec["config_entry"] = entry
                if run_key(spec) not in done:
                    specs.append(spec)
    return specs


# ----------------------------------------------------------------------------------------------------------------
# One run: built by the zoo, evaluated every eval_freq steps
# ----------------------------------------------------------------------------------------------------------------
def run(spec: dict[str, Any]) -> dict[str, Any]:
    """One training run. ``spec``: name, algo, env_id, seed, steps, eval_freq, n_eval_episodes, overrides (values
    that replace the zoo entry's, as ``-params``), train_keys, optionally train_bin, config_entry (the entry of a
    temporary zoo config), hyperparams_from, cell. Returns the run record (curve and statistics).

    The zoo's ExperimentManager builds the model and the training env from the algorithm's config and makes the
    evaluation env, which is then reseeded with seed + EVAL_SEED_OFFSET (the zoo seeds it with the run's seed)."""
    th.set_num_threads(1)
    # the code this run imports: HEAD and whether sb3_wpo/ had uncommitted edits when the run started
    started = {"commit": common.git_commit(), "sb3_wpo_uncommitted_changes": common.sb3_wpo_dirty()}
    started.update(load_average_start=common.load_average(), started_utc=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()))
    algo, env_id, seed, steps = spec["algo"], spec["env_id"], spec["seed"], spec["steps"]
    with tempfile.TemporaryDirectory(prefix="sb3-wpo-returns-") as folder:
        config = None
        if "config_entry" in spec:
            config = str(Path(folder) / "config.yml")
            Path(config).write_text(yaml.safe_dump({env_id: spec["config_entry"]}))
        # the zoo prints the entry and its log path: kept off the progress bar (the record has the entry)
        with contextlib.redirect_stdout(io.StringIO()):
            experiment = common.zoo_experiment(
                algo, env_id, seed, steps, Path(folder) / "zoo", config=config, hyperparams=dict(spec.get("overrides", {}))
            )
            model, saved_hyperparams = experiment.setup_experiment()
            eval_env = experiment.create_envs(1, eval_env=True, no_log=True)
        eval_env.seed(seed + EVAL_SEED_OFFSET)  # for its next reset, the first evaluation's
        hyperparams = dict(saved_hyperparams)
        settings = common.model_settings(model)
        if model.learning_starts > steps:  # the warm-up ends with a short run (--quick), as before the zoo
            model.learning_starts = hyperparams["learning_starts"] = steps
        if "hyperparams_from" in spec:
            hyperparams["hyperparams_from"] = spec["hyperparams_from"]
        recorder = common.EvalRecorder(eval_env, spec["eval_freq"], spec["n_eval_episodes"], spec.get("train_keys", ()))
        recorder.train_bin = spec.get("train_bin", 500)
        start = time.perf_counter()
        error = None
        try:
            model.learn(total_timesteps=steps, callback=recorder)
        except Exception as exc:  # a diverged run is a result too
            error = f"{type(exc).__name__}: {exc}"[:500]
        recorder.flush_bin()
        total_wall_s = round(time.perf_counter() - start, 2)
        model.get_env().close()
        eval_env.close()
    record: dict[str, Any] = {key: spec[key] for key in ("name", "algo", "env_id", "seed", "steps", "cell") if key in spec}
    record["n_eval_episodes"] = spec["n_eval_episodes"]
    record.update(
        {
            "hyperparams": common.hyperparams_for_json(hyperparams),
            "settings": settings,
            "total_wall_s": total_wall_s,
            "curve": recorder.curve,
            "train_stats": recorder.train_stats,
            "train_means": recorder.train_means(),
            "final_return": recorder.curve[-1]["eval_mean"] if recorder.curve and error is None else float("nan"),
            "error": error,
            **started,
        }
    )
    return record


# ----------------------------------------------------------------------------------------------------------------
# Summary, tables, plots
# ----------------------------------------------------------------------------------------------------------------
def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (env, algo, steps): final return mean ± std, success rate, steps- and wall-clock-to-threshold."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["env_id"], record["algo"], int(record["steps"])), []).append(record)
    summary = []
    for (env_id, algo, steps), runs in sorted(groups.items()):
        runs = sorted(runs, key=lambda r: r["seed"])
        threshold = common.THRESHOLDS.get(env_id, float("inf"))
        finals = np.array([r["final_return"] for r in runs], dtype=float)
        ok = np.nan_to_num(finals, nan=-np.inf) >= threshold
        to_step = [common.first_crossing(r["curve"], threshold, "timesteps") for r in runs]
        to_wall = [common.first_crossing(r["curve"], threshold, "train_wall_s") for r in runs]
        to_cpu = [common.first_crossing(r["curve"], threshold, "train_cpu_s") for r in runs]
        reached = [x for x in to_step if x is not None]
        summary.append(
            {
                "env_id": env_id,
                "algo": algo,
                "steps": steps,
                "seeds": [r["seed"] for r in runs],
                "n_seeds": len(runs),
                "final_returns": [round(float(x), 1) for x in finals],
                "final_mean": float(np.nanmean(finals)),
                "final_std": float(np.nanstd(finals)),
                "final_ci95": common.bootstrap_ci(finals[np.isfinite(finals)]),
                "threshold": threshold,
                "n_success": int(ok.sum()),
                "success_rate": float(ok.mean()),
                "n_reached_threshold": len(reached),
                "steps_to_threshold_median": float(np.median(reached)) if reached else None,
                "wall_s_to_threshold_median": float(np.median([x for x in to_wall if x is not None])) if reached else None,
                "cpu_s_to_threshold_median": float(np.median([x for x in to_cpu if x is not None])) if reached else None,
                "train_wall_s_median": float(np.median([r["curve"][-1]["train_wall_s"] for r in runs if r["curve"]])),
                "errors": [r["error"] for r in runs if r.get("error")],
            }
        )
    return {"groups": summary}


def fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def markdown_table(summary: dict[str, Any]) -> str:
    lines = [
        "| env | algo | steps | seeds | final return mean ± std | success (≥ threshold) | median steps to threshold "
        "| median train wall-clock to threshold (s) | median train CPU to threshold (s) | median train wall-clock (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for g in summary["groups"]:
        lines.append(
            f"| {g['env_id']} | {g['algo'].upper()} | {g['steps']:,} | {g['n_seeds']} | {g['final_mean']:.1f} ± "
            f"{g['final_std']:.1f} | {g['n_success']}/{g['n_seeds']} (≥ {g['threshold']:g}) | "
            f"{fmt(g['steps_to_threshold_median'])} ({g['n_reached_threshold']}/{g['n_seeds']} reached) | "
            f"{fmt(g['wall_s_to_threshold_median'], 1)} | {fmt(g['cpu_s_to_threshold_median'], 1)} | "
            f"{fmt(g['train_wall_s_median'], 1)} |"
        )
    return "\n".join(lines) + "\n"


def plot_curves(records: list[dict[str, Any]], out: Path, meta: dict[str, Any]) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = []
    for env_id in sorted({r["env_id"] for r in records}):
        fig, ax = plt.subplots(figsize=(8, 5.2))
        for algo in ALGOS:
            runs = [r for r in records if r["env_id"] == env_id and r["algo"] == algo and r["curve"]]
            if not runs:
                continue
            length = min(len(r["curve"]) for r in runs)
            steps = np.array([p["timesteps"] for p in runs[0]["curve"][:length]])
            values = np.array([[p["eval_mean"] for p in r["curve"][:length]] for r in runs])
            intervals = np.array([common.bootstrap_ci(values[:, i]) for i in range(length)])
            ax.plot(steps, values.mean(axis=0), color=COLORS[algo], label=f"{algo.upper()} ({len(runs)} seeds)")
            ax.fill_between(steps, intervals[:, 0], intervals[:, 1], color=COLORS[algo], alpha=0.2)
        if env_id in common.THRESHOLDS:
            ax.axhline(common.THRESHOLDS[env_id], color="0.5", ls=":", lw=1, label="success threshold")
        ax.set_xlabel("environment steps")
        ax.set_ylabel(f"deterministic eval return ({records[0].get('n_eval_episodes', 10)} episodes)")
        ax.set_title(f"{env_id}: mean and 95% bootstrap interval over seeds")
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
        fig.subplots_adjust(bottom=0.17)
        path = out / f"curves_{env_id}.png"
        common.save_figure(fig, path, meta)
        paths.append(path)
    return paths


def report(out: Path, meta: dict[str, Any]) -> None:
    records = common.read_jsonl(out / "runs.jsonl")
    if not records:
        print(f"no runs in {out / 'runs.jsonl'}")
        return
    for record in records:
        rows = [{"run": record["name"], **point} for point in record["curve"]]
        common.write_csv(out / "curves" / f"{record['name']}_{record['steps']}.csv", rows)
    summary = summarize(records)
    summary["meta"] = meta
    common.write_json(out / "summary.json", summary)
    (out / "summary.md").write_text(markdown_table(summary))
    plot_curves(records, out, meta)
    print(markdown_table(summary))


def command(spec: dict[str, Any], args: argparse.Namespace) -> common.Command:
    """One run's command line: this script with the run's selection, in process (``--in-process``)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--envs", spec["env_id"], "--algos", spec["algo"]]
    argv += ["--seeds", str(spec["seed"]), "--steps", str(spec["steps"]), "--eval-freq", str(spec["eval_freq"])]
    argv += ["--n-eval-episodes", str(spec["n_eval_episodes"]), "--out", str(args.out), "--in-process"]
    argv += ["--defaults"] * args.defaults + (["--set", *args.set] if args.set else [])
    return common.Command(spec["name"], tuple(argv))


def run_here(specs: list[dict[str, Any]], runs_file: Path) -> None:
    """Run ``specs`` in this process one after the other, each appending its record as it finishes."""
    for spec in specs:
        record = run(spec)
        common.append_jsonl(runs_file, record)
        print(f"  {record['name']}: final {record['final_return']:.1f} in {record['total_wall_s']:.0f}s", flush=True)


def main() -> None:
    args = parse_args()
    meta = common.provenance()
    runs_file = args.out / "runs.jsonl"
    if not args.report_only:
        done = {run_key(r) for r in common.read_jsonl(runs_file)}
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
    report(args.out, meta)


if __name__ == "__main__":
    main()
