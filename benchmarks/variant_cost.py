"""Training cost per environment step of campaign variants against SB3's SAC, in one script run on one torch thread.

The tuning rule (benchmarks/notes/tuning.md) ships a setting only at a cost at most SAC's; the run records' CPU
times come from runs that shared the machine with other work. Here each variant is built as its campaign run is
(``campaign.make_experiment``: the zoo's ExperimentManager with the variant's values), its buffer filled past
``learning_starts`` with random steps, and then whole ``learn()`` calls of ``--steps`` environment steps (collection
and updates, as in a run; no evaluation) are timed, variants interleaved across repeats; CPU time of the process per
environment step, min and median, and its ratio to SAC's. With several tasks (``--env``), each is measured in turn and
the ratios' median over the tasks is given too (the goal of issue 26 reads the cost as that median). ``candidate``
names each task's family candidate (``campaign.candidate``: MuJoCo's or the Control Suite's), so that the median is
the one of the settings the confirmation runs. Results: results/tuning/cost.json and cost.md.

    python benchmarks/variant_cost.py --variants wpo wpo-s1u1 wpo-s2u1     # SAC is always measured; ~5 minutes
    python benchmarks/variant_cost.py --variants wpo-s1u1-ln2-2q-n1-d2 --env Hopper-v5 dm_control/walker-walk-v0
    python benchmarks/variant_cost.py --variants candidate --env HalfCheetah-v5 dm_control/cheetah-run-v0
    python benchmarks/variant_cost.py --quick                              # smoke test

Time nothing else meanwhile (pause background runs with kill -STOP); the load average is recorded.
"""

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import campaign
import common
import torch as th

OUT = common.RESULTS / "tuning"
CANDIDATE = "candidate"  # stands for each task's family candidate


def resolve(name: str, env_id: str) -> str:
    """The campaign variant ``name`` stands for on ``env_id``."""
    return campaign.candidate(env_id) if name == CANDIDATE else name


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["wpo", "wpo-s1u1"], choices=(CANDIDATE, *campaign.VARIANTS))
    parser.add_argument("--env", nargs="+", default=["HalfCheetah-v5"], help="one task or several, measured in turn")
    parser.add_argument("--steps", type=int, default=1000, help="environment steps per timed learn() call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 repeats of 50 steps, a separate output")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.steps, args.out = 2, 50, args.out / "quick"
    return args


def filled_model(variant: str, env_id: str, folder: Path) -> Any:
    """The variant's model as its campaign run builds it, after ``learning_starts`` random steps and one update."""
    with contextlib.redirect_stdout(io.StringIO()):
        experiment = campaign.make_experiment(variant, env_id, 0, 10**9, folder)
        model, _ = experiment.setup_experiment()
    model.learn(total_timesteps=model.learning_starts + 1)
    return model


def cpu_per_step(model: Any, steps: int) -> float:
    start = time.process_time()
    model.learn(total_timesteps=steps, reset_num_timesteps=False)
    return (time.process_time() - start) / steps


def measure_task(env_id: str, names: list[str], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Each variant's CPU time per step on one task, SAC's first in ``names``, keyed by the name asked for (the
    variant measured is the row's ``variant``)."""
    from tqdm import tqdm

    variants = {name: resolve(name, env_id) for name in names}
    per_step: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="sb3-wpo-cost-") as folder:
        fill = tqdm(names, desc=f"{env_id}: fill")
        models = {name: filled_model(variants[name], env_id, Path(folder) / name) for name in fill}
        with tqdm(total=args.repeats * len(names), desc=f"{env_id}: timed learn() calls") as progress:
            for _, name in common.interleaved_order(names, args.repeats):
                per_step[name].append(cpu_per_step(models[name], args.steps))
                progress.update()
    rows: dict[str, dict[str, Any]] = {
        name: {
            "variant": variants[name],
            "cpu_ms_per_step_min": 1e3 * min(values),
            "cpu_ms_per_step_median": 1e3 * statistics.median(values),
            "cpu_ms_per_step_all": [1e3 * value for value in values],
            "hyperparams": campaign.VARIANTS[variants[name]][1],
        }
        for name, values in per_step.items()
    }
    for row in rows.values():
        row["over_sac_min"] = row["cpu_ms_per_step_min"] / rows["sac"]["cpu_ms_per_step_min"]
        row["over_sac_median"] = row["cpu_ms_per_step_median"] / rows["sac"]["cpu_ms_per_step_median"]
    return rows


def measure(args: argparse.Namespace) -> dict[str, Any]:
    names = ["sac", *(name for name in args.variants if name != "sac")]
    tasks = {env_id: measure_task(env_id, names, args) for env_id in args.env}
    median_over_tasks = {
        name: {
            statistic: statistics.median(rows[name][f"over_sac_{statistic}"] for rows in tasks.values())
            for statistic in ("min", "median")
        }
        for name in names
    }
    args_record = {"envs": args.env, "steps": args.steps, "repeats": args.repeats, "torch_threads": th.get_num_threads()}
    return {
        "args": args_record,
        "tasks": tasks,
        "median_over_tasks": median_over_tasks,
        "meta": {**common.provenance(), "load_after": common.load_average()},
    }


def write_markdown(results: dict[str, Any], path: Path) -> None:
    tasks, steps = results["tasks"], results["args"]["steps"]
    lines = [
        f"Training CPU time per environment step (learn() calls of {steps:,} steps after the warm-up; "
        f"{results['args']['repeats']} per variant and task, interleaved): `{results['meta']['command']}`",
        "",
        "| task | variant | CPU ms / step (min / median) | × SAC's (min / median) |",
        "|---|---|---|---|",
    ]
    for env_id, rows in tasks.items():
        for row in rows.values():
            lines.append(
                f"| {env_id} | {row['variant']} | {row['cpu_ms_per_step_min']:.2f} / {row['cpu_ms_per_step_median']:.2f} | "
                f"{row['over_sac_min']:.2f} / {row['over_sac_median']:.2f} |"
            )
    if len(tasks) > 1:
        lines += ["", f"Median over the {len(tasks)} tasks of the ratio to SAC's:", "", "| variant | × SAC's (min / median) |"]
        lines.append("|---|---|")
        for name, ratio in results["median_over_tasks"].items():
            variants = sorted({rows[name]["variant"] for rows in tasks.values()})
            label = f"{name}: {', '.join(variants)}" if name == CANDIDATE else name
            lines.append(f"| {label} | {ratio['min']:.2f} / {ratio['median']:.2f} |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    args = parse_args()
    th.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    results = measure(args)
    common.write_json(args.out / "cost.json", results)
    write_markdown(results, args.out / "cost.md")
    print((args.out / "cost.md").read_text())


if __name__ == "__main__":
    main()
