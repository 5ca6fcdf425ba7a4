"""WPO vs SAC beyond Pendulum: the paper's DeepMind Control tasks and MuJoCo v5, at equal budget (the runs; their
tables and figures: ``benchmarks/campaign_report.py``).

A run is the RL Zoo's own training (``ExperimentManager``, the code behind ``python -m rl_zoo3.train``): WPO's config
is ``hyperparams/wpo.yml``, SAC's ``benchmarks/hyperparams/sac.yml`` (rl-zoo3's MuJoCo SAC settings), a variant
(``VARIANTS``) replaces entry values as ``-params`` does. Every ``--eval-freq`` steps the deterministic policy is
evaluated on the zoo's evaluation environment (``common.EvalRecorder``). The run resumes as users are told to resume
(README, "Resuming"): SB3's ``CheckpointCallback(save_replay_buffer=True, save_vecnormalize=True)`` saves under
``$SB3_WPO_RUNS/campaign/<run>/checkpoints`` (default ``~/.cache/sb3-wpo-runs``) every ``--save-freq`` steps, with
the curve so far beside each step, and a run started again continues from ``sb3_wpo.find_latest_checkpoint``'s step
(or from a checkpoint of the harness before, ``<run>/checkpoint``). A finished run appends its record to
``$SB3_WPO_CAMPAIGN_OUT/runs.jsonl`` (default ``benchmarks/results/campaign``).

Each run is one command line: ``commands`` prints those of the planned runs not yet finished, for a cluster's
scheduler (one line per array task); ``queue`` runs them on this machine.

    python benchmarks/campaign.py run --algo wpo --env dm_control/humanoid-stand-v0 --seed 0
    python benchmarks/campaign.py commands               # the planned runs' command lines, skipping finished ones
    python benchmarks/campaign.py queue --processes 2    # run them here in order (resumable runs first)
    python benchmarks/campaign.py status                 # finished, in-progress (checkpointed) and pending runs

(``campaign.py snapshot|diagnose|noise|report`` still run ``campaign_report.py``'s commands of those names.)
"""

import argparse
import fcntl
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from stable_baselines3.common.callbacks import CheckpointCallback

import sb3_wpo

