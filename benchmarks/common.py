"""Shared helpers of the benchmark scripts: machine description, records, the RL Zoo's ExperimentManager, the
evaluation callback, the pool of run commands, statistics, plots.

Each benchmark process runs torch on one thread (``torch.set_num_threads(1)``), and each run is one command line:
the local pool runs at most one per core at a time, a cluster's scheduler can run the same lines.
"""

import argparse
import contextlib
import csv
import enum
import fcntl
import importlib
import inspect
import io
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import matplotlib

matplotlib.use("Agg")
import numpy as np
import torch as th
import yaml
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv, sync_envs_normalization

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # sb3_wpo from the working tree when it is not installed
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
# WPO's train/* statistics recorded after every train() call (binned over 500 env steps) by the returns and ε runs.
WPO_TRAIN_KEYS = ("kl_mean", "kl_std", "alpha_mean", "alpha_std", "pi_std_min", "pi_std_max", "q_mean", "dq_da_norm")
# The return each benchmark counts as reached (success rates, steps to the threshold, the campaign's table): Pendulum-v1
# and LunarLanderContinuous-v3 solved; on the campaign's tasks about half the published anchor, rounded
# (benchmarks/campaign_report.py), and on humanoid-stand, whose anchor is the floor, 100: twenty times the floor,
# where SAC's seed 0 took off.
THRESHOLDS = {
    "Pendulum-v1": -200.0,
    "LunarLanderContinuous-v3": 200.0,
    "dm_control/humanoid-stand-v0": 100.0,
    "dm_control/cartpole-swingup-v0": 400.0,
    "dm_control/walker-walk-v0": 500.0,
    "dm_control/cheetah-run-v0": 300.0,
    "HalfCheetah-v5": 5000.0,
    "Hopper-v5": 1200.0,
    "Walker2d-v5": 2000.0,
}


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


def interleaved_order(names: list[str], repeats: int) -> Iterator[tuple[int, str]]:
    """(repeat, name): each name once per repeat, the order rotated by one each repeat, so that no variant of a timing
    always runs first or last."""
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            yield repeat, name


