"""Shared helpers of the benchmark scripts: machine description, hyperparameters, evaluation, run pool, plots.

Each benchmark process runs torch on one thread (``torch.set_num_threads(1)``) and at most two processes run
in parallel: the benchmark machine has two cores.
"""

import csv
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
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
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # sb3_wpo from the working tree when it is not installed
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
WPO_YML = Path(os.environ.get("SB3_WPO_HYPERPARAMS", ROOT / "hyperparams" / "wpo.yml"))  # env var: for smoke tests
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
# Hyperparameters (rl-zoo3 format)
# ----------------------------------------------------------------------------------------------------------------
def zoo_file(algo: str) -> Path:
    import rl_zoo3

    return Path(rl_zoo3.__file__).parent / "hyperparams" / f"{algo}.yml"


def raw_hyperparams(algo: str, env_id: str) -> dict[str, Any]:
    path = WPO_YML if algo == "wpo" else zoo_file(algo)
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


def preprocess_hyperparams(hyperparams: dict[str, Any], env: gym.Env) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model kwargs from a zoo entry, as rl_zoo3's ExperimentManager builds them (schedules, policy_kwargs strings,
    action noise). Returns (model kwargs, entries that are not model kwargs)."""
    from rl_zoo3.utils import linear_schedule

    hyperparams = dict(hyperparams)
    extra = {
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
        n_actions = env.action_space.shape[0]
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
# Training runs with periodic deterministic evaluation
# ----------------------------------------------------------------------------------------------------------------
class EvalRecorder(BaseCallback):
    """EvalCallback-style: every ``eval_freq`` steps, ``n_eval_episodes`` deterministic episodes on a separate env.

    Records the timesteps, the training wall-clock and process CPU time (both excluding evaluation) and the return.
    Optionally records WPO's train/* statistics after each train() call (read from ``logger.name_to_value``)."""

    def __init__(
        self, eval_env: gym.Env, eval_freq: int, n_eval_episodes: int, train_keys: Iterable[str] = (), train_bin: int = 500
    ):
        super().__init__()
        self.eval_env = eval_env
        self.eval_freq = eval_freq
        self.n_eval_episodes = n_eval_episodes
        self.train_keys = list(train_keys)
        self.train_bin = train_bin
        self.curve: list[dict[str, float]] = []
        self.train_stats: list[dict[str, float]] = []  # means over bins of ``train_bin`` environment steps
        self.train_totals: dict[str, float] = {}  # sums over all train() calls
        self.n_train_calls = 0
        self._bin: dict[str, list[float]] = {}
        self._eval_wall = 0.0
        self._eval_cpu = 0.0
        self._last_updates = -1

    def _on_training_start(self) -> None:
        self._start_wall = time.perf_counter()
        self._start_cpu = time.process_time()

    def _on_rollout_start(self) -> None:
        """Called right after each train(): read the train/* values it logged (before any dump clears them)."""
        if not self.train_keys:
            return
        values = self.model.logger.name_to_value
        n_updates = getattr(self.model, "_n_updates", 0)
        if n_updates == self._last_updates or f"train/{self.train_keys[0]}" not in values:
            return
        self._last_updates = n_updates
        self.n_train_calls += 1
        for key in self.train_keys:
            value = float(values.get(f"train/{key}", float("nan")))
            self._bin.setdefault(key, []).append(value)
            self.train_totals[key] = self.train_totals.get(key, 0.0) + value
        if self.num_timesteps // self.train_bin != (self.num_timesteps - 1) // self.train_bin:
            self._flush_bin()

    def _flush_bin(self) -> None:
        if self._bin:
            record = {"timesteps": self.num_timesteps, "n_updates": self._last_updates}
            record.update({key: float(np.mean(values)) for key, values in self._bin.items()})
            self.train_stats.append(record)
            self._bin = {}

    def train_means(self) -> dict[str, float]:
        return {key: total / max(self.n_train_calls, 1) for key, total in self.train_totals.items()}

    def _on_step(self) -> bool:
        if self.num_timesteps % self.eval_freq == 0:
            self.evaluate()
        return True

    def evaluate(self) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        returns, _ = evaluate_policy(
            self.model, self.eval_env, n_eval_episodes=self.n_eval_episodes, deterministic=True, return_episode_rewards=True
        )
        self.curve.append(
            {
                "timesteps": self.num_timesteps,
                "train_wall_s": round(wall - self._start_wall - self._eval_wall, 3),
                "train_cpu_s": round(cpu - self._start_cpu - self._eval_cpu, 3),
                "eval_mean": float(np.mean(returns)),
                "eval_std": float(np.std(returns)),
            }
        )
        self._eval_wall += time.perf_counter() - wall
        self._eval_cpu += time.process_time() - cpu


