"""WPO vs SB3 SAC beyond Pendulum: the paper's DeepMind Control tasks and MuJoCo v5, at equal budget.

Each run is built by the RL Zoo's own ``ExperimentManager`` (the code behind ``python -m rl_zoo3.train``): WPO's
config is ``hyperparams/wpo.yml``, SAC's ``benchmarks/hyperparams/sac.yml`` (rl-zoo3's MuJoCo SAC settings). The
policy is evaluated deterministically every ``--eval-freq`` steps on the zoo's evaluation environment
(``evaluate_policy``, as the zoo's ``EvalCallback``). Runs are resumable: every ``--save-freq`` steps the model,
the replay buffer and the curve so far are checkpointed under ``$SB3_WPO_RUNS`` (default
``~/.cache/sb3-wpo-runs/campaign``), and a run started again continues from its last checkpoint through the zoo's
own ``--trained-agent`` loading. A finished run appends its record to ``results/campaign/runs.jsonl``.

    python benchmarks/campaign.py run --algo wpo --env dm_control/humanoid-stand-v0 --seed 0
    python benchmarks/campaign.py queue --processes 2    # the planned runs in order, skipping finished ones
    python benchmarks/campaign.py status                 # finished, in-progress (checkpointed) and pending runs
    python benchmarks/campaign.py snapshot               # curves of unfinished runs so far -> in_progress.json
    python benchmarks/campaign.py diagnose               # unfinished WPO runs' policy and critic -> diagnostics.json
    python benchmarks/campaign.py noise                  # finished runs' exploration noise -> action_noise.json
    python benchmarks/campaign.py report                 # tables (finished runs), figures (all; overview.png: every task)
"""

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy

OUT = Path(os.environ.get("SB3_WPO_CAMPAIGN_OUT", common.RESULTS / "campaign"))  # env var: for smoke tests
RUNS = Path(os.environ.get("SB3_WPO_RUNS", "~/.cache/sb3-wpo-runs")).expanduser() / "campaign"
CONFIGS = {"wpo": None, "sac": str(common.ROOT / "benchmarks" / "hyperparams" / "sac.yml")}  # None: the zoo's default
# What a run's ``algo`` label runs: the zoo's algorithm and values replacing its config entry's (as ``-params`` does).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "wpo": ("wpo", {}),
    "sac": ("sac", {}),
    "wpo-utd1": ("wpo", {"train_freq": 1}),  # one update per step, as SAC: WPO and SAC at equal updates
    # The reference's MuJoCo entry with an initial std of 0.2 instead of 0.5: its fixed std penalty keeps the std
    # near the initial one, and at 0.5 WPO explores with 1.4-3.3x SAC's noise (``action_noise``)
    "wpo-std0.2": (
        "wpo",
        {"policy_kwargs": "dict(net_arch=[256, 256, 256], layer_norm=True, activation_fn=nn.ELU, init_std=0.2)"},
    ),
}
# The tuning screen (issue 26; benchmarks/notes/tuning.md has the plan and the rule), one factor at a time from the
# probe ``wpo-s4u1``: 4 samples, one update per step, V(s') = the mean over the samples (the reference's critic
# target); ``-mlp``: SAC's networks (256 x 2 ReLU, no LayerNorm); ``-ln2``: the entry's LayerNorm ELU networks with
# two hidden layers instead of three; ``s4u2``: one update every 2 steps.
TUNING_BASE = {"num_samples": 4, "train_freq": 1, "target_aggregation": "mean"}
VARIANTS.update(
    {
        "wpo-s4u1": ("wpo", TUNING_BASE),
        "wpo-s4u1-mlp": ("wpo", {**TUNING_BASE, "policy_kwargs": "dict(net_arch=[256, 256])"}),
        "wpo-s4u2-mlp": ("wpo", {**TUNING_BASE, "train_freq": 2, "policy_kwargs": "dict(net_arch=[256, 256])"}),
        "wpo-s4u1-ln2": (
            "wpo",
            {**TUNING_BASE, "policy_kwargs": "dict(net_arch=[256, 256], layer_norm=True, activation_fn=nn.ELU)"},
        ),
    }
)
COLORS = {
    "wpo": "tab:red",
    "sac": "tab:blue",
    "wpo-utd1": "tab:orange",
    "wpo-std0.2": "tab:purple",
    "wpo-s4u1": "tab:green",
    "wpo-s4u1-mlp": "tab:olive",
    "wpo-s4u2-mlp": "tab:cyan",
    "wpo-s4u1-ln2": "tab:brown",
}

# The order puts humanoid-stand (the paper's claim) first. Round one runs WPO and SAC seed 0 on every task, so
# that each task soon says whether WPO is ahead, level or behind (and a task where WPO fails on DMC shows early); round
# two the further seeds (WPO 1-2, SAC 1), task by task, the smallest budget first: a run that ends inside a session is
# not lost when the next session's machine comes without the checkpoints (as it did once); then the probes. Seeds: WPO
# 0-2, SAC 0-1.
TASKS = [
    ("dm_control/humanoid-stand-v0", 500_000),
    ("dm_control/cartpole-swingup-v0", 200_000),
    ("dm_control/walker-walk-v0", 300_000),
    ("dm_control/cheetah-run-v0", 300_000),
    ("HalfCheetah-v5", 300_000),
    ("Hopper-v5", 300_000),
    ("Walker2d-v5", 300_000),
]
SEEDS = {"wpo": (0, 1, 2), "sac": (0, 1)}
# Runs beyond the plan. On HalfCheetah-v5, where round one's WPO trails SAC from 30k steps on, two readings
# of the gap, each over the 150k steps where the curves part: the update rate (WPO at one update per step, SAC's
# rate, ≈ 2 core-hours) and the exploration noise (an initial std of 0.2, ≈ 0.7). On humanoid-stand, one update per
# step: the reference's 0.25 give WPO 122.5k updates by 500k steps, fewer than SAC needed to take off (≈ 150k);
# 300k steps give it 290k.
PROBES = [
    ("wpo-utd1", "HalfCheetah-v5", 0, 150_000),
    ("wpo-std0.2", "HalfCheetah-v5", 0, 150_000),
    ("wpo-utd1", "dm_control/humanoid-stand-v0", 0, 300_000),
]