def timed_process(command: list[str], **kwargs: Any) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of a child process run to its end (``subprocess.run(command, check=True,
    capture_output=True, **kwargs)``)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, **kwargs)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    return {
        "processor": platform.processor(),
        "cpu": cpu_name(),
        # Machines of one CPU name differ: an AVX2 "AMD EPYC" here ran SAC at 3x the CPU time per step of an earlier one
        "cpu_capability": th.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "torch": th.__version__,
        "torch_threads": 1,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def same_machine(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two records' ``machine`` entries name the same CPU (name and vector capability; records from before the
    capability was recorded match only each other), so that their CPU times compare."""
    return all(a.get(key) == b.get(key) for key in ("cpu", "cpu_capability"))


def machine_label(machine: dict[str, Any]) -> str:
    """``AMD EPYC (AVX2)``: the CPU a record ran on, as ``same_machine`` tells machines apart."""
    capability = machine.get("cpu_capability")
    return f"{machine.get('cpu', '?')} ({capability})" if capability else str(machine.get("cpu", "?"))


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
    """Append one record as a line, under an exclusive lock: runs started by a scheduler may finish at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
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
    none: for WPO the entry the zoo trains it with (its family's, ``sb3_wpo.zoo.config_entry``), for the zoo's
    algorithms the entry of the same task at another version (rl-zoo3 2.9 tunes the MuJoCo tasks as -v4); with
    ``hyperparams_from`` naming it."""
    path = zoo_file(algo)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    with path.open() as file:
        entries = yaml.safe_load(file)
    if env_id not in entries and algo == "wpo":
        from sb3_wpo.zoo import config_entry

        key = config_entry(entries, env_id)
        if key is None:
            raise KeyError(f"{path} has no entry for {env_id}")
        return dict(entries[key], hyperparams_from=key)
    if env_id not in entries:
        # rl-zoo3 2.9 tunes the MuJoCo tasks as -v4; use the entry of the same task at another version if there is one
        same_task = sorted(key for key in entries if key.split("-v")[0] == env_id.split("-v")[0])
        if not same_task:
            raise KeyError(f"{path} has no entry for {env_id}")
        print(f"note: {path.name} has no {env_id} entry, using its {same_task[-1]} entry")
        return dict(entries[same_task[-1]], hyperparams_from=same_task[-1])
    return dict(entries[env_id])


# What model_settings leaves out: the objects a run is given, not settings of the algorithm
NOT_SETTINGS = {"self", "policy", "env", "policy_kwargs", "tensorboard_log", "verbose", "seed", "device", "_init_setup_model"}


def model_settings(model: Any) -> dict[str, Any]:
    """The settings a model was built with, defaults included: its constructor's arguments as the model holds them,
    and its policy's (``policy_kwargs``, as the policy resolved them). A record that holds them keeps its meaning
    when the algorithm's defaults change, which its zoo hyperparameters (what the entry set) do not."""
    names = [name for name in inspect.signature(type(model).__init__).parameters if name not in NOT_SETTINGS]
    settings = {name: getattr(model, name) for name in names if hasattr(model, name)}
    policy = model.policy._get_constructor_parameters()
    settings["policy_kwargs"] = {
        name: value for name, value in policy.items() if name not in ("observation_space", "action_space", "lr_schedule")
    }
    return json.loads(json.dumps(settings, default=setting_for_json))


def setting_for_json(value: Any) -> Any:
    """A class by its name, an enum (SB3's train_freq unit) by its value, anything else by its repr."""
    if isinstance(value, type):
        return value.__name__
    return value.value if isinstance(value, enum.Enum) else repr(value)


def hyperparams_for_json(hyperparams: dict[str, Any]) -> dict[str, Any]:
    return {
        key: (value if isinstance(value, (int, float, str, bool, type(None))) else repr(value))
        for key, value in hyperparams.items()
    }


def zoo_model(
    algo: str,
    env_id: str,
    seed: int,
    entry: dict[str, Any] | None = None,
    hyperparams: dict[str, Any] | None = None,
    steps: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """A model and its hyperparameters as the zoo builds them (:func:`zoo_experiment`'s ``setup_experiment``), for the
    timing benchmarks: from the zoo's entry of ``env_id``, or from ``entry`` (a temporary config holding it), with
    ``hyperparams`` replacing its values; the zoo's log folder is temporary and its printing kept off the output."""
    with tempfile.TemporaryDirectory(prefix="sb3-wpo-zoo-") as folder:
        config = None
        if entry is not None:
            config = str(Path(folder) / "config.yml")
            Path(config).write_text(yaml.safe_dump({env_id: entry}))
        with contextlib.redirect_stdout(io.StringIO()):
            experiment = zoo_experiment(algo, env_id, seed, steps, Path(folder) / "zoo", config, hyperparams)
            model, saved_hyperparams = experiment.setup_experiment()
    return model, dict(saved_hyperparams)


# ----------------------------------------------------------------------------------------------------------------
# The evaluation callback of every benchmark run
# ----------------------------------------------------------------------------------------------------------------
class EvalRecorder(BaseCallback):
    """EvalCallback-style: every ``eval_freq`` environment steps (counted from the run's start, across resumes),
    ``n_eval_episodes`` deterministic episodes on a separate env, its ``VecNormalize`` statistics synced from the
    training env as in the zoo's EvalCallback.

    Each point of ``curve`` has the timesteps, the train wall-clock and process CPU time so far (evaluations, and
    what runs inside :meth:`clock_paused`, excluded), the return's mean and std and the mean episode length; with
    ``curve_train_stats``, also the last train() call's ``train/*`` logger values (WPO: policy std, KL, Q, ∇a Q; SAC:
    entropy coefficient, losses), to tell why a run stalls. With ``train_keys``, WPO's ``train/*`` values of every
    train() call, averaged over bins of ``train_bin`` environment steps (``train_stats``) and over the run
    (:meth:`train_means`). A resumed run passes its curve and train time so far."""

    def __init__(
        self,
        eval_env: VecEnv,
        eval_freq: int,
        n_eval_episodes: int,
        train_keys: Iterable[str] = (),
        train_bin: int = 500,
        curve_train_stats: bool = False,
        curve: list[dict[str, Any]] | None = None,
        train_wall_s: float = 0.0,
        train_cpu_s: float = 0.0,
        name: str = "",
    ):
        super().__init__()
        self.eval_env = eval_env
        self.eval_freq = eval_freq
        self.n_eval_episodes = n_eval_episodes
        self.train_keys = list(train_keys)
        self.train_bin = train_bin
        self.curve_train_stats = curve_train_stats
        self.curve: list[dict[str, Any]] = curve if curve is not None else []
        self.train_wall_s, self.train_cpu_s = train_wall_s, train_cpu_s
        self.name = name  # printed with each evaluation when given
        self.train_stats: list[dict[str, float]] = []  # means over bins of ``train_bin`` environment steps
        self.train_totals: dict[str, float] = {}  # sums over all train() calls
        self.n_train_calls = 0
        self._bin: dict[str, list[float]] = {}
        self._last_updates = -1
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def _on_training_start(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def _tick(self) -> None:
        """Add the time since the last tick to the train time."""
        wall, cpu = time.perf_counter(), time.process_time()
        self.train_wall_s += wall - self._wall
        self.train_cpu_s += cpu - self._cpu
        self._wall, self._cpu = wall, cpu

    @contextlib.contextmanager
    def clock_paused(self) -> Iterator[None]:
        """Keep what runs inside (an evaluation, a checkpoint) off the train time."""
        self._tick()
        try:
            yield
        finally:
            self._wall, self._cpu = time.perf_counter(), time.process_time()

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
            self.flush_bin()

    def flush_bin(self) -> None:
        if self._bin:
            record: dict[str, float] = {"timesteps": self.num_timesteps, "n_updates": self._last_updates}
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
        with self.clock_paused():
            sync_envs_normalization(self.training_env, self.eval_env)
            returns, lengths = evaluate_policy(
                self.model, self.eval_env, self.n_eval_episodes, deterministic=True, return_episode_rewards=True
            )
            point: dict[str, Any] = {
                "timesteps": self.model.num_timesteps,
                "train_wall_s": round(self.train_wall_s, 3),
                "train_cpu_s": round(self.train_cpu_s, 3),
                "eval_mean": float(np.mean(returns)),
                "eval_std": float(np.std(returns)),
                "eval_ep_length": float(np.mean(lengths)),
            }
            if self.curve_train_stats:
                logged = self.model.logger.name_to_value
                point.update({key.removeprefix("train/"): float(v) for key, v in logged.items() if key.startswith("train/")})
            self.curve.append(point)
            if self.name:
                print(f"{self.name}: {point['timesteps']} steps, eval {point['eval_mean']:.1f}", flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Runs as command lines, and the local pool that runs them
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """One run as a command line (``argv``), the way CleanRL's benchmark utility hands its runs out: the local pool
    (:func:`run_commands`) is one way to run a list of them, a cluster's scheduler (one line per array task) another.
    The run writes its own record. ``log``: where the pool sends its output (None: the pool's own output)."""

    name: str
    argv: tuple[str, ...]
    log: Path | None = None

    def line(self) -> str:
        """The shell line, relative to the repository root (where the scheduler's job starts)."""
        argv = ["python" if self.argv[0] == sys.executable else self.argv[0], *self.argv[1:]]
        argv = [os.path.relpath(arg, ROOT) if arg.startswith(str(ROOT)) else arg for arg in argv]
        return shlex.join(argv)


def run_commands(
    pending: Callable[[], list[Command]],
    processes: int = 2,
    poll_s: float = 1.0,
    busy_elsewhere: Callable[[set[str]], int] = lambda running: 0,
) -> dict[str, int]:
    """Run commands ``processes`` at a time (at most one per core), each in its own process, until none is left.

    ``pending()`` is asked again at every poll, in the order to start them, so that a list read from files can
    change while runs go on (a run finished elsewhere drops out; a queue restarted later picks up where this one
    was); ``busy_elsewhere(running)``: processes outside this pool (it runs ``running``) that run the same list,
    counted among ``processes``. A
    command that ended is not started again by the same pool. Returns each started command's exit code."""
    processes = max(1, min(processes, os.cpu_count() or 1))
    started: dict[str, subprocess.Popen] = {}
    ended: dict[str, int] = {}
    while True:
        for name, process in list(started.items()):
            if process.poll() is not None:
                del started[name]
                ended[name] = process.returncode
                print(f"{name} ended with exit code {process.returncode}", flush=True)
        todo = [command for command in pending() if command.name not in started and command.name not in ended]
        elsewhere = busy_elsewhere(set(started))
        if not (todo or started or elsewhere):
            return ended
        while todo and len(started) + elsewhere < processes:
            command = todo.pop(0)
            with contextlib.ExitStack() as stack:
                output = None
                if command.log is not None:
                    command.log.parent.mkdir(parents=True, exist_ok=True)
                    output = stack.enter_context(command.log.open("a"))
                started[command.name] = subprocess.Popen(list(command.argv), stdout=output, stderr=subprocess.STDOUT)
            print(f"started {command.name} (pid {started[command.name].pid}): {command.line()}", flush=True)
        time.sleep(poll_s)


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


def first_crossing(curve: list[dict[str, Any]], threshold: float, key: str = "timesteps") -> float | None:
    """``key`` (environment steps, train wall-clock or CPU time) at the first evaluation reaching ``threshold``; None
    if none did."""
    return next((point[key] for point in curve if point["eval_mean"] >= threshold), None)