def train_and_evaluate(spec: dict[str, Any]) -> dict[str, Any]:
    """One training run. ``spec``: algo, env_id, seed, steps, hyperparams (zoo format), eval_freq, n_eval_episodes,
    overrides (model kwargs that replace the entry's), train_keys. Returns the run record (curve and stats)."""
    from stable_baselines3.common.env_util import make_vec_env

    th.set_num_threads(1)
    # the code this run imports: HEAD and whether sb3_wpo/ had uncommitted edits when the run started
    started = {"commit": git_commit(), "sb3_wpo_uncommitted_changes": sb3_wpo_dirty(), "load_average_start": load_average()}
    started["started_utc"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    algo, env_id, seed = spec["algo"], spec["env_id"], spec["seed"]
    env = make_vec_env(env_id, n_envs=1, seed=seed)
    eval_env = Monitor(gym.make(env_id))
    eval_env.reset(seed=seed + 10_000)
    kwargs, _ = preprocess_hyperparams(spec["hyperparams"], env)
    kwargs.update(spec.get("overrides", {}))
    policy = kwargs.pop("policy", "MlpPolicy")
    if "learning_starts" in kwargs:
        kwargs["learning_starts"] = min(kwargs["learning_starts"], spec["steps"])
    model = algo_class(algo)(policy, env, seed=seed, verbose=0, **kwargs)
    recorder = EvalRecorder(eval_env, spec["eval_freq"], spec["n_eval_episodes"], spec.get("train_keys", ()))
    recorder.train_bin = spec.get("train_bin", 500)
    start = time.perf_counter()
    error = None
    try:
        model.learn(total_timesteps=spec["steps"], callback=recorder)
    except Exception as exc:  # a diverged run is a result too
        error = f"{type(exc).__name__}: {exc}"[:500]
    recorder._flush_bin()
    record = {key: spec[key] for key in ("name", "algo", "env_id", "seed", "steps", "cell") if key in spec}
    record.update(
        {
            "hyperparams": hyperparams_for_json({**spec["hyperparams"], **spec.get("overrides", {})}),
            "total_wall_s": round(time.perf_counter() - start, 2),
            "curve": recorder.curve,
            "train_stats": recorder.train_stats,
            "train_means": recorder.train_means(),
            "final_return": recorder.curve[-1]["eval_mean"] if recorder.curve and error is None else float("nan"),
            "error": error,
            **started,
        }
    )
    env.close()
    eval_env.close()
    return record


def _init_worker() -> None:
    th.set_num_threads(1)


def run_pool(
    specs: list[dict[str, Any]], on_result: Callable[[dict[str, Any]], None], processes: int = 2, desc: str = "runs"
) -> None:
    """Run ``specs`` with ``train_and_evaluate`` in a pool of ``processes`` (≤ 2) and hand each result to
    ``on_result`` as soon as it finishes (tqdm progress bar over runs)."""
    from tqdm import tqdm

    if not specs:
        return
    processes = max(1, min(processes, 2, len(specs)))
    with mp.get_context("fork").Pool(processes, initializer=_init_worker, maxtasksperchild=1) as pool:
        for record in tqdm(pool.imap_unordered(train_and_evaluate, specs), total=len(specs), desc=desc, file=sys.stdout):
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
