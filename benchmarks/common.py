"""Shared helpers of the benchmark scripts: machine description, the RL Zoo's ExperimentManager, zoo entries, run
pool, statistics, plots.

Each benchmark process runs torch on one thread (``torch.set_num_threads(1)``) and at most two processes run
in parallel: the benchmark machine has two cores.
"""

import argparse
import csv
import importlib
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import gymnasium as gym
import matplotlib

matplotlib.use("Agg")
import numpy as np
import torch as th
import yaml
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.vec_env import VecEnv

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # sb3_wpo from the working tree when it is not installed
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
# WPO's train/* statistics recorded after every train() call (binned over 500 env steps) by the returns and ε runs.
WPO_TRAIN_KEYS = ("kl_mean", "kl_std", "alpha_mean", "alpha_std", "pi_std_min", "pi_std_max", "q_mean", "dq_da_norm")
SUCCESS_THRESHOLDS = {"Pendulum-v1": -200.0, "LunarLanderContinuous-v3": 200.0, "HalfCheetah-v5": 3000.0}


# ----------------------------------------------------------------------------------------------------------------
# Machine and provenance
# ----------------------------------------------------------------------------------------------------------------
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def sb3_wpo_dirty() -> bool:
    """Whether sb3_wpo/ differs from the commit (another engineer's edits in progress in the shared tree)."""
    try:
        return subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "sb3_wpo"], cwd=ROOT, check=False).returncode != 0
    except OSError:
        return False


