"""What one WPO update costs against this CPU's matmul floor, the allocator's share of it, and the whole training process.

Parts (one torch thread everywhere; variants interleaved across repeats; min and median reported):
1. update: ``model.train()`` updates, batch 256, at Pendulum sizes (obs 3, act 1, with hyperparams/wpo.yml's
   Pendulum-v1 entry: N=8, [256, 256] ReLU) and at HalfCheetah and humanoid sizes (17/6 and 67/21, with its
   HalfCheetah-v5 entry with the reference's example settings, ``campaign.REFERENCE_EXAMPLE``: N=20, LayerNorm
   [256, 256, 256] ELU, which the entry held when these were measured), on a random replay buffer.
   Each variant runs in its own child process, because the allocator setting is process-wide:
   ``glibc default`` (sb3_wpo.allocator switched off: the update as it was before it) and ``kept`` (as shipped).
   The child also counts page faults per update and measures the single-thread matmul rate, so that an update's
   matmul FLOPs (``speed.wpo_update_flops``) divided by that rate gives the fastest the update could run.
2. process: the RL Zoo's training command on Pendulum-v1, whole process (start-up, 3,000 steps, saving):
   ``python -m rl_zoo3.train --algo {wpo,sac} --env Pendulum-v1 -n 3000 --num-threads 1``, WPO with and without
   the allocator setting.
3. compiled: the N·B-row core of the update, the critic's Q and ∇a Q at N sampled actions per state (forward and
   input-gradient backward) and the target critic's forward, eager against ``torch.compile`` (inductor; ∇a Q through
   ``torch.func.grad_and_value``, so that the graph has no ``autograd.grad`` break), at the three sizes, with the
   largest difference of the results and the compile time.

    python benchmarks/update_cost.py            # about 15 minutes on an idle 2-core machine
    python benchmarks/update_cost.py --quick    # smoke test
    python benchmarks/update_cost.py --plot-only  # redraw the figure from results/update_cost/update_cost.json
"""

import argparse
import functools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import campaign
import common
import gymnasium as gym
import numpy as np

SIZES = {  # name: (obs_dim, act_dim, wpo.yml entry, settings replacing the entry's)
    "Pendulum (3/1)": (3, 1, "Pendulum-v1", {}),
    "HalfCheetah (17/6)": (17, 6, "HalfCheetah-v5", campaign.REFERENCE_EXAMPLE),
    "humanoid (67/21)": (67, 21, "HalfCheetah-v5", campaign.REFERENCE_EXAMPLE),
}
ALLOCATORS = ("glibc default", "kept")
ZOO_VARIANTS = {  # name: (algo, allocator setting on)
    "WPO": ("wpo", True),
    "WPO, glibc default": ("wpo", False),
    "SAC": ("sac", True),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="child processes per variant (interleaved)")
    parser.add_argument("--timings", type=int, default=3, help="timings per child process")
    parser.add_argument("--updates", type=int, default=10, help="updates per timing")
    parser.add_argument("--zoo-steps", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny budgets, results/update_cost_quick")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--plot-only", action="store_true", help="redraw the figure from the results file")
    parser.add_argument("--child", nargs=2, metavar=("SIZE", "ALLOCATOR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.timings, args.updates, args.zoo_steps = 1, 1, 2, 300
    args.out = args.out or common.RESULTS / ("update_cost_quick" if args.quick else "update_cost")
    return args


def switch_allocator(on: bool) -> None:
    """Before WPO is built: ``on=False`` leaves glibc's allocator as it is (as before sb3_wpo.allocator existed)."""
    import sb3_wpo.allocator

    if not on:
        sb3_wpo.allocator._applied = False


# ----------------------------------------------------------------------------------------------------------------
# Part 1: one update, in a child process
# ----------------------------------------------------------------------------------------------------------------
class RandomEnv(gym.Env):
    """Random observations and rewards of the given sizes: an update's cost without an environment's."""

    def __init__(self, obs_dim: int, act_dim: int):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self.np_random.standard_normal(self.observation_space.shape).astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs = self.np_random.standard_normal(self.observation_space.shape).astype(np.float32)
        return obs, float(self.np_random.standard_normal()), False, False, {}


def random_env_id(obs_dim: int, act_dim: int) -> str:
    """A registered id of :class:`RandomEnv` at these sizes, for the zoo to build."""
    env_id = f"RandomBox-{obs_dim}x{act_dim}-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=functools.partial(RandomEnv, obs_dim, act_dim))
    return env_id


def wpo_at_size(size: str, **overrides: Any) -> Any:
    """WPO with the wpo.yml entry of ``size`` and its settings (``overrides`` replacing their values) on a random
    environment of its sizes, built by the zoo."""
    obs_dim, act_dim, entry_id, settings = SIZES[size]
    entry = {k: v for k, v in common.raw_hyperparams("wpo", entry_id).items() if k != "hyperparams_from"}
    model, _ = common.zoo_model("wpo", random_env_id(obs_dim, act_dim), 0, entry, {**settings, **overrides})
    return model


def child_update(size: str, allocator: str, timings: int, updates: int) -> dict[str, Any]:
    import speed
    import torch as th

    th.set_num_threads(1)
    switch_allocator(allocator == "kept")
    obs_dim, act_dim, _, _ = SIZES[size]
    fill = 2000
    model = wpo_at_size(size, learning_starts=fill)
    model.learn(fill)
    model.train(gradient_steps=10, batch_size=256)  # warm-up: the heap grows to its working size
    walls, faults = [], []
    for _ in range(timings):
        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        model.train(gradient_steps=updates, batch_size=256)
        walls.append((time.perf_counter() - start) / updates)
        faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before) / updates)
    hidden = model.policy.net_arch if isinstance(model.policy.net_arch, list) else model.policy.net_arch["qf"]
    return {
        "per_update_s": walls,
        "page_faults_per_update": faults,
        "flops": speed.wpo_update_flops(obs_dim, act_dim, hidden, model.num_samples, 256)["total"],
        "matmul_gflops": speed.matmul_throughput(quick=False),
        "num_samples": model.num_samples,
        "hidden": hidden,
    }


