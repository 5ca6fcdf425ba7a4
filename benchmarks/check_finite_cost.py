"""Cost of WPO's divergence guard (``check_finite=True``): ``model.train(...)`` timed with the guard on and off in the
same process, on the same model and replay buffer, interleaved, min/median over repeats, past the first
``SNAPSHOT_INTERVAL`` updates (where the guard copies the state at every call); also the cost of one copy of the state
(a snapshot) alone.

    python benchmarks/check_finite_cost.py [--repeats 7] [--env Pendulum-v1]

Writes ``benchmarks/results/check_finite_cost.json``. Run it on an idle machine (the load average is recorded).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import torch as th

from sb3_wpo import WPO
from sb3_wpo.safety import SNAPSHOT_INTERVAL

RESULT = common.RESULTS / "check_finite_cost.json"


def time_train(model: WPO, check_finite: bool, calls: int, gradient_steps: int) -> float:
    """Seconds per train() call, averaged over ``calls`` calls."""
    model.check_finite = check_finite
    start = time.perf_counter()
    for _ in range(calls):
        model.train(gradient_steps=gradient_steps, batch_size=model.batch_size)
    return (time.perf_counter() - start) / calls


def summary(samples: list[float]) -> dict[str, float]:
    return {"min_ms": 1e3 * min(samples), "median_ms": 1e3 * statistics.median(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()
    th.set_num_threads(1)
    load_before = common.load_average()[0]

    # WPO's constructor defaults, built by the zoo; the buffer is filled with random actions.
    model, _ = common.zoo_model("wpo", args.env, 0, {"policy": "MlpPolicy", "n_timesteps": 1}, {"learning_starts": 2_000})
    model.learn(2_000)
    # Warm-up (Adam states, allocator, snapshot buffers), past the updates where the guard copies the state at each call
    model.train(gradient_steps=SNAPSHOT_INTERVAL + 5, batch_size=model.batch_size)

    cases: list[dict[str, Any]] = []
    # gradient_steps=1 is SB3's default (train() after every env step): the snapshots, one per SNAPSHOT_INTERVAL
    # updates, weigh the most there.
    for gradient_steps, calls in ((1, 40), (64, 1)):
        on: list[float] = []
        off: list[float] = []
        for repeat in range(args.repeats):
            order = (True, False) if repeat % 2 == 0 else (False, True)  # interleaved, alternating order
            for check_finite in order:
                (on if check_finite else off).append(time_train(model, check_finite, calls, gradient_steps))
        cases.append(
            {
                "gradient_steps": gradient_steps,
                "calls_per_sample": calls,
                "check_finite_on": summary(on),
                "check_finite_off": summary(off),
                "ratio_min": min(on) / min(off),
                "ratio_median": statistics.median(on) / statistics.median(off),
            }
        )

    # The snapshot alone (copy of networks, targets, optimizer moments, duals, and its finiteness flag), as taken at
    # a train() call; two copies alternate, "bytes" counts both.
    snapshot_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(200):
            model._divergence_guard.snapshot.take(model._n_updates)
        snapshot_times.append((time.perf_counter() - start) / 200)

    # Its parts: the copy into the flat buffers, and the finiteness flag of the copy.
    slot = model._divergence_guard.snapshot._slots[0]
    tensors = model._divergence_guard.snapshot._collect()[0]
    part_times: dict[str, list[float]] = {"collect": [], "copy": [], "flag": []}
    parts = {
        "collect": model._divergence_guard.snapshot._collect,
        "copy": lambda: th._foreach_copy_(slot.views, tensors),
        "flag": slot.all_finite,
    }
    for _ in range(args.repeats):
        for name, part in parts.items():
            start = time.perf_counter()
            for _ in range(200):
                part()
            part_times[name].append((time.perf_counter() - start) / 200)

    result = {
        "what": "seconds per model.train(gradient_steps, batch_size) with check_finite on vs off, same process",
        "command": common.command_line(),
        "env": args.env,
        "snapshot_interval": SNAPSHOT_INTERVAL,
        "hyperparameters": {
            "batch_size": model.batch_size,
            "num_samples": model.num_samples,
            "net_arch": model.policy.net_arch,
            "n_critics": model.policy.n_critics,
        },
        "repeats": args.repeats,
        "cases": cases,
        "snapshot": {
            "bytes": model._divergence_guard.snapshot.nbytes(),
            **{k.replace("_ms", "_us"): 1e3 * v for k, v in summary(snapshot_times).items()},
            "parts_median_us": {name: 1e6 * statistics.median(times) for name, times in part_times.items()},
        },
        "machine": {
            **common.machine_info(),
            "load_average_before": load_before,
            "load_average_after": common.load_average()[0],
        },
        "meta": common.provenance(),
    }
    common.write_json(args.output, result)
    for case in cases:
        print(
            f"gradient_steps={case['gradient_steps']:>3}: on {case['check_finite_on']['median_ms']:.3f} ms, "
            f"off {case['check_finite_off']['median_ms']:.3f} ms per train() (median); "
            f"ratio {case['ratio_median']:.3f} (median), {case['ratio_min']:.3f} (min)"
        )
    print(f"snapshot: {result['snapshot']['bytes'] / 1e6:.2f} MB, {result['snapshot']['median_us']:.0f} us per take (median)")
    print(f"snapshot parts (median us): {result['snapshot']['parts_median_us']}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