# Published anchors (not run here), drawn beside the curves. TD-MPC2's SAC (results/sac/*.csv of
# nicklashansen/tdmpc2, 3 seeds, mean at 500k steps); rl-baselines3-zoo benchmark.md SAC (1M steps, v3 envs).
ANCHORS = {
    "dm_control/humanoid-stand-v0": ("TD-MPC2's SAC at 500k", 5.0),
    "dm_control/cartpole-swingup-v0": ("TD-MPC2's SAC at 500k", 835.0),
    "dm_control/walker-walk-v0": ("TD-MPC2's SAC at 500k", 953.0),
    "dm_control/cheetah-run-v0": ("TD-MPC2's SAC at 500k", 595.0),
    "HalfCheetah-v5": ("rl-zoo SAC at 1M (v3)", 9535.0),
    "Hopper-v5": ("rl-zoo SAC at 1M (v3)", 2326.0),
    "Walker2d-v5": ("rl-zoo SAC at 1M (v3)", 3863.0),
}
# "Steps to a threshold" in the table: the first evaluation at or above it. About half the anchor, rounded; on
# humanoid-stand, whose anchor is the floor, 100: twenty times the floor, where SAC's seed 0 took off.
THRESHOLDS = {
    "dm_control/humanoid-stand-v0": 100.0,
    "dm_control/cartpole-swingup-v0": 400.0,
    "dm_control/walker-walk-v0": 500.0,
    "dm_control/cheetah-run-v0": 300.0,
    "HalfCheetah-v5": 5000.0,
    "Hopper-v5": 1200.0,
    "Walker2d-v5": 2000.0,
}
# A verdict needs every WPO seed beyond every SAC seed by this share of the largest |return| of the task's seeds.
VERDICT_MARGIN = 0.05


def run_name(algo: str, env_id: str, seed: int, steps: int) -> str:
    return f"{algo}_{env_id.replace('/', '-')}_s{seed}_{steps}"


def planned_runs() -> list[tuple[str, str, int, int]]:
    """Round one (seed 0 of each algorithm on every task), round two (the further seeds) task by task from the smallest
    budget up, then the probes."""
    first = [(algo, env_id, seeds[0], steps) for env_id, steps in TASKS for algo, seeds in SEEDS.items()]
    further = []
    for env_id, steps in sorted(TASKS, key=lambda task: task[1]):
        for index in range(1, max(len(seeds) for seeds in SEEDS.values())):
            further += [(algo, env_id, seeds[index], steps) for algo, seeds in SEEDS.items() if index < len(seeds)]
    return first + further + PROBES


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints: <run dir>/checkpoint/{model.zip, replay_buffer.pkl, state.json}, replaced as a whole
# ----------------------------------------------------------------------------------------------------------------
def latest_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint folder, if any: ``checkpoint``, or ``checkpoint.old`` when a kill landed between
    the two renames that replace it."""
    for name in ("checkpoint", "checkpoint.old"):
        folder = run_dir / name
        if (folder / "state.json").is_file():
            return folder
    return None


def hold_run_lock(run_dir: Path) -> Any:
    """Lock ``run_dir`` for this process's lifetime (the returned file must stay open), so that no second process
    runs the same run; exits when another process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = (run_dir / "lock").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(f"{run_dir.name} is running in another process (it holds {run_dir / 'lock'})")
    return lock


