"""The README's main job as a whole process: WPO's Pendulum-v1 zoo entry against SBX's SAC (JAX) with the zoo's.

Each run is one process on one core (``os.sched_setaffinity`` of this script, which its processes inherit; one torch /
XLA thread): the RL Zoo's training command, start-up, 20,000 steps and saving included, without periodic evaluation
(``--eval-freq -1``):

    python -m rl_zoo3.train --algo wpo --env Pendulum-v1 --num-threads 1 --eval-freq -1 --seed S
    python -m rl_zoo3.train --algo sac --env Pendulum-v1 ... with SBX's SAC in SB3's place (rl-baselines3-zoo's
        train_sbx.py does the same), so that each algorithm runs with its own tuned zoo entry

After each process its saved agent is evaluated (10 deterministic episodes, not timed), so that every time comes with
the return it bought: Pendulum-v1 counts as solved above -200. Variants alternate within each repeat (seed = repeat).
Wall-clock and CPU time per process, min and median, and WPO's ratio to SBX's SAC; results/pendulum_process/.

    pip install -e ".[benchmarks]"                       # SBX (sbx-rl, JAX) comes with the benchmarks extra
    python benchmarks/pendulum_process.py                # 3 repeats of each variant, about 15 minutes
    python benchmarks/pendulum_process.py --candidate "num_samples:4 train_freq:2"   # a WPO setting beside the entry
    python benchmarks/pendulum_process.py --quick        # smoke test (2,000 steps, one repeat)
    python benchmarks/pendulum_process.py --plot-only    # redraw the figure from the result file

Time nothing else meanwhile: the machine's load is recorded with the results.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

OUT = common.RESULTS / "pendulum_process"
ENV_ID = "Pendulum-v1"
SOLVED = -200.0
# rl_zoo3.train with SBX's SAC registered as "sac" (as rl-baselines3-zoo's train_sbx.py)
SBX_TRAIN = (
    "import sys, runpy, rl_zoo3, rl_zoo3.train, rl_zoo3.exp_manager, sbx; "
    "rl_zoo3.ALGOS['sac'] = sbx.SAC; rl_zoo3.train.ALGOS = rl_zoo3.exp_manager.ALGOS = rl_zoo3.ALGOS; "
    "sys.argv = ['rl_zoo3.train', *sys.argv[1:]]; runpy.run_module('rl_zoo3.train', run_name='__main__')"
)
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "JAX_PLATFORMS": "cpu",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--candidate", nargs="*", default=[], metavar="PARAMS", help="WPO -params beside the entry")
    parser.add_argument("--core", type=int, default=0, help="the CPU core every process runs on")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2,000 steps, one repeat")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.steps = 1, 2000
        args.out = args.out / "quick"
    return args


def variants(candidates: list[str]) -> dict[str, tuple[str, list[str]]]:
    """Variant name: (algorithm, its -params)."""
    table: dict[str, tuple[str, list[str]]] = {"WPO (wpo.yml)": ("wpo", []), "SBX SAC (zoo)": ("sbx-sac", [])}
    table.update({f"WPO {params}": ("wpo", params.split()) for params in candidates})
    return table


def train_command(algo: str, params: list[str], steps: int, seed: int, folder: str) -> list[str]:
    zoo_args = ["--algo", "wpo" if algo == "wpo" else "sac", "--env", ENV_ID, "-n", str(steps), "--num-threads", "1"]
    zoo_args += ["--eval-freq", "-1", "--seed", str(seed), "-f", folder, *(["-params", *params] if params else [])]
    if algo == "wpo":
        return [sys.executable, "-m", "rl_zoo3.train", *zoo_args]
    return [sys.executable, "-c", SBX_TRAIN, *zoo_args]


def evaluate(algo: str, folder: str, seed: int) -> float:
    """Mean return of the saved agent over 10 deterministic episodes."""
    import gymnasium as gym
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    zoo_algo = "wpo" if algo == "wpo" else "sac"
    path = Path(folder) / zoo_algo / f"{ENV_ID}_1" / f"{ENV_ID}.zip"
    model: Any
    if algo == "wpo":
        from sb3_wpo import WPO

        model = WPO.load(path, device="cpu")
    else:  # JAX only where it is measured
        from sbx import SAC as SbxSAC

        model = SbxSAC.load(path, device="cpu")
    env = Monitor(gym.make(ENV_ID))
    env.reset(seed=seed + 10_000)
    mean, _ = evaluate_policy(model, env, n_eval_episodes=10, deterministic=True)
    return float(mean)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    table = variants(args.candidate)
    names = list(table)
    runs: list[dict[str, Any]] = []
    environment = {**os.environ, **ONE_THREAD}
    # The training processes inherit this process's core (a preexec_fn would run Python between fork and exec, unsafe
    # once JAX's threads run here after an SBX evaluation).
    os.sched_setaffinity(0, {args.core})
    with tqdm(total=args.repeats * len(names), desc="processes") as progress:
        for repeat, name in common.interleaved_order(names, args.repeats):
            algo, params = table[name]
            with tempfile.TemporaryDirectory() as folder:
                command = train_command(algo, params, args.steps, repeat, folder)
                wall, cpu = common.timed_process(command, env=environment)
                runs.append(
                    {"variant": name, "seed": repeat, "wall_s": wall, "cpu_s": cpu, "return": evaluate(algo, folder, repeat)}
                )
            progress.set_postfix_str(f"{name}: {wall:.0f} s, return {runs[-1]['return']:.0f}")
            progress.update()
    return {
        "args": {"repeats": args.repeats, "steps": args.steps, "candidate": args.candidate, "core": args.core},
        "commands": {name: " ".join(train_command(*table[name], args.steps, 0, "<tmp>")[1:]) for name in names},
        "runs": runs,
        "summary": summarize(runs, names),
        "meta": {**common.provenance(), "load_average_after": common.load_average()},
    }


def summarize(runs: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, Any]]:
    """Per variant: wall and CPU time (min, median), returns, seeds solved, and the ratios to SBX's SAC."""
    summary: dict[str, dict[str, Any]] = {}
    for name in names:
        own = [r for r in runs if r["variant"] == name]
        walls, cpus, returns = [r["wall_s"] for r in own], [r["cpu_s"] for r in own], [r["return"] for r in own]
        summary[name] = {
            "wall_min": min(walls),
            "wall_median": statistics.median(walls),
            "cpu_median": statistics.median(cpus),
            "returns": returns,
            "solved": sum(value > SOLVED for value in returns),
            "processes": len(own),
        }
    baseline = summary["SBX SAC (zoo)"]
    for row in summary.values():
        row["wall_median_over_sbx"] = row["wall_median"] / baseline["wall_median"]
        row["wall_min_over_sbx"] = row["wall_min"] / baseline["wall_min"]
    return summary