def run_child(size: str, allocator: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", size, allocator, "--timings", str(args.timings)]
    output = subprocess.run([*command, "--updates", str(args.updates)], check=True, capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def part_update(args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {size: {a: [] for a in ALLOCATORS} for size in SIZES}
    for repeat in range(args.repeats):
        for size in SIZES:
            order = ALLOCATORS if repeat % 2 == 0 else ALLOCATORS[::-1]
            for allocator in order:
                runs[size][allocator].append(run_child(size, allocator, args))
                progress.update()
    results = {}
    for size, by_allocator in runs.items():
        row: dict[str, Any] = {}
        for allocator, children in by_allocator.items():
            walls = [w for child in children for w in child["per_update_s"]]
            faults = [f for child in children for f in child["page_faults_per_update"]]
            rates = [max(r["gflops_best"] for r in child["matmul_gflops"].values()) for child in children]
            row[allocator] = {
                "wall_min": min(walls),
                "wall_median": statistics.median(walls),
                "wall_all": walls,
                "page_faults_per_update_median": statistics.median(faults),
                "matmul_gflops_best": max(rates),
            }
        flops, peak = children[0]["flops"], max(row[a]["matmul_gflops_best"] for a in ALLOCATORS)
        floor = flops / (peak * 1e9)
        row["flops_per_update"] = flops
        row["matmul_floor_s"] = floor
        row["num_samples"], row["hidden"] = children[0]["num_samples"], children[0]["hidden"]
        row["speedup_kept_over_default"] = {
            key: row["glibc default"][key] / row["kept"][key] for key in ("wall_min", "wall_median")
        }
        row["achieved_fraction_of_matmul_rate"] = {a: floor / row[a]["wall_median"] for a in ALLOCATORS}
        row["max_speedup_left"] = row["kept"]["wall_median"] / floor
        results[size] = row
        before, after = row["glibc default"], row["kept"]
        print(
            f"  {size}: {before['wall_median'] * 1e3:.1f} → {after['wall_median'] * 1e3:.1f} ms/update "
            f"({row['speedup_kept_over_default']['wall_median']:.2f}×), page faults "
            f"{before['page_faults_per_update_median']:.0f} → {after['page_faults_per_update_median']:.0f}, "
            f"matmul floor {floor * 1e3:.1f} ms ({flops / 1e9:.2f} GFLOP at {peak:.0f} GFLOP/s)"
        )
    return results


# ----------------------------------------------------------------------------------------------------------------
# Part 2: the zoo's training process
# ----------------------------------------------------------------------------------------------------------------
def zoo_command(algo: str, allocator_on: bool, steps: int, folder: str) -> list[str]:
    zoo_args = ["--algo", algo, "--env", "Pendulum-v1", "-n", str(steps), "--num-threads", "1", "--seed", "0", "-f", folder]
    if allocator_on:
        return [sys.executable, "-m", "rl_zoo3.train", *zoo_args]
    code = (
        f"import sys, runpy; sys.path.insert(0, {str(Path(__file__).parent)!r}); import update_cost; "
        "update_cost.switch_allocator(False); "
        f"sys.argv = ['rl_zoo3.train', *{zoo_args!r}]; runpy.run_module('rl_zoo3.train', run_name='__main__')"
    )
    return [sys.executable, "-c", code]


def part_process(args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    walls: dict[str, list[float]] = {name: [] for name in ZOO_VARIANTS}
    cpus: dict[str, list[float]] = {name: [] for name in ZOO_VARIANTS}
    names = list(ZOO_VARIANTS)
    for _, name in common.interleaved_order(names, args.repeats):
        algo, allocator_on = ZOO_VARIANTS[name]
        with tempfile.TemporaryDirectory() as folder:
            wall, cpu = common.timed_process(zoo_command(algo, allocator_on, args.zoo_steps, folder))
        walls[name].append(wall)
        cpus[name].append(cpu)
        progress.update()
    results: dict[str, Any] = {
        "command": " ".join(zoo_command("wpo", True, args.zoo_steps, "<tmp>")[1:]),
        "per_process_s": {
            name: {
                "wall_min": min(walls[name]),
                "wall_median": statistics.median(walls[name]),
                "cpu_median": statistics.median(cpus[name]),
                "wall_all": walls[name],
            }
            for name in names
        },
    }
    times = results["per_process_s"]
    results["ratio_over_SAC"] = {
        name: {key: times[name][key] / times["SAC"][key] for key in ("wall_min", "wall_median", "cpu_median")}
        for name in names
        if name != "SAC"
    }
    for name, r in results["ratio_over_SAC"].items():
        print(f"  zoo train Pendulum-v1, {name} / SAC: {r['wall_median']:.2f} (wall median), {r['cpu_median']:.2f} (CPU)")
    return results


# ----------------------------------------------------------------------------------------------------------------
# Part 3: the N·B-row core, eager vs torch.compile
# ----------------------------------------------------------------------------------------------------------------
def part_compiled(args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    import torch as th

    from sb3_wpo.allocator import keep_freed_memory

    th.set_num_threads(1)
    keep_freed_memory()
    results = {}
    for size in SIZES:
        results[size] = compare_compiled(size, args)
        progress.update()
    return results


def compare_compiled(size: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch as th
    from torch.func import functional_call, grad_and_value

    model = wpo_at_size(size)
    obs_dim = SIZES[size][0]
    critic, critic_target = model.critic, model.critic_target
    obs = th.randn(256, obs_dim)
    with th.no_grad():
        actions = model._sample_actions(*model.actor.distribution_params(obs)).clamp(-1.0, 1.0)  # [N, B, D]
    state = {**dict(critic.named_parameters()), **dict(critic.named_buffers())}

    def eager_dq(obs: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        actions = actions.detach().requires_grad_(True)
        q_values = critic(obs, actions).mean(dim=-1)
        (q_grads,) = th.autograd.grad(q_values.sum(), actions)
        return q_values.detach(), q_grads

    def q_sum(actions: th.Tensor, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        q_values = functional_call(critic, state, (obs, actions)).mean(dim=-1)
        return q_values.sum(), q_values

    def functional_dq(obs: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        q_grads, (_, q_values) = grad_and_value(q_sum, has_aux=True)(actions, obs)
        return q_values, q_grads

    def target_q(obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        with th.no_grad():
            return critic_target(obs, actions)

    row: dict[str, Any] = {"num_samples": model.num_samples}
    for name, eager, compiled_fn in (
        ("Q and ∇a Q (online critic)", eager_dq, functional_dq),
        ("Q (target critic, no grad)", target_q, target_q),
    ):
        start = time.perf_counter()
        try:
            compiled = th.compile(compiled_fn, dynamic=False)
            compiled_out, eager_out = compiled(obs, actions), eager(obs, actions)
        except Exception as error:  # a missing C++ compiler, an unsupported op: recorded, not fatal
            row[name] = {"error": repr(error)[:300]}
            continue
        compile_s = time.perf_counter() - start
        pairs = zip(
            compiled_out if isinstance(compiled_out, tuple) else (compiled_out,),
            eager_out if isinstance(eager_out, tuple) else (eager_out,),
            strict=True,
        )
        walls: dict[str, list[float]] = {"eager": [], "compiled": []}
        for repeat in range(args.repeats * args.timings):
            for variant, fn in (("eager", eager), ("compiled", compiled))[:: 1 if repeat % 2 == 0 else -1]:
                start = time.perf_counter()
                for _ in range(args.updates):
                    fn(obs, actions)
                walls[variant].append((time.perf_counter() - start) / args.updates)
        row[name] = {
            "compile_s": compile_s,
            "max_abs_difference": max(float((a - b).abs().max()) for a, b in pairs),
            **{f"{variant}_wall_median": statistics.median(values) for variant, values in walls.items()},
            **{f"{variant}_wall_min": min(values) for variant, values in walls.items()},
        }
        row[name]["speedup_median"] = row[name]["eager_wall_median"] / row[name]["compiled_wall_median"]
        print(
            f"  {size}, {name}: eager {row[name]['eager_wall_median'] * 1e3:.2f} ms, compiled "
            f"{row[name]['compiled_wall_median'] * 1e3:.2f} ms ({row[name]['speedup_median']:.2f}×), "
            f"max difference {row[name]['max_abs_difference']:.1e}, compile {compile_s:.0f} s"
        )
    return row


# ----------------------------------------------------------------------------------------------------------------
# Plot and main
# ----------------------------------------------------------------------------------------------------------------
def plot(results: dict[str, Any], path: Path, meta: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
    sizes = list(results["update"])
    bars = {
        "glibc default (before)": [results["update"][s]["glibc default"]["wall_median"] * 1e3 for s in sizes],
        "kept (shipped)": [results["update"][s]["kept"]["wall_median"] * 1e3 for s in sizes],
        "matmul floor (FLOPs / measured rate)": [results["update"][s]["matmul_floor_s"] * 1e3 for s in sizes],
    }
    x = np.arange(len(sizes))
    for i, (label, values) in enumerate(bars.items()):
        left.bar(x + i * 0.27, values, 0.27, label=label)
    left.set_xticks(x + 0.27, [f"{s}\nN={results['update'][s]['num_samples']}" for s in sizes])
    left.set_ylabel("ms per update (median)")
    left.set_title("one WPO update, batch 256, one thread", fontsize=10)
    left.legend(fontsize=8, loc="upper left")
    left.grid(axis="y", alpha=0.3)
    process = results["process"]["per_process_s"]
    right.bar(list(process), [v["wall_median"] for v in process.values()], color=["C1", "C0", "C2"])
    right.scatter(list(process), [v["wall_min"] for v in process.values()], color="k", s=10, zorder=3)
    right.set_ylabel("seconds (bar: median, dot: min)")
    right.set_title(f"whole process: python -m rl_zoo3.train --env Pendulum-v1 -n {results['args']['zoo_steps']}", fontsize=10)
    right.grid(axis="y", alpha=0.3)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    common.save_figure(fig, path, meta)


def main() -> None:
    args = parse_args()
    if args.child:
        size, allocator = args.child
        print(json.dumps(child_update(size, allocator, args.timings, args.updates)))
        return
    if args.plot_only:
        saved = json.loads((args.out / "update_cost.json").read_text())
        plot(saved, args.out / "update_cost.png", saved["meta"])
        return
    from tqdm import tqdm

    meta = common.provenance()
    results: dict[str, Any] = {"meta": meta, "load_before": common.load_average(), "args": vars(args) | {"out": str(args.out)}}
    total = args.repeats * (len(SIZES) * len(ALLOCATORS) + len(ZOO_VARIANTS)) + len(SIZES)
    with tqdm(total=total, desc="parts") as progress:
        results["update"] = part_update(args, progress)
        results["process"] = part_process(args, progress)
        results["compiled"] = part_compiled(args, progress)
    results["load_after"] = common.load_average()
    common.write_json(args.out / "update_cost.json", results)
    plot(results, args.out / "update_cost.png", meta)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