def cpu_name() -> str:
    name = platform.processor()
    if name and name not in ("x86_64", "i386"):
        return name
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name or platform.machine()


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    return {
        "processor": platform.processor(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": th.__version__,
        "torch_threads": 1,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def command_line() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def provenance() -> dict[str, Any]:
    return {
        "command": command_line(),
        "commit": git_commit(),
        "sb3_wpo_uncommitted_changes": sb3_wpo_dirty(),
        "machine": machine_info(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def footer_text(meta: dict[str, Any]) -> str:
    m = meta["machine"]
    dirty = " (+ uncommitted sb3_wpo changes)" if meta.get("sb3_wpo_uncommitted_changes") else ""
    return (
        f"{meta['command']}  |  commit {meta['commit']}{dirty}\n"
        f"{m['cpu']} ({m['cpu_count']} cores), torch {m['torch']}, 1 thread  |  {meta['date_utc']} UTC"
    )


def save_figure(fig: Any, path: Path, meta: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    fig.text(0.5, 0.004, footer_text(meta), ha="center", va="bottom", fontsize=7, color="0.35", wrap=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    tmp.replace(path)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:
        file.write(json.dumps(record, default=float) + "\n")
        file.flush()
        os.fsync(file.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill
                continue
    return records


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not rows:
        return
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# ----------------------------------------------------------------------------------------------------------------
# The RL Zoo: its config files hold the entries, its ExperimentManager builds the runs
# ----------------------------------------------------------------------------------------------------------------
def zoo_file(algo: str) -> Path:
    """The config the zoo reads for ``--algo ALGO`` without ``--conf-file``: rl_zoo3's ``hyperparams/ALGO.yml``, and
    for WPO ``hyperparams/wpo.yml`` (``sb3_wpo.zoo.DEFAULT_CONFIG``)."""
    if algo == "wpo":
        from sb3_wpo.zoo import DEFAULT_CONFIG

        return DEFAULT_CONFIG
    import rl_zoo3

    return Path(rl_zoo3.__file__).parent / "hyperparams" / f"{algo}.yml"


def zoo_experiment(
    algo: str,
    env_id: str,
    seed: int,
    steps: int,
    log_folder: Path,
    config: str | None = None,
    hyperparams: dict[str, Any] | None = None,
    trained_agent: str = "",
) -> Any:
    """The zoo's ``ExperimentManager`` as ``python -m rl_zoo3.train --algo ALGO --env ENV_ID --seed SEED -n STEPS
    [--conf-file CONFIG] [-params KEY:VALUE ...] [-i TRAINED_AGENT]`` builds it (``--gym-packages shimmy`` for
    dm_control), with the zoo's own evaluation off (``--eval-freq -1``): the benchmarks evaluate in their callbacks.
    ``config`` None: the zoo's default config of the algorithm (:func:`zoo_file`); ``hyperparams``: values that
    replace the entry's, as ``-params`` does (Python values rather than strings)."""
    if env_id.startswith("dm_control/"):
        importlib.import_module("shimmy")
    import sb3_wpo.zoo
    from rl_zoo3.exp_manager import ExperimentManager

    sb3_wpo.zoo.register()
    args = argparse.Namespace(
        algo=algo,
        env=env_id,
        seed=seed,
        n_timesteps=steps,
        trained_agent=trained_agent,
        conf_file=config,
        hyperparams=hyperparams,
    )
    return ExperimentManager(
        args,
        algo,
        env_id,
        str(log_folder),
        n_timesteps=steps,
        eval_freq=-1,
        seed=seed,
        hyperparams=hyperparams,
        trained_agent=trained_agent,
        verbose=0,
        config=config,
    )


def raw_hyperparams(algo: str, env_id: str) -> dict[str, Any]:
    """The entry of ``env_id`` in the zoo's config of ``algo`` (:func:`zoo_file`), unprocessed. Where the file has
    none, the entry of the same task at another version (rl-zoo3 2.9 tunes the MuJoCo tasks as -v4), with
    ``hyperparams_from`` naming it."""
    path = zoo_file(algo)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    with path.open() as file:
        entries = yaml.safe_load(file)
    if env_id not in entries:
        # rl-zoo3 2.9 tunes the MuJoCo tasks as -v4; use the entry of the same task at another version if there is one
        same_task = sorted(key for key in entries if key.split("-v")[0] == env_id.split("-v")[0])
        if not same_task:
            raise KeyError(f"{path} has no entry for {env_id}")
        print(f"note: {path.name} has no {env_id} entry, using its {same_task[-1]} entry")
        return dict(entries[same_task[-1]], hyperparams_from=same_task[-1])
    return dict(entries[env_id])


def preprocess_hyperparams(hyperparams: dict[str, Any], env: gym.Env | VecEnv) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model kwargs from a zoo entry, as rl_zoo3's ExperimentManager builds them (schedules, policy_kwargs strings,
    action noise). Returns (model kwargs, entries that are not model kwargs). Only the timed models of speed.py
    (headline) and update_cost.py (built without the zoo) use it; training runs are built by the zoo."""
    from rl_zoo3.utils import linear_schedule

    hyperparams = dict(hyperparams)
    extra: dict[str, Any] = {
        key: hyperparams.pop(key)
        for key in (
            "n_timesteps",
            "n_envs",
            "normalize",
            "env_wrapper",
            "callback",
            "frame_stack",
            "hyperparams_from",
            "vec_env_wrapper",
            "normalize_kwargs",
        )
        if key in hyperparams
    }
    for key in ("learning_rate", "clip_range", "clip_range_vf"):
        value = hyperparams.get(key)
        if isinstance(value, str) and value.startswith("lin_"):
            hyperparams[key] = linear_schedule(float(value.split("_")[1]))
    if isinstance(hyperparams.get("policy_kwargs"), str):
        hyperparams["policy_kwargs"] = eval(hyperparams["policy_kwargs"], {"nn": th.nn, "th": th, "torch": th})
    if isinstance(hyperparams.get("train_freq"), list):
        hyperparams["train_freq"] = tuple(hyperparams["train_freq"])
    noise_type = hyperparams.pop("noise_type", None)
    noise_std = hyperparams.pop("noise_std", None)
    if noise_type is not None:
        n_actions = get_action_dim(env.action_space)
        mean, sigma = np.zeros(n_actions), float(noise_std) * np.ones(n_actions)
        if "normal" in noise_type:
            hyperparams["action_noise"] = NormalActionNoise(mean=mean, sigma=sigma)
        elif "ornstein-uhlenbeck" in noise_type:
            hyperparams["action_noise"] = OrnsteinUhlenbeckActionNoise(mean=mean, sigma=sigma)
        else:
            raise RuntimeError(f"Unknown noise type {noise_type}")
    if extra.get("normalize"):
        raise NotImplementedError("VecNormalize entries are not supported by these benchmarks")
    return hyperparams, extra


def hyperparams_for_json(hyperparams: dict[str, Any]) -> dict[str, Any]:
    return {
        key: (value if isinstance(value, (int, float, str, bool, type(None))) else repr(value))
        for key, value in hyperparams.items()
    }


def algo_class(algo: str) -> type:
    if algo == "wpo":
        from sb3_wpo import WPO

        return WPO
    if algo == "tqc":
        from sb3_contrib import TQC

        return TQC
    import stable_baselines3 as sb3

    return getattr(sb3, algo.upper())


# ----------------------------------------------------------------------------------------------------------------
# Run pool
# ----------------------------------------------------------------------------------------------------------------
def _init_worker() -> None:
    th.set_num_threads(1)


def run_pool(
    worker: Callable[[dict[str, Any]], dict[str, Any]],
    specs: list[dict[str, Any]],
    on_result: Callable[[dict[str, Any]], None],
    processes: int = 2,
    desc: str = "runs",
) -> None:
    """Run ``worker`` on each of ``specs`` in a pool of ``processes`` (≤ 2) and hand each result to ``on_result`` as
    soon as it finishes (tqdm progress bar over runs)."""
    from tqdm import tqdm

    if not specs:
        return
    processes = max(1, min(processes, 2, len(specs)))
    with mp.get_context("fork").Pool(processes, initializer=_init_worker, maxtasksperchild=1) as pool:
        for record in tqdm(pool.imap_unordered(worker, specs), total=len(specs), desc=desc, file=sys.stdout):
            on_result(record)


# ----------------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------------
def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over the first axis (seeds)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), float(values.mean())
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


def first_crossing(curve: list[dict[str, float]], threshold: float, key: str) -> float | None:
    for point in curve:
        if point["eval_mean"] >= threshold:
            return point[key]
    return None