def running_elsewhere(run_dir: Path) -> bool:
    """Whether a process holds the run's lock."""
    if not (run_dir / "lock").exists():
        return False
    with (run_dir / "lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
    return False


def write_checkpoint(model: Any, run_dir: Path, state: dict[str, Any]) -> None:
    new, current, old = run_dir / "checkpoint.new", run_dir / "checkpoint", run_dir / "checkpoint.old"
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    model.save(new / "model.zip")
    model.save_replay_buffer(new / "replay_buffer.pkl")
    (new / "state.json").write_text(json.dumps(state))  # written last: its presence marks a complete folder
    for file in new.iterdir():
        with file.open("rb") as handle:
            os.fsync(handle.fileno())
    if current.exists():
        shutil.rmtree(old, ignore_errors=True)
        current.rename(old)
    new.rename(current)
    shutil.rmtree(old, ignore_errors=True)


class CampaignCallback(BaseCallback):
    """Deterministic evaluation every ``eval_freq`` and a checkpoint every ``save_freq`` environment steps (counted
    from the start of the run, across resumes; a checkpoint waits for the end of the rollout it falls in); train
    wall-clock and CPU time exclude evaluation and checkpoints."""

    def __init__(self, eval_env: Any, eval_freq: int, n_eval_episodes: int, save_freq: int, run_dir: Path, state: dict):
        super().__init__()
        self.eval_env, self.eval_freq, self.n_eval_episodes = eval_env, eval_freq, n_eval_episodes
        self.save_freq, self.run_dir, self.state = save_freq, run_dir, state

    def _on_training_start(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        self.next_save = (self.num_timesteps // self.save_freq + 1) * self.save_freq

    def _train_clock(self) -> None:
        """Add the time since the last call to the run's train time."""
        wall, cpu = time.perf_counter(), time.process_time()
        self.state["train_wall_s"] += wall - self._wall
        self.state["train_cpu_s"] += cpu - self._cpu
        self._wall, self._cpu = wall, cpu

    def _restart_clock(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def evaluate(self) -> None:
        self._train_clock()
        returns, lengths = evaluate_policy(
            self.model, self.eval_env, n_eval_episodes=self.n_eval_episodes, deterministic=True, return_episode_rewards=True
        )
        point = {
            "timesteps": self.num_timesteps,
            "train_wall_s": round(self.state["train_wall_s"], 2),
            "train_cpu_s": round(self.state["train_cpu_s"], 2),
            "eval_mean": float(np.mean(returns)),
            "eval_std": float(np.std(returns)),
            "eval_ep_length": float(np.mean(lengths)),
        }
        # The statistics of the last train() call (WPO: policy std, KL, Q, ∇a Q; SAC: entropy coefficient, losses),
        # to tell why a run stalls
        logged = self.model.logger.name_to_value
        point.update({key.removeprefix("train/"): float(v) for key, v in logged.items() if key.startswith("train/")})
        self.state["curve"].append(point)
        print(f"{self.run_dir.name}: {self.num_timesteps} steps, eval {point['eval_mean']:.1f}", flush=True)
        self._restart_clock()

    def checkpoint(self) -> None:
        self._train_clock()
        self.state["timesteps"] = self.num_timesteps
        write_checkpoint(self.model, self.run_dir, self.state)
        self._restart_clock()

    def _on_step(self) -> bool:
        if self.num_timesteps % self.eval_freq == 0:
            self.evaluate()
        return True

    def _on_rollout_start(self) -> None:
        """Checkpoint between rollouts: the last transition is stored and the updates it triggered are done
        (``_on_step`` runs before SB3 stores the step's transition)."""
        if self.num_timesteps >= self.next_save:
            self.checkpoint()
            self.next_save += self.save_freq


def make_experiment(algo: str, env_id: str, seed: int, steps: int, log_folder: Path, trained_agent: str = "") -> Any:
    """The zoo's ExperimentManager as ``rl_zoo3.train`` builds it, with the campaign's config of ``algo``."""
    zoo_algo, overrides = VARIANTS[algo]
    config, hyperparams = CONFIGS[zoo_algo], overrides or None
    return common.zoo_experiment(zoo_algo, env_id, seed, steps, log_folder, config, hyperparams, trained_agent)


def mark_episode_cut(model: Any) -> None:
    """A resumed run starts a new episode: mark the last stored transition as a truncation, so that n-step returns
    do not run from the interrupted episode into the next one."""
    buffer = model.replay_buffer
    last = (buffer.pos - 1) % buffer.buffer_size
    if buffer.full or buffer.pos > 0:
        buffer.dones[last] = 1.0
        if hasattr(buffer, "timeouts"):
            buffer.timeouts[last] = 1.0


def run(algo: str, env_id: str, seed: int, steps: int, eval_freq: int, n_eval_episodes: int, save_freq: int) -> None:
    import torch as th

    th.set_num_threads(1)
    name = run_name(algo, env_id, seed, steps)
    run_dir = RUNS / name
    _lock = hold_run_lock(run_dir)  # held until run() returns
    checkpoint = latest_checkpoint(run_dir)
    segment = {"commit": common.git_commit(), "sb3_wpo_uncommitted_changes": common.sb3_wpo_dirty()}
    segment.update(started_utc=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), load_average=common.load_average())
    if checkpoint is None:
        state: dict[str, Any] = {"timesteps": 0, "train_wall_s": 0.0, "train_cpu_s": 0.0, "curve": [], "segments": []}
        trained_agent = ""
    else:
        state = json.loads((checkpoint / "state.json").read_text())
        # The zoo loads <folder>/replay_buffer.pkl beside the agent it continues from.
        trained_agent = str(checkpoint / "model.zip")
        print(f"{name}: resuming from {checkpoint} at {state['timesteps']} steps", flush=True)
    segment["from_timesteps"] = state["timesteps"]
    state["segments"].append(segment)

    experiment = make_experiment(algo, env_id, seed, steps, run_dir / "zoo", trained_agent)
    model, saved_hyperparams = experiment.setup_experiment()
    if checkpoint is not None:
        model.num_timesteps = state["timesteps"]
        mark_episode_cut(model)
    eval_env = experiment.create_envs(1, eval_env=True, no_log=True)
    callback = CampaignCallback(eval_env, eval_freq, n_eval_episodes, save_freq, run_dir, state)
    start = time.perf_counter()
    model.learn(steps - state["timesteps"], callback=callback, reset_num_timesteps=checkpoint is None)
    if not state["curve"] or state["curve"][-1]["timesteps"] != model.num_timesteps:
        callback.evaluate()
    segment["wall_s"] = round(time.perf_counter() - start, 1)
    callback.checkpoint()  # the final model stays loadable; its buffer is dropped below
    record = {
        "name": name,
        "algo": algo,
        "env_id": env_id,
        "seed": seed,
        "steps": steps,
        "hyperparams": common.hyperparams_for_json(dict(saved_hyperparams)),
        "eval_freq": eval_freq,
        "n_eval_episodes": n_eval_episodes,
        "curve": state["curve"],
        "final_return": state["curve"][-1]["eval_mean"],
        "train_wall_s": round(state["train_wall_s"], 1),
        "train_cpu_s": round(state["train_cpu_s"], 1),
        "segments": state["segments"],
        "commit": state["segments"][0]["commit"],
        "machine": common.machine_info(),
    }
    common.append_jsonl(OUT / "runs.jsonl", record)
    (run_dir / "checkpoint" / "replay_buffer.pkl").unlink(missing_ok=True)
    print(f"{name}: done, final eval {record['final_return']:.1f}", flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Queue, status, report
# ----------------------------------------------------------------------------------------------------------------
def finished() -> set[str]:
    return {record["name"] for record in common.read_jsonl(OUT / "runs.jsonl")}


def progress(name: str) -> int:
    checkpoint = latest_checkpoint(RUNS / name)
    return json.loads((checkpoint / "state.json").read_text())["timesteps"] if checkpoint else 0


def queue(args: argparse.Namespace) -> None:
    """The planned runs not yet finished, in order (resumable ones first), ``--processes`` at a time counting runs
    that other processes hold, each in its own process (one torch thread) logging to ``<run dir>/log.txt``. The
    state is read again every ``--poll-s`` seconds, so a queue can be restarted (or the plan changed) while runs go
    on; a run that fails is not started again by the same queue. Runs named in ``--first`` start before any other
    (a probe whose answer is wanted before the plan reaches it); runs named in ``--defer`` start only when no other
    run is left (a probe with a checkpoint would otherwise go first)."""
    started: dict[str, subprocess.Popen] = {}
    failed: set[str] = set()
    done = finished()
    print(f"{sum(run_name(*spec) not in done for spec in planned_runs())} runs to do, {len(done)} finished", flush=True)
    while True:
        for name, process in list(started.items()):
            if process.poll() is not None:
                del started[name]
                print(f"{name} ended with exit code {process.returncode}", flush=True)
                if process.returncode != 0:
                    failed.add(name)
        done = finished()
        todo = [spec for spec in planned_runs() if run_name(*spec) not in done | failed | set(started)]
        elsewhere = [spec for spec in todo if running_elsewhere(RUNS / run_name(*spec))]
        todo = [spec for spec in todo if spec not in elsewhere]
        if not (todo or started or elsewhere):
            break
        # stable: runs named first, then resumable runs, then plan order; deferred runs last
        names = {spec: run_name(*spec) for spec in todo}
        todo.sort(key=lambda spec: (names[spec] not in args.first, names[spec] in args.defer, progress(names[spec]) == 0))
        while todo and len(started) + len(elsewhere) < min(args.processes, 2):
            algo, env_id, seed, steps = todo.pop(0)
            name = run_name(algo, env_id, seed, steps)
            (RUNS / name).mkdir(parents=True, exist_ok=True)
            command = [sys.executable, __file__, "run", "--algo", algo, "--env", env_id, "--seed", str(seed)]
            command += ["--steps", str(steps), "--eval-freq", str(args.eval_freq), "--save-freq", str(args.save_freq)]
            log = (RUNS / name / "log.txt").open("a")
            started[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            print(f"started {name} (pid {started[name].pid})", flush=True)
        time.sleep(args.poll_s)


def status() -> None:
    done = finished()
    for spec in planned_runs():
        name = run_name(*spec)
        if name in done:
            state = "finished"
        elif latest_checkpoint(RUNS / name) is None:
            state = "no checkpoint"
        else:
            state = f"{progress(name):>7,} / {spec[3]:,} steps (checkpointed)"
        print(f"{name:55s} {state}{', running' if running_elsewhere(RUNS / name) else ''}")


def snapshot() -> None:
    """The curves so far of the runs that have a checkpoint but no record yet, for the report. An unfinished run
    whose checkpoint is gone (a session's machine came back without them) keeps its earlier snapshot, marked
    ``lost``: the notes cite those curves, and the run starts again from 0."""
    path = OUT / "in_progress.json"
    earlier = {run["name"]: run for run in json.loads(path.read_text())["runs"]} if path.exists() else {}
    done = finished()
    partial = []
    for algo, env_id, seed, steps in planned_runs():
        name = run_name(algo, env_id, seed, steps)
        checkpoint = latest_checkpoint(RUNS / name)
        if name in done:
            continue
        if checkpoint is not None:
            state = json.loads((checkpoint / "state.json").read_text())
            partial.append(dict(name=name, algo=algo, env_id=env_id, seed=seed, steps=steps, **state))
        elif name in earlier:
            partial.append({**earlier[name], "lost": True})
    common.write_json(path, {"runs": partial, "meta": common.provenance()})
    lost = sum(run.get("lost", False) for run in partial)
    print(f"{len(partial) - lost} runs in progress and {lost} lost runs written to {path}")


def mean_push(mean: Any, q_grads: Any) -> dict[str, float]:
    """Where the policy loss moves each policy mean, from ∇a Q at its N samples (mean [B, D], q_grads [N, B, D]):
    the variance-rescaled loss's step on μ is Σ_n ∇a Q, outwards when its sign is that of μ. Shares over all the
    means, and over those beyond the bounds (where the samples that reach the critic clipped add nothing)."""
    step = q_grads.sum(dim=0)
    outward, still = (step * mean > 0).float(), (step == 0).float()
    beyond = mean.abs() > 1.0
    return {
        "pi_means_pushed_outward": float(outward.mean()),
        "pi_means_beyond_bounds_pushed_outward": float(outward[beyond].mean()) if beyond.any() else float("nan"),
        "pi_means_beyond_bounds_without_gradient": float(still[beyond].mean()) if beyond.any() else float("nan"),
    }


def diagnose(batch_size: int = 1024) -> None:
    """The policy and critic of each unfinished WPO run at its last checkpoint, on ``batch_size`` replay states (seeded):
    the policy std, how far the means sit towards the action bounds, how many sampled actions the critic sees clipped
    (their ∇a Q is 0), the size of ∇a Q, which way the policy loss moves the means (``mean_push``) and the rewards in the
    buffer, to tell why a run stalls. Added to
    ``diagnostics.json``, which keeps the diagnoses of earlier checkpoints."""
    import pickle

    import torch as th

    from sb3_wpo import WPO

    th.set_num_threads(1)
    path, meta = OUT / "diagnostics.json", common.provenance()
    # Earlier diagnoses are kept (the notes cite them): one entry per run and checkpoint, each with its provenance
    earlier = json.loads(path.read_text()) if path.exists() else {"runs": []}
    diagnostics = [{"meta": earlier.get("meta"), "batch_size": earlier.get("batch_size"), **e} for e in earlier["runs"]]
    done = finished()
    for algo, env_id, seed, steps in planned_runs():
        name = run_name(algo, env_id, seed, steps)
        checkpoint = latest_checkpoint(RUNS / name)
        if VARIANTS[algo][0] != "wpo" or name in done or checkpoint is None:
            continue
        model = WPO.load(checkpoint / "model.zip", device="cpu")
        with (checkpoint / "replay_buffer.pkl").open("rb") as file:
            buffer = pickle.load(file)
        np.random.seed(0)
        th.manual_seed(0)
        data = buffer.sample(batch_size)
        with th.no_grad():
            mean, std = model.actor.distribution_params(data.observations)
        actions = model._sample_actions(mean, std)
        q_values, q_grads = model._q_and_action_gradients(data.observations, actions)  # as the update computes them
        rewards = buffer.rewards[: buffer.size()]
        entry = {
            "name": name,
            "timesteps": model.num_timesteps,
            "n_updates": model._n_updates,
            "pi_mean_abs": float(mean.abs().mean()),
            "pi_means_outside_bounds": float((mean.abs() > 1.0).float().mean()),
            "pi_std_quantiles_5_50_95": [float(q) for q in th.quantile(std.flatten(), th.tensor([0.05, 0.5, 0.95]))],
            "sampled_actions_clipped": float((actions.abs() > 1.0).float().mean()),
            "q_mean": float(q_values.mean()),
            "q_std": float(q_values.std()),
            "dq_da_norm_mean": float(q_grads.norm(dim=-1).mean()),
            **mean_push(mean, q_grads),
            "buffer_reward_mean": float(rewards.mean()),
            "buffer_reward_max": float(rewards.max()),
            "alpha_mean": float(th.nn.functional.softplus(model.log_alpha_mean).mean()),
            "alpha_std": float(th.nn.functional.softplus(model.log_alpha_std).mean()),
            "batch_size": batch_size,
            "meta": meta,
        }
        diagnostics = [d for d in diagnostics if (d["name"], d["timesteps"]) != (name, entry["timesteps"])] + [entry]
        print(json.dumps({key: value for key, value in entry.items() if key != "meta"}))
    common.write_json(path, {"runs": diagnostics, "meta": meta})
    print(f"{len(diagnostics)} diagnoses in {path}")


def action_noise(n_states: int = 1000, n_samples: int = 20) -> None:
    """How much each finished run's final policy still explores: on the states of its deterministic policy's own
    trajectory (``n_states`` steps of the evaluation env), the RMS distance of ``n_samples`` stochastic actions, as
    the run executes them (SAC's squashed, WPO's clipped), from the deterministic action, in SB3's normalized action
    units [-1, 1], and the share of them at a bound (|a| ≥ 0.99: SAC's tanh never reaches 1). WPO's std is held
    near its initial 0.5 by the reference's fixed std penalty (α_std = 1e4); SAC tunes its entropy.
    -> ``action_noise.json``"""
    import tempfile

    import torch as th

    th.set_num_threads(1)
    path, meta, entries = OUT / "action_noise.json", common.provenance(), []
    for record in common.read_jsonl(OUT / "runs.jsonl"):
        checkpoint = latest_checkpoint(RUNS / record["name"])
        if checkpoint is None or json.loads((checkpoint / "state.json").read_text())["timesteps"] != record["steps"]:
            continue  # this machine no longer has the final model
        run = (record["algo"], record["env_id"], record["seed"], record["steps"])
        with tempfile.TemporaryDirectory() as log_folder:
            # Loaded as a resumed run loads it, with the run's own evaluation env
            experiment = make_experiment(*run, Path(log_folder), trained_agent=str(checkpoint / "model.zip"))
            model, _ = experiment.setup_experiment()
            env = experiment.create_envs(1, eval_env=True, no_log=True)
            env.seed(record["seed"])
            th.manual_seed(record["seed"])
            observation, observations = env.reset(), []
            for _ in range(n_states):
                observations.append(observation)
                action, _ = model.predict(observation, deterministic=True)
                observation, *_ = env.step(action)
        states = model.policy.obs_to_tensor(np.concatenate(observations))[0]
        with th.no_grad():
            deterministic = model.actor(states, deterministic=True)
            stochastic = th.stack([model.actor(states, deterministic=False) for _ in range(n_samples)])
        entry = {
            "name": record["name"],
            "algo": record["algo"],
            "env_id": record["env_id"],
            "seed": record["seed"],
            "timesteps": record["steps"],
            "action_noise_rms": float((stochastic - deterministic).pow(2).mean().sqrt()),
            "stochastic_actions_at_bounds": float((stochastic.abs() >= 0.99).float().mean()),
            "deterministic_actions_at_bounds": float((deterministic.abs() >= 0.99).float().mean()),
        }
        entries.append(entry)
        print(json.dumps(entry))
    common.write_json(path, {"runs": entries, "n_states": n_states, "n_samples": n_samples, "meta": meta})
    print(f"{len(entries)} finished runs measured in {path}")


def steps_to_threshold(curve: list[dict[str, Any]], threshold: float) -> int | None:
    """Environment steps at the first evaluation reaching ``threshold``; None if none did."""
    return next((point["timesteps"] for point in curve if point["eval_mean"] >= threshold), None)


def last3_mean(record: dict[str, Any]) -> float:
    """A run's final return: the mean of its last 3 evaluations (one evaluation decides less)."""
    return float(np.mean([point["eval_mean"] for point in record["curve"][-3:]]))


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["env_id"], record["algo"]), []).append(record)
    rows = []
    order = {env_id: index for index, (env_id, _) in enumerate(TASKS)}
    for (env_id, algo), runs in sorted(groups.items(), key=lambda item: (order.get(item[0][0], 99), item[0][1])):
        finals = np.array([r["final_return"] for r in runs])
        last3 = np.array([last3_mean(r) for r in runs])
        first_steps = [(steps_to_threshold(r["curve"], THRESHOLDS[env_id]), r) for r in runs if env_id in THRESHOLDS]
        reached_by = [(steps, r) for steps, r in first_steps if steps is not None]
        reached = [steps for steps, _ in reached_by]
        # The same points in gradient updates: WPO and SAC make different numbers per step
        reached_updates = [gradient_updates(algo, env_id, [steps], r.get("hyperparams"))[0] for steps, r in reached_by]
        rows.append(
            {
                "env_id": env_id,
                "algo": algo,
                "steps": runs[0]["steps"],
                "seeds": sorted(r["seed"] for r in runs),
                "final_mean": float(finals.mean()),
                "final_std": float(finals.std()),
                "last3_mean": float(last3.mean()),
                "last3_std": float(last3.std()),
                "threshold": THRESHOLDS.get(env_id),
                "seeds_reaching_threshold": len(reached),
                "steps_to_threshold_median": float(np.median(reached)) if reached else None,
                "updates_to_threshold_median": float(np.median(reached_updates)) if reached else None,
                "train_cpu_h_median": float(np.median([r["train_cpu_s"] for r in runs]) / 3600),
            }
        )
    return rows


def verdicts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task with finished WPO and SAC runs: ahead when every WPO seed's mean of its last 3 evaluations beats every
    SAC seed's by more than ``VERDICT_MARGIN`` of the largest |value|, behind in the opposite case, else level."""
    last3: dict[tuple[str, str], list[float]] = {}
    for record in records:
        last3.setdefault((record["env_id"], record["algo"]), []).append(last3_mean(record))
    rows = []
    for env_id, _ in TASKS:
        wpo, sac = last3.get((env_id, "wpo")), last3.get((env_id, "sac"))
        if not (wpo and sac):
            continue
        margin = VERDICT_MARGIN * max(abs(value) for value in wpo + sac)
        verdict = "ahead" if min(wpo) > max(sac) + margin else "behind" if max(wpo) < min(sac) - margin else "level"
        complete = len(wpo) >= len(SEEDS["wpo"]) and len(sac) >= len(SEEDS["sac"])
        rows.append({"env_id": env_id, "wpo_last3": wpo, "sac_last3": sac, "verdict": verdict, "all_seeds": complete})
    return rows


def probe_comparisons(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each finished probe beside every finished WPO and SAC seed of its task at the probe's last evaluation (a probe
    runs a shorter budget, so the table's final returns do not compare; and one probe seed is read against the spread
    of the seeds, not against its own seed's run alone)."""
    evals: dict[tuple[str, str], dict[int, dict[int, float]]] = {}  # (algo, task) -> seed -> timesteps -> eval
    for record in sorted(records, key=lambda record: record["seed"]):
        curve = {point["timesteps"]: point["eval_mean"] for point in record["curve"]}
        evals.setdefault((record["algo"], record["env_id"]), {})[record["seed"]] = curve
    rows = []
    for record in records:
        if record["algo"] in SEEDS:
            continue
        last = record["curve"][-1]
        step, env_id = last["timesteps"], record["env_id"]
        row = {
            "algo": record["algo"],
            "env_id": env_id,
            "seed": record["seed"],
            "timesteps": step,
            "eval_mean": last["eval_mean"],
        }
        for algo in SEEDS:
            seeds = evals.get((algo, env_id), {})
            row[f"{algo}_eval_means"] = {seed: curve[step] for seed, curve in seeds.items() if step in curve}
        rows.append(row)
    return rows


def gradient_updates(algo: str, env_id: str, timesteps: list[int], hyperparams: dict[str, Any] | None = None) -> list[float]:
    """Gradient updates made by ``timesteps`` environment steps: gradient_steps / train_freq per step after
    learning_starts, from the run's hyperparameters (a finished run's record) or else its config file."""
    zoo_algo, overrides = VARIANTS[algo]
    if hyperparams is None:
        import yaml

        with Path(CONFIGS[zoo_algo] or common.zoo_file(zoo_algo)).open() as file:
            hyperparams = {**yaml.safe_load(file)[env_id], **overrides}
    defaults = (100, 1, 1)  # learning_starts, train_freq, gradient_steps: the defaults of WPO and SAC
    start = int(float(hyperparams.get("learning_starts", defaults[0])))
    train_freq = int(float(hyperparams.get("train_freq") or defaults[1]))
    per_step = int(float(hyperparams.get("gradient_steps", defaults[2]))) / train_freq
    return [max(0, t - start) * per_step for t in timesteps]


def report() -> None:
    import matplotlib.pyplot as plt

    records = common.read_jsonl(OUT / "runs.jsonl")
    snapshot_file = OUT / "in_progress.json"
    in_progress = json.loads(snapshot_file.read_text())["runs"] if snapshot_file.exists() else []
    meta = common.provenance()
    rows = summarize(records) if records else []
    task_verdicts = verdicts(records)
    probes = probe_comparisons(records)
    common.write_json(OUT / "summary.json", {"groups": rows, "verdicts": task_verdicts, "probes": probes, "meta": meta})
    lines = [
        "| task | algo | steps | seeds | final return mean ± std | mean of last 3 evals | steps (gradient updates) to "
        "threshold, median of seeds reaching it | train CPU h (median) | anchor |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        anchor = ANCHORS.get(row["env_id"], ("", None))
        to_threshold = "—"
        if row["threshold"] is not None:
            median = row["steps_to_threshold_median"]
            updates = row["updates_to_threshold_median"]
            reached = f"{median:,.0f} ({updates:,.0f})" if median is not None else "not reached"
            to_threshold = f"≥ {row['threshold']:g}: {reached} ({row['seeds_reaching_threshold']}/{len(row['seeds'])})"
        lines.append(
            f"| {row['env_id']} | {row['algo'].upper()} | {row['steps']:,} | {len(row['seeds'])} | "
            f"{row['final_mean']:.1f} ± {row['final_std']:.1f} | {row['last3_mean']:.1f} ± {row['last3_std']:.1f} | "
            f"{to_threshold} | {row['train_cpu_h_median']:.2f} | {anchor[0]}: {anchor[1]} |"
        )
    lines += [
        "",
        "| task | WPO, last 3 evals per seed | SAC, last 3 evals per seed | "
        f"WPO is ({VERDICT_MARGIN:.0%} margin, every seed) |",
        "|---|---|---|---|",
    ]
    for row in task_verdicts:
        wpo, sac = (", ".join(f"{value:.1f}" for value in row[key]) for key in ("wpo_last3", "sac_last3"))
        state = "" if row["all_seeds"] else f" (so far: {len(row['wpo_last3'])} WPO, {len(row['sac_last3'])} SAC seeds)"
        lines.append(f"| {row['env_id']} | {wpo} | {sac} | {row['verdict']}{state} |")
    if probes:
        header = "| probe | task | seed | steps | probe's eval | WPO's evals there, per seed | SAC's evals there, per seed |"
        lines += ["", header, "|" + "---|" * 7]
    for row in probes:
        wpo, sac = (
            ", ".join(f"s{seed} {value:.1f}" for seed, value in row[f"{algo}_eval_means"].items()) for algo in ("wpo", "sac")
        )
        lines.append(
            f"| {row['algo']} | {row['env_id']} | {row['seed']} | {row['timesteps']:,} | {row['eval_mean']:.1f} | "
            f"{wpo or '—'} | {sac or '—'} |"
        )
    (OUT / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    groups = [
        (records, "-", "finished"),
        ([r for r in in_progress if not r.get("lost")], "--", "in progress"),
        ([r for r in in_progress if r.get("lost")], ":", "lost"),
    ]
    for env_id in sorted({r["env_id"] for r in records + in_progress}):
        # Left: against environment steps (the budget); right: against gradient updates (WPO makes 0.25 per step here)
        fig, (by_steps, by_updates) = plt.subplots(1, 2, figsize=(15, 5.2), sharey=True)
        draw_runs(env_id, groups, by_steps, by_updates)
        by_steps.set_xlabel("environment steps")
        by_updates.set_xlabel("gradient updates")
        by_steps.set_ylabel("deterministic eval return (10 episodes)")
        by_steps.set_title(f"{env_id}: one line per seed (dashed: in progress; dotted: checkpoint lost)", fontsize=10)
        by_updates.set_title("the same evaluations against the updates made so far", fontsize=10)
        for ax in (by_steps, by_updates):
            ax.legend(loc="best", fontsize=8)
            ax.grid(alpha=0.3)
        fig.subplots_adjust(bottom=0.17, left=0.06, right=0.98, wspace=0.08)
        common.save_figure(fig, OUT / f"curves_{env_id.replace('/', '-')}.png", meta)

    # The whole campaign in one figure: a panel per task, titled with the verdict so far
    fig, axes = plt.subplots(2, (len(TASKS) + 1) // 2, figsize=(19, 8.5))
    titles = panel_titles(records, in_progress, task_verdicts)
    for ax, (env_id, steps) in zip(axes.flat, TASKS, strict=False):
        draw_runs(env_id, groups, ax)
        ax.set_title(titles[env_id], fontsize=9)
        ax.set_xlim(0, steps)
        ax.xaxis.set_major_formatter(lambda x, _: f"{x / 1000:g}k")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7)
    for ax in axes.flat[len(TASKS) :]:
        ax.axis("off")
        ax.text(0, 0.5, overview_key(records), fontsize=9, va="center", wrap=True)
    fig.supxlabel("environment steps", fontsize=9, y=0.04)
    fig.supylabel("deterministic eval return (10 episodes)", fontsize=9, x=0.005)
    fig.subplots_adjust(bottom=0.1, left=0.045, right=0.99, top=0.95, hspace=0.3, wspace=0.2)
    common.save_figure(fig, OUT / "overview.png", meta)


def overview_key(records: list[dict[str, Any]]) -> str:
    """The overview's key, with the evaluation schedule the finished runs used and the verdict's margin."""
    schedules = sorted({(r["n_eval_episodes"], r["eval_freq"]) for r in records if "eval_freq" in r})
    schedule = " or ".join(f"{episodes}\ndeterministic episodes every {freq / 1000:g}k steps" for episodes, freq in schedules)
    schedule = schedule or "a schedule of\nits own"
    return (
        "One line per seed: WPO (red, hyperparams/wpo.yml: the\nreference's example settings) and SB3's SAC (blue,\n"
        f"rl-zoo3's MuJoCo settings), each evaluated on {schedule}. Solid: finished;\n"
        "dashed: in progress; dotted: checkpoint lost.\nVerdict: every seed's mean of its last 3 evaluations\n"
        f"{VERDICT_MARGIN:.0%} above (ahead) or below (behind) every SAC seed's,\nelse level. Per task, against gradient "
        "updates too:\ncurves_<task>.png; the numbers: summary.md."
    )


def draw_runs(env_id: str, groups: list[tuple[list[dict[str, Any]], str, str]], by_steps: Any, by_updates: Any = None) -> None:
    """A line per seed of each algorithm on ``env_id`` (style by group: finished, in progress, lost), against
    environment steps and, on ``by_updates``, against gradient updates; the task's anchor and threshold."""
    for algo in VARIANTS:
        for group, style, state in groups:
            runs = [r for r in group if r["env_id"] == env_id and r["algo"] == algo and r["curve"]]
            for index, r in enumerate(runs):
                steps = [p["timesteps"] for p in r["curve"]]
                values = [p["eval_mean"] for p in r["curve"]]
                label = f"{algo.upper()} ({len(runs)} seed{'s' * (len(runs) != 1)}, {state})" if index == 0 else None
                by_steps.plot(steps, values, style, color=COLORS[algo], alpha=0.8, lw=1.2, label=label)
                if by_updates is not None:
                    updates = gradient_updates(algo, env_id, steps, r.get("hyperparams"))
                    by_updates.plot(updates, values, style, color=COLORS[algo], alpha=0.8, lw=1.2, label=label)
    if env_id in ANCHORS:
        text, value = ANCHORS[env_id]
        by_steps.axhline(value, color="0.4", ls=":", lw=1, label=text)
    if env_id in THRESHOLDS:
        by_steps.axhline(THRESHOLDS[env_id], color="0.7", ls="-.", lw=0.8, label="threshold of the table")
        if by_updates is not None:
            by_updates.axhline(THRESHOLDS[env_id], color="0.7", ls="-.", lw=0.8)


def panel_titles(
    records: list[dict[str, Any]], in_progress: list[dict[str, Any]], task_verdicts: list[dict[str, Any]]
) -> dict[str, str]:
    """Per task: its name and where it stands: WPO's verdict against SAC with the WPO+SAC seeds it rests on; else
    running, finished by one algorithm only, checkpoint lost (to run again), or not started."""
    verdict = {row["env_id"]: row for row in task_verdicts}
    titles = {}
    for env_id, _ in TASKS:
        lost = [r for r in in_progress if r["env_id"] == env_id and r.get("lost")]
        running = [r for r in in_progress if r["env_id"] == env_id and not r.get("lost")]
        done = sorted({r["algo"].upper() for r in records if r["env_id"] == env_id})
        if env_id in verdict:
            row = verdict[env_id]
            seeds = f"{len(row['wpo_last3'])}+{len(row['sac_last3'])} seeds"
            state = f"WPO {row['verdict']} ({seeds}{'' if row['all_seeds'] else ' so far'})"
        elif running:
            state = "running"
        elif done:
            state = f"{' and '.join(done)} finished, no pair yet"
        elif lost:
            state = "checkpoint lost, to run again"
        else:
            state = "not started"
        titles[env_id] = f"{env_id.removeprefix('dm_control/')}: {state}"
    return titles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "queue", "status", "snapshot", "diagnose", "noise", "report"))
    parser.add_argument("--algo", choices=tuple(VARIANTS))
    parser.add_argument("--env", help="environment id, e.g. dm_control/humanoid-stand-v0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="default: the task's budget in TASKS")
    parser.add_argument("--eval-freq", type=int, default=10_000)
    parser.add_argument("--n-eval-episodes", type=int, default=10)
    parser.add_argument("--save-freq", type=int, default=25_000)
    parser.add_argument("--processes", type=int, default=2, help="queue: runs at a time (at most 2)")
    parser.add_argument("--poll-s", type=float, default=10.0, help="queue: seconds between looks at the runs")
    parser.add_argument("--first", nargs="*", default=[], metavar="RUN", help="queue: runs to start before any other")
    parser.add_argument("--defer", nargs="*", default=[], metavar="RUN", help="queue: runs to start last")
    args = parser.parse_args()
    if args.command == "run":
        if args.algo is None or args.env is None:
            parser.error("run needs --algo and --env")
        steps = args.steps or dict(TASKS).get(args.env)
        if steps is None:
            parser.error(f"--steps is needed for {args.env}, which is not one of the planned tasks")
        run(args.algo, args.env, args.seed, steps, args.eval_freq, args.n_eval_episodes, args.save_freq)
    elif args.command == "queue":
        queue(args)
    elif args.command == "status":
        status()
    elif args.command == "snapshot":
        snapshot()
    elif args.command == "diagnose":
        diagnose()
    elif args.command == "noise":
        action_noise()
    else:
        report()


if __name__ == "__main__":
    main()