OUT = Path(os.environ.get("SB3_WPO_CAMPAIGN_OUT", common.RESULTS / "campaign"))  # env var: for smoke tests
RUNS = Path(os.environ.get("SB3_WPO_RUNS", "~/.cache/sb3-wpo-runs")).expanduser() / "campaign"
CONFIGS = {"wpo": None, "sac": str(common.ROOT / "benchmarks" / "hyperparams" / "sac.yml")}  # None: the zoo's default
# The reference's runnable example (Acme), as wpo.yml's MuJoCo and Control Suite entries held it until they shipped
# the tuned candidates: every WPO variant sets these keys, so that a variant runs the same settings whatever wpo.yml's
# entries hold (they keep only the budget, the warm-up and the env wrapper; tests/test_benchmarks.py checks both).
# V(s') is the max over the samples, an option of ours (the reference's agent takes their mean). Every variant also
# names its networks in full (layer norm, activation, critics), so that it keeps its meaning if WPO's defaults change.
LN3 = "net_arch=[256, 256, 256], layer_norm=True, activation_fn=nn.ELU"  # its networks, as policy_kwargs' arguments
REFERENCE_EXAMPLE: dict[str, Any] = {
    "learning_rate": 3e-4,
    "num_samples": 20,
    "n_steps": 5,
    "train_freq": 4,
    "gradient_steps": 1,
    "policy_delay": 1,
    "dual_learning_rate": 0.0,
    "target_aggregation": "max",
    "policy_kwargs": f"dict({LN3}, n_critics=1)",
}
# What a run's ``algo`` label runs: the zoo's algorithm and values replacing its config entry's (as ``-params`` does).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "wpo": ("wpo", REFERENCE_EXAMPLE),
    "sac": ("sac", {}),
    "wpo-utd1": ("wpo", {**REFERENCE_EXAMPLE, "train_freq": 1}),  # one update per step, as SAC: WPO and SAC at equal updates
    # The reference's MuJoCo entry with an initial std of 0.2 instead of 0.5: its fixed std penalty keeps the std
    # near the initial one, and at 0.5 WPO explores with more noise than SAC (campaign/summary.md's noise table)
    "wpo-std0.2": (
        "wpo",
        {**REFERENCE_EXAMPLE, "policy_kwargs": f"dict({LN3}, n_critics=1, init_std=0.2)"},
    ),
}
# The tuning screen (issue 26; benchmarks/notes/tuning.md has the plan and the rule), one factor at a time from the
# probe ``wpo-s4u1``: 4 samples, one update per step, V(s') = the mean over the samples (the reference's critic
# target); ``-mlp``: SAC's networks (256 x 2 ReLU, no LayerNorm); ``-ln2``: the entry's LayerNorm ELU networks with
# two hidden layers instead of three; ``s4u2``: one update every 2 steps; ``s2``, ``s1``: 2 or 1 samples.
TUNING_BASE = {**REFERENCE_EXAMPLE, "num_samples": 4, "train_freq": 1, "target_aggregation": "mean"}
LN2 = "net_arch=[256, 256], layer_norm=True, activation_fn=nn.ELU"  # the -ln2 networks, as policy_kwargs' arguments
ONE_LN2 = f"dict({LN2}, n_critics=1)"
MLP = "dict(net_arch=[256, 256], layer_norm=False, activation_fn=nn.ReLU, n_critics=1)"  # SAC's networks, one critic
S1U1_LN2 = {**TUNING_BASE, "num_samples": 1, "policy_kwargs": ONE_LN2}  # the first candidate, wpo-s1u1-ln2
TWO_CRITICS = {"policy_kwargs": f"dict({LN2}, n_critics=2)"}
POLYAK = {"tau": 0.005, "target_update_interval": 1}  # SAC's target updates
TWO_CRITICS_TANH = {"policy_kwargs": f"dict({LN2}, n_critics=2, tanh_actions=True)"}
# The MuJoCo candidate, wpo-s1u1-ln2-2q-n1-d2 (two critics, 1-step returns, policy_delay=2), and the Control Suite's,
# ``-hard`` (a learned mean dual)
CANDIDATE_2Q_N1_D2 = {**S1U1_LN2, **TWO_CRITICS, "n_steps": 1, "policy_delay": 2}
HARD = {**CANDIDATE_2Q_N1_D2, "dual_learning_rate": 0.01}
# The candidate with SAC's exploration: tanh actions, a learned entropy bonus and the std penalty's weight at the
# mean's (``-ent``); and with both duals learned, bounded alike (``-ent-hard``)
ENTROPY = {**CANDIDATE_2Q_N1_D2, **TWO_CRITICS_TANH, "ent_coef": "auto", "init_log_alpha_std": 0.0}
ENTROPY_HARD = {**ENTROPY, "dual_learning_rate": 0.01, "epsilon_std": 0.01}
VARIANTS.update(
    {
        "wpo-s4u1": ("wpo", TUNING_BASE),
        "wpo-s4u1-mlp": ("wpo", {**TUNING_BASE, "policy_kwargs": MLP}),
        "wpo-s4u2-mlp": ("wpo", {**TUNING_BASE, "train_freq": 2, "policy_kwargs": MLP}),
        "wpo-s4u1-ln2": ("wpo", {**TUNING_BASE, "policy_kwargs": ONE_LN2}),
        # Stage 3: fewer samples at one update per step, the entry's networks kept (they carry the learning)
        "wpo-s2u1": ("wpo", {**TUNING_BASE, "num_samples": 2}),
        "wpo-s1u1": ("wpo", {**TUNING_BASE, "num_samples": 1}),
        "wpo-s1u1-ln2": ("wpo", S1U1_LN2),
        # Hypothesis 4 of issue 26 (action bounds): the candidate with tanh actions, for the tasks where the clipped
        # policy's means sit beyond the bounds (humanoid-stand), where clipped samples get no gradient from Q
        "wpo-s1u1-ln2-tanh": ("wpo", {**S1U1_LN2, "policy_kwargs": f"dict({LN2}, n_critics=1, tanh_actions=True)"}),
        # Hypothesis 3 of issue 26 (the std): the candidate with the std penalty's weight at the mean's (softplus(0)
        # ≈ 0.69 in place of ≈ 1e4), so that the WPO update moves the std as it moves the mean; HalfCheetah-v5, where
        # the candidate trails SAC from 150k steps on with its std still near the initial 0.5
        "wpo-s1u1-ln2-std": ("wpo", {**S1U1_LN2, "init_log_alpha_std": 0.0}),
        # Hypothesis 5 of issue 26: the candidate with two critics, V(s') from their min (SAC's clipped double Q; the
        # actor follows their mean), for HalfCheetah-v5, where every WPO setting so far flattens below SAC
        "wpo-s1u1-ln2-2q": ("wpo", {**S1U1_LN2, **TWO_CRITICS}),
        # Stage 5, the two critics' rest of the HalfCheetah-v5 gap (ahead of SAC early, flat after), one factor each
        # from ``-2q``: ``-n1`` 1-step returns (SAC's) in place of the entry's uncorrected 5-step returns,
        # whose targets mix in the older policies' rewards of the replay buffer; ``-polyak`` SAC's Polyak targets
        # (tau=0.005 every update) in place of the reference's hard copy every 100 updates
        "wpo-s1u1-ln2-2q-n1": ("wpo", {**S1U1_LN2, **TWO_CRITICS, "n_steps": 1}),
        # ``-n1`` without the second critic: the candidate's cost (at most SAC's), should the returns carry the gain
        "wpo-s1u1-ln2-n1": ("wpo", {**S1U1_LN2, "n_steps": 1}),
        # Stage 7, the late slope of ``-n1`` (the candidate), one factor: SAC's Polyak targets
        "wpo-s1u1-ln2-n1-polyak": ("wpo", {**S1U1_LN2, "n_steps": 1, **POLYAK}),
        # and tanh actions: the std stays pinned in u, but the action noise shrinks where the policy saturates a bound
        # (as SAC's does), where a clipped sample gets no gradient from Q; the reference settings' deterministic
        # actions sit at a bound far more often than SAC's on HalfCheetah-v5 (campaign/summary.md's noise table)
        "wpo-s1u1-ln2-n1-tanh": (
            "wpo",
            {**S1U1_LN2, "n_steps": 1, "policy_kwargs": f"dict({LN2}, n_critics=1, tanh_actions=True)"},
        ),
        "wpo-s1u1-ln2-2q-polyak": ("wpo", {**S1U1_LN2, **TWO_CRITICS, **POLYAK}),
        # 3-step returns: on Walker2d-v5 (seed 0, 300k) the 5-step candidate ends level with SAC and the 1-step one
        # behind, where 1-step returns gain most on HalfCheetah-v5: does the middle keep both?
        "wpo-s1u1-ln2-n3": ("wpo", {**S1U1_LN2, "n_steps": 3}),
        # Two critics (the min of SAC's against the overestimation one critic shows on Walker2d-v5 with 1-step
        # returns: campaign/summary.md's critics table) at one critic's cost: the policy updated at every second step
        "wpo-s1u1-ln2-2q-n1-d2": ("wpo", CANDIDATE_2Q_N1_D2),
        # humanoid-stand, where no WPO setting leaves the floor and SAC's seed 0 does: SAC's exploration, an entropy
        # bonus with a learned weight (``ent_coef="auto"``, towards −dim(A)) on tanh actions, and the std free to
        # follow it (the std penalty's weight at the mean's, as ``-std``), on the candidate
        "wpo-s1u1-ln2-2q-n1-d2-ent": ("wpo", ENTROPY),
        # humanoid-stand's other reading (notes, stage 9): there ∇a Q is orders of magnitude smaller than on MuJoCo
        # (the reward scale), so the fixed mean penalty (α ≈ 0.69) holds the policy's mean to a KL per update far
        # below ε_mean: the mean barely moves. A learned mean dual (Acme's dual learning rate, 0.01) brings the KL
        # to ε whatever the reward scale; the std's dual starts at 1e4 and stays there in such a budget, so the std
        # is pinned as in the candidate
        "wpo-s1u1-ln2-2q-n1-d2-hard": ("wpo", HARD),
        # Stage 10, the Control Suite: the candidate is behind SAC on cheetah-run (seed 0, 300k) where the first
        # candidate (``wpo-s1u1-ln2``, the entry's 5-step returns) was level: the candidate with the entry's returns
        "wpo-s1u1-ln2-2q-d2": ("wpo", {**S1U1_LN2, **TWO_CRITICS, "policy_delay": 2}),
        # Stage 10, humanoid-stand's untried pair: the entropy variant's free, entropy-held std with the learned
        # dual's step at ε. Both duals learned (0.01), both starting at softplus(0) and bounded alike (ε_std = ε_mean
        # = 0.01): "the std's penalty at the mean's" of ``-ent`` under learned duals
        "wpo-s1u1-ln2-2q-n1-d2-ent-hard": ("wpo", ENTROPY_HARD),
        # and SAC's soft backup on top (``entropy_in_target``): the critic values the entropy to come, as SAC's does
        "wpo-s1u1-ln2-2q-n1-d2-ent-hard-soft": ("wpo", {**ENTROPY_HARD, "entropy_in_target": True}),
        # Stage 11, humanoid-stand: at the floor SAC's critic is optimistic and steep in the action where WPO's is
        # flat, both from its soft backup, while its std in u stays near 0.5 as its entropy weight falls (the
        # numbers: notes, stage 11). So: the Control Suite's candidate (``-hard``) with SAC's
        # soft backup (tanh actions, ``ent_coef="auto"``, ``entropy_in_target``) and the std pinned at 0.5 as in the
        # candidate, which -ent-hard's runaway std argues for
        "wpo-s1u1-ln2-2q-n1-d2-hard-soft": (
            "wpo",
            {**HARD, **TWO_CRITICS_TANH, "ent_coef": "auto", "entropy_in_target": True},
        ),
        # Stage 14, HalfCheetah-v5 (the MuJoCo entry's one task behind SAC): the entry at WPO()'s learning rate, 1e-3
        # in place of 3e-4, a larger step for actor and critic alike; also the MuJoCo run that the defaults' next
        # trial needs (stage 13)
        "wpo-s1u1-ln2-2q-n1-d2-lr1e-3": ("wpo", {**CANDIDATE_2Q_N1_D2, "learning_rate": 1e-3}),
        # Stage 15, the Control Suite: its entry (``-hard``) at the learning rate that passed on MuJoCo (stage 14)
        "wpo-s1u1-ln2-2q-n1-d2-hard-lr1e-3": ("wpo", {**HARD, "learning_rate": 1e-3}),
        # Stage 16, humanoid-stand: under ``-hard-soft`` WPO's critic flattened in the action where SAC's, with the
        # same soft backup, did not; what is left between them is the networks. So ``-hard-soft`` with SAC's (256 x 2
        # ReLU, no LayerNorm) for the actor and the critics (the numbers: notes, stages 11 and 16)
        "wpo-s1u1-mlp-2q-n1-d2-hard-soft": (
            "wpo",
            {
                **HARD,
                "ent_coef": "auto",
                "entropy_in_target": True,
                "policy_kwargs": "dict(net_arch=[256, 256], layer_norm=False, activation_fn=nn.ReLU, n_critics=2, "
                "tanh_actions=True)",
            },
        ),
        # Stage 18, humanoid-stand: ``-hard-soft`` with the std free (its dual learned, ε_std = 0.01, as ``-ent-hard``)
        # but bounded (``max_std=1.0`` in u, where tanh(1) ≈ 0.76): the std follows the entropy's weight down without
        # the runaway to 3-8 that saturated ``-ent-hard``'s actions (notes, stages 10 and 18)
        "wpo-s1u1-ln2-2q-n1-d2-hard-soft-maxstd1": (
            "wpo",
            {
                **ENTROPY_HARD,
                "entropy_in_target": True,
                "policy_kwargs": f"dict({LN2}, n_critics=2, tanh_actions=True, max_std=1.0)",
            },
        ),
    }
)
COLORS = {  # each variant's color in the figures (campaign_report.py)
    "wpo": "tab:red",
    "sac": "tab:blue",
    "wpo-utd1": "tab:orange",
    "wpo-std0.2": "tab:purple",
    "wpo-s4u1": "tab:green",
    "wpo-s4u1-mlp": "tab:olive",
    "wpo-s4u2-mlp": "tab:cyan",
    "wpo-s4u1-ln2": "tab:brown",
    "wpo-s2u1": "tab:pink",
    "wpo-s1u1": "tab:gray",
    "wpo-s1u1-ln2": "black",
    "wpo-s1u1-ln2-tanh": "magenta",
    "wpo-s1u1-ln2-std": "gold",
    "wpo-s1u1-ln2-2q": "teal",
    "wpo-s1u1-ln2-2q-n1": "limegreen",
    "wpo-s1u1-ln2-2q-polyak": "navy",
    "wpo-s1u1-ln2-n1": "darkorange",
    "wpo-s1u1-ln2-n1-polyak": "crimson",
    "wpo-s1u1-ln2-n1-tanh": "darkviolet",
    "wpo-s1u1-ln2-n3": "sienna",
    "wpo-s1u1-ln2-2q-n1-d2": "deepskyblue",
    "wpo-s1u1-ln2-2q-n1-d2-ent": "mediumseagreen",
    "wpo-s1u1-ln2-2q-n1-d2-hard": "orchid",
    "wpo-s1u1-ln2-2q-n1-d2-ent-hard": "darkgoldenrod",
    "wpo-s1u1-ln2-2q-d2": "teal",
    "wpo-s1u1-ln2-2q-n1-d2-ent-hard-soft": "saddlebrown",
    "wpo-s1u1-ln2-2q-n1-d2-hard-soft": "olivedrab",
    "wpo-s1u1-ln2-2q-n1-d2-lr1e-3": "indigo",
    "wpo-s1u1-ln2-2q-n1-d2-hard-lr1e-3": "darkcyan",
    "wpo-s1u1-mlp-2q-n1-d2-hard-soft": "chocolate",
    "wpo-s1u1-ln2-2q-n1-d2-hard-soft-maxstd1": "slategray",
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
# rate) and the exploration noise (an initial std of 0.2). On humanoid-stand, one update per step: the reference's
# 0.25 give WPO 122.5k updates by 500k steps, fewer than SAC needed to take off (campaign/summary.md's threshold
# column); 300k steps give it 290k.
PROBES = [
    ("wpo-utd1", "HalfCheetah-v5", 0, 150_000),
    ("wpo-std0.2", "HalfCheetah-v5", 0, 150_000),
    ("wpo-utd1", "dm_control/humanoid-stand-v0", 0, 300_000),
]


# The tuning screen's candidates (benchmarks/notes/tuning.md) at the campaign's budgets, 3 seeds a task, beside the
# campaign's SAC seeds (round two holds SAC's second humanoid-stand seed). Seed 0 on every task first, the tasks where
# the reference settings trail SAC first (a candidate that does not close those gaps does not ship, whatever it does
# elsewhere), humanoid-stand last of them (500k steps do not fit in one session); then seeds 1 and 2 in that order.
CONFIRMATION_ORDER = [
    "HalfCheetah-v5",
    "Walker2d-v5",
    "Hopper-v5",
    "dm_control/cheetah-run-v0",
    "dm_control/walker-walk-v0",
    "dm_control/cartpole-swingup-v0",
    "dm_control/humanoid-stand-v0",
]
# The tuning screen's candidates in the order the screen chose them. An earlier candidate's finished confirmation runs
# stay in the records and in the reports' rows.
CANDIDATES = (
    "wpo-s1u1-ln2",
    "wpo-s1u1-ln2-n1",
    "wpo-s1u1-ln2-2q-n1-d2",
    "wpo-s1u1-ln2-2q-n1-d2-hard",
    "wpo-s1u1-ln2-2q-n1-d2-lr1e-3",
    "wpo-s1u1-ln2-2q-n1-d2-hard-lr1e-3",
)
# The current candidate of each family, the variant its confirmation runs (one per family, as wpo.yml's entries): the
# Control Suite's holds the policy's step at ε with a learned mean dual, where its rewards in [0, 1] make the fixed
# dual's step a twentieth of MuJoCo's (notes, stage 11); both learn at 1e-3 (notes, stages 14-15).
FAMILY_CANDIDATES = {"mujoco": "wpo-s1u1-ln2-2q-n1-d2-lr1e-3", "dm_control": "wpo-s1u1-ln2-2q-n1-d2-hard-lr1e-3"}


def family(env_id: str) -> str:
    """The family of one of the campaign's tasks (``TASKS``), named as wpo.yml's entries. ``sb3_wpo.zoo.task_family``
    answers for any registered task but needs shimmy and dm_control imported, which this module's import does not."""
    return "dm_control" if env_id.startswith("dm_control/") else "mujoco"


def candidate(env_id: str) -> str:
    return FAMILY_CANDIDATES[family(env_id)]


CONFIRMATION = [(candidate(env_id), env_id, seed, dict(TASKS)[env_id]) for seed in (0, 1, 2) for env_id in CONFIRMATION_ORDER]


def run_name(algo: str, env_id: str, seed: int, steps: int) -> str:
    return f"{algo}_{env_id.replace('/', '-')}_s{seed}_{steps}"


def parse_run_name(name: str) -> tuple[str, str, int, int]:
    """``run_name``'s inverse (a DeepMind Control task's ``dm_control-`` prefix back to ``dm_control/``), for runs
    named on the command line, such as a screen's."""
    match = re.fullmatch(r"([^_]+)_(.+)_s(\d+)_(\d+)", name)
    if match is None or match[1] not in VARIANTS:
        raise SystemExit(f"{name}: not a run folder name (<variant>_<task>_s<seed>_<steps>; variants: {', '.join(VARIANTS)})")
    env_id = re.sub(r"^dm_control-", "dm_control/", match[2])
    return match[1], env_id, int(match[3]), int(match[4])


def planned_runs() -> list[tuple[str, str, int, int]]:
    """Round one (seed 0 of each algorithm on every task), round two (the further seeds) task by task from the smallest
    budget up, the probes, then the confirmation of the tuning screen's candidate."""
    first = [(algo, env_id, seeds[0], steps) for env_id, steps in TASKS for algo, seeds in SEEDS.items()]
    further = []
    for env_id, steps in sorted(TASKS, key=lambda task: task[1]):
        for index in range(1, max(len(seeds) for seeds in SEEDS.values())):
            further += [(algo, env_id, seeds[index], steps) for algo, seeds in SEEDS.items() if index < len(seeds)]
    return first + further + PROBES + CONFIRMATION


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints: SB3's CheckpointCallback in <run dir>/checkpoints, found again by sb3_wpo.find_latest_checkpoint
# ----------------------------------------------------------------------------------------------------------------
CHECKPOINTS = "checkpoints"
PREFIX = "rl_model"  # CheckpointCallback's default name_prefix, which find_latest_checkpoint reads by default


class Checkpoint(NamedTuple):
    """What a run resumes from: the model, its replay buffer, its VecNormalize statistics (None: the entry does not
    normalize) and the run's state at that step (timesteps, curve, train time, segments)."""

    model: Path
    replay_buffer: Path | None
    vecnormalize: Path | None
    state: dict[str, Any]


def state_path(folder: Path, timesteps: int) -> Path:
    return folder / f"{PREFIX}_state_{timesteps}_steps.json"


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The run's newest complete checkpoint: ``find_latest_checkpoint``'s step of ``<run dir>/checkpoints``, or a
    checkpoint folder of the harness before (``checkpoint``, or ``checkpoint.old`` when a kill landed between its
    two renames), whichever is further; None when the run has neither."""
    found = []
    try:
        model, replay_buffer, vecnormalize = sb3_wpo.find_latest_checkpoint(run_dir / CHECKPOINTS, PREFIX)
    except FileNotFoundError:
        pass
    else:
        timesteps = int(model.stem.split("_")[-2])
        state = json.loads(state_path(model.parent, timesteps).read_text())
        found.append(Checkpoint(model, replay_buffer, vecnormalize, state))
    for name in ("checkpoint", "checkpoint.old"):  # the harness before this runner
        folder = run_dir / name
        if (folder / "state.json").is_file():
            state = json.loads((folder / "state.json").read_text())
            buffer = folder / "replay_buffer.pkl"
            found.append(Checkpoint(folder / "model.zip", buffer if buffer.is_file() else None, None, state))
            break
    return max(found, key=lambda checkpoint: checkpoint.state["timesteps"], default=None)


def drop_replay_buffers(run_dir: Path, keep: Path | None = None) -> None:
    """Delete the run's replay buffers (hundreds of MB each) but ``keep``; the models and states stay."""
    before = run_dir / "checkpoint" / "replay_buffer.pkl"  # the harness before this runner
    for path in [*(run_dir / CHECKPOINTS).glob(f"{PREFIX}_replay_buffer_*_steps.pkl"), before]:
        if path != keep:
            path.unlink(missing_ok=True)


class RunCheckpoint(CheckpointCallback):
    """SB3's ``CheckpointCallback`` with the replay buffer and VecNormalize statistics, and beside each step the run's
    state (curve, train time, segments), written first so that every complete step has one. Once a step is complete
    the older replay buffers go; the saves are kept off the train clock."""

    def __init__(self, recorder: common.EvalRecorder, state: dict[str, Any], save_freq: int, run_dir: Path):
        super().__init__(save_freq, str(run_dir / CHECKPOINTS), PREFIX, save_replay_buffer=True, save_vecnormalize=True)
        self.recorder, self.state, self.run_dir = recorder, state, run_dir

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            with self.recorder.clock_paused():
                self.state.update(
                    timesteps=self.num_timesteps,
                    curve=self.recorder.curve,
                    train_wall_s=self.recorder.train_wall_s,
                    train_cpu_s=self.recorder.train_cpu_s,
                )
                common.write_json(state_path(Path(self.save_path), self.num_timesteps), self.state)
                super()._on_step()
                drop_replay_buffers(self.run_dir, keep=sb3_wpo.find_latest_checkpoint(self.save_path, PREFIX)[1])
        return True


def hold_run_lock(run_dir: Path) -> Any:
    """Lock ``run_dir`` for this process's lifetime (the returned file must stay open), so that no second process
    (another queue, a scheduler's retry) runs the same run; exits when another process holds it."""
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


# ----------------------------------------------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------------------------------------------
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


def resumed_model(experiment: Any, checkpoint: Checkpoint) -> tuple[Any, dict[str, Any]]:
    """The zoo's model continued from ``checkpoint`` (its ``--trained-agent`` loading), with the checkpoint's replay
    buffer and VecNormalize statistics, as the README's resume recipe loads them."""
    from stable_baselines3.common.vec_env import VecNormalize

    model, saved_hyperparams = experiment.setup_experiment()
    # The zoo itself loads <folder>/replay_buffer.pkl beside the agent (the harness before named its buffer so)
    if checkpoint.replay_buffer is not None and checkpoint.replay_buffer != checkpoint.model.with_name("replay_buffer.pkl"):
        model.load_replay_buffer(checkpoint.replay_buffer)
    if checkpoint.vecnormalize is not None:
        env = model.get_env()
        model.set_env(VecNormalize.load(str(checkpoint.vecnormalize), env.venv if isinstance(env, VecNormalize) else env))
    model.num_timesteps = checkpoint.state["timesteps"]
    mark_episode_cut(model)
    return model, saved_hyperparams


def run(algo: str, env_id: str, seed: int, steps: int, eval_freq: int, n_eval_episodes: int, save_freq: int) -> None:
    import torch as th

    th.set_num_threads(1)
    name = run_name(algo, env_id, seed, steps)
    run_dir = RUNS / name
    with hold_run_lock(run_dir):  # released however the run ends (a kill ends the process)
        checkpoint = latest_checkpoint(run_dir)
        segment = {"commit": common.git_commit(), "sb3_wpo_uncommitted_changes": common.sb3_wpo_dirty()}
        segment.update(started_utc=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), load_average=common.load_average())
        if checkpoint is None:
            state: dict[str, Any] = {"timesteps": 0, "train_wall_s": 0.0, "train_cpu_s": 0.0, "curve": [], "segments": []}
        else:
            state = checkpoint.state
            print(f"{name}: resuming from {checkpoint.model} at {state['timesteps']} steps", flush=True)
        segment["from_timesteps"] = state["timesteps"]
        state["segments"].append(segment)

        experiment = make_experiment(algo, env_id, seed, steps, run_dir / "zoo", str(checkpoint.model) if checkpoint else "")
        if checkpoint is None:
            model, saved_hyperparams = experiment.setup_experiment()
        else:
            model, saved_hyperparams = resumed_model(experiment, checkpoint)
        eval_env = experiment.create_envs(1, eval_env=True, no_log=True)
        recorder = common.EvalRecorder(
            eval_env,
            eval_freq,
            n_eval_episodes,
            curve_train_stats=True,
            curve=state["curve"],
            train_wall_s=state["train_wall_s"],
            train_cpu_s=state["train_cpu_s"],
            name=name,
        )
        start = time.perf_counter()
        callbacks = [recorder, RunCheckpoint(recorder, state, save_freq, run_dir)]  # evaluations first: a step has both
        model.learn(steps - state["timesteps"], callback=callbacks, reset_num_timesteps=checkpoint is None)
        if not state["curve"] or state["curve"][-1]["timesteps"] != model.num_timesteps:
            recorder.evaluate()
        segment["wall_s"] = round(time.perf_counter() - start, 1)
        final = RunCheckpoint(recorder, state, 1, run_dir)  # the final model stays loadable; its buffer is dropped below
        final.init_callback(model)
        final.on_step()
        record = {
            "name": name,
            "algo": algo,
            "env_id": env_id,
            "seed": seed,
            "steps": steps,
            "hyperparams": common.hyperparams_for_json(dict(saved_hyperparams)),
            "settings": common.model_settings(model),
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
        drop_replay_buffers(run_dir)
        print(f"{name}: done, final eval {record['final_return']:.1f}", flush=True)


# ----------------------------------------------------------------------------------------------------------------
# The list of runs: its command lines, the local queue, where each run stands
# ----------------------------------------------------------------------------------------------------------------
def finished() -> set[str]:
    return {record["name"] for record in common.read_jsonl(OUT / "runs.jsonl")}


def progress(name: str) -> int:
    checkpoint = latest_checkpoint(RUNS / name)
    return checkpoint.state["timesteps"] if checkpoint else 0


def command(algo: str, env_id: str, seed: int, steps: int, eval_freq: int, save_freq: int) -> common.Command:
    """The command line of one run (logging to ``<run dir>/log.txt`` when the local queue runs it)."""
    name = run_name(algo, env_id, seed, steps)
    argv = [sys.executable, str(Path(__file__).resolve()), "run", "--algo", algo, "--env", env_id, "--seed", str(seed)]
    argv += ["--steps", str(steps), "--eval-freq", str(eval_freq), "--save-freq", str(save_freq)]
    return common.Command(name, tuple(argv), RUNS / name / "log.txt")


def pending_commands(args: argparse.Namespace) -> list[common.Command]:
    """The planned runs without a record and not held by a process, in the order to start them: runs named in
    ``--first``, then resumable runs, then the plan's order; runs named in ``--defer`` last."""
    done = finished()
    names = {spec: run_name(*spec) for spec in planned_runs()}
    todo = [spec for spec, name in names.items() if name not in done and not running_elsewhere(RUNS / name)]
    todo.sort(key=lambda spec: (names[spec] not in args.first, names[spec] in args.defer, progress(names[spec]) == 0))
    return [command(*spec, args.eval_freq, args.save_freq) for spec in todo]


def queue(args: argparse.Namespace) -> None:
    """The planned runs not yet finished on ``common.run_commands``, ``--processes`` at a time counting runs that other
    processes hold; the state is read again every ``--poll-s`` seconds, so that a queue can be restarted (or the plan
    changed) while runs go on."""
    print(f"{len(pending_commands(args))} runs to do, {len(finished())} finished", flush=True)

    def busy_elsewhere(running: set[str]) -> int:
        """Planned runs without a record that a process outside this queue holds."""
        done = finished()
        names = (run_name(*spec) for spec in planned_runs())
        return sum(name not in done | running and running_elsewhere(RUNS / name) for name in names)

    common.run_commands(lambda: pending_commands(args), args.processes, args.poll_s, busy_elsewhere)


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


def main() -> None:
    reports = ("snapshot", "diagnose", "noise", "report")
    if len(sys.argv) > 1 and sys.argv[1] in reports:  # the spelling from before campaign_report.py
        import campaign_report

        campaign_report.main()
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "commands", "queue", "status"))
    parser.add_argument("--algo", choices=tuple(VARIANTS))
    parser.add_argument("--env", help="environment id, e.g. dm_control/humanoid-stand-v0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="default: the task's budget in TASKS")
    parser.add_argument("--eval-freq", type=int, default=10_000)
    parser.add_argument("--n-eval-episodes", type=int, default=10)
    parser.add_argument("--save-freq", type=int, default=25_000)
    parser.add_argument("--processes", type=int, default=2, help="queue: runs at a time (at most one per core)")
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
    elif args.command == "commands":
        print("\n".join(command.line() for command in pending_commands(args)))
    elif args.command == "queue":
        queue(args)
    else:
        status()


if __name__ == "__main__":
    main()