def write_markdown(results: dict[str, Any], path: Path) -> None:
    lines = [
        f"Whole process of `rl_zoo3.train` on {ENV_ID}, {results['args']['steps']:,} steps, one core, "
        f"{results['args']['repeats']} processes per variant (seeds 0-{results['args']['repeats'] - 1}); "
        "return: 10 deterministic episodes of the saved agent.",
        "",
        "| variant | wall s (min / median) | CPU s (median) | wall ÷ SBX SAC's (min / median) | returns | solved (> −200) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results["summary"].items():
        returns = ", ".join(f"{value:.0f}" for value in row["returns"])
        lines.append(
            f"| {name} | {row['wall_min']:.1f} / {row['wall_median']:.1f} | {row['cpu_median']:.1f} | "
            f"{row['wall_min_over_sbx']:.2f} / {row['wall_median_over_sbx']:.2f} | {returns} | "
            f"{row['solved']}/{row['processes']} |"
        )
    lines += ["", "Commands:", "", *(f"- {name}: `{command}`" for name, command in results["commands"].items())]
    path.write_text("\n".join(lines) + "\n")


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    summary = results["summary"]
    names = list(summary)
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.6 * len(names)))
    for index, name in enumerate(names):
        walls = [r["wall_s"] for r in results["runs"] if r["variant"] == name]
        ax.scatter(walls, [index] * len(walls), color="tab:red" if name.startswith("WPO") else "tab:blue", zorder=3)
        ax.barh(index, summary[name]["wall_median"], color="0.85", zorder=2)
        ax.text(summary[name]["wall_median"], index + 0.3, f" solved {summary[name]['solved']}/{summary[name]['processes']}")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel(f"whole-process wall-clock, s ({ENV_ID}, {results['args']['steps']:,} steps, one core)")
    ax.set_title("bars: median; dots: each process")
    common.save_figure(fig, path, results["meta"])


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result_file = args.out / "pendulum_process.json"
    results = json.loads(result_file.read_text()) if args.plot_only else run(args)
    if not args.plot_only:
        common.write_json(result_file, results)
    write_markdown(results, args.out / "summary.md")
    plot(results, args.out / "pendulum_process.png")
    print((args.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
