"""The benchmark tooling computes what its results pages claim: runs built by the RL Zoo's own ExperimentManager from
the zoo entries (plus overrides) and evaluated on a separately seeded env, sweep cells built as documented, success
rates and KL ratios counted right, a run record complete."""

import argparse
import json
import math
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import campaign
import campaign_report
import common
import epsilon_sweep
import make_report
import returns
from helpers import EARLIER_DEFAULTS, EARLIER_POLICY_DEFAULTS, policy_kwargs_of
from returns import parse_seeds

BENCHMARKS = Path(common.__file__).parent


def test_results_page_is_generated_from_the_committed_results():
    """benchmarks/README.md is what make_report.py renders from the result files and notes: a changed note or summary
    without the page regenerated fails here."""
    assert (BENCHMARKS / "README.md").read_text() == make_report.render(), "run `python benchmarks/make_report.py`"


def without_meta(summary: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in summary.items() if key != "meta"}


def test_campaign_and_tuning_summaries_are_generated_from_the_committed_records():
    """results/campaign and results/tuning: summary.md and summary.json (less their provenance) are what
    campaign_report.py makes of the committed run records; a record committed without its summaries regenerated
    (the README's rows read summary.json) fails here."""
    folder = common.RESULTS / "campaign"
    summary, lines = campaign_report.campaign_summary(folder)
    hint = "run `python benchmarks/campaign_report.py report`"
    assert (folder / "summary.md").read_text() == "\n".join(lines) + "\n", hint
    committed = json.loads((folder / "summary.json").read_text())
    assert without_meta(committed) == json.loads(json.dumps(summary, default=float)), hint

    rows, lines = campaign_report.tuning_summary(common.RESULTS / "tuning", folder)
    hint = "run `SB3_WPO_CAMPAIGN_OUT=benchmarks/results/tuning python benchmarks/campaign_report.py tuning`"
    assert (common.RESULTS / "tuning" / "summary.md").read_text() == "\n".join(lines) + "\n", hint
    committed = json.loads((common.RESULTS / "tuning" / "summary.json").read_text())
    assert without_meta(committed) == {"rows": json.loads(json.dumps(rows, default=float))}, hint


def test_parse_seeds():
    assert parse_seeds(["0-2", "5,7", "9"]) == [0, 1, 2, 5, 7, 9]


def test_timing_models_are_built_by_the_zoo():
    """speed.py's and update_cost.py's models: the zoo's entry (speed's headline), the constructor defaults at the
    matched sizes (speed), the wpo.yml entry on a random env of a task's sizes (update_cost)."""
    import speed
    import update_cost

    models, settings = speed.shipped_models(seed=0, fill=50)
    entry = common.raw_hyperparams("wpo", "Pendulum-v1")
    wpo = models["WPO"]
    assert (wpo.num_samples, wpo.n_steps, wpo.train_freq.frequency) == (entry["num_samples"], entry["n_steps"], 2)
    assert wpo.num_timesteps == 50 and settings["WPO"] == common.hyperparams_for_json(entry)
    assert models["SAC"].lr_schedule(1.0) == common.raw_hyperparams("sac", "Pendulum-v1")["learning_rate"]
    sac = speed.make_model("sac", "Pendulum-v1", 0, learning_starts=30)
    assert (sac.batch_size, sac.learning_starts, sac.policy.net_arch, sac.lr_schedule(1.0)) == (256, 30, [256, 256], 3e-4)
    cheetah = update_cost.wpo_at_size("HalfCheetah (17/6)", learning_starts=10)
    assert cheetah.observation_space.shape == (17,) and cheetah.action_space.shape == (6,)
    assert cheetah.num_samples == 20 and cheetah.actor.layer_norm and cheetah.learning_starts == 10


def test_sweep_cells_are_the_documented_settings():
    args = argparse.Namespace(env="Pendulum-v1", seeds=["0"], configs=["ours", "paper"], steps=1000, eval_freq=500)
    args.modes, args.epsilons, args.n_eval_episodes = ["soft", "hard", "hard-fast"], [0.005], 2
    specs = {spec["cell"]: spec for spec in epsilon_sweep.make_specs(args, done={("ours/soft/0.005", 0, 1000)})}
    assert set(specs) == {f"{c}/{m}/0.005" for c in ("ours", "paper") for m in ("soft", "hard", "hard-fast")} - {
        "ours/soft/0.005"  # already recorded: skipped
    }
    dual_lrs = {cell: spec["overrides"]["dual_learning_rate"] for cell, spec in specs.items()}
    assert dual_lrs["paper/soft/0.005"] == 0.0 and "init_log_alpha_std" not in specs["paper/soft/0.005"]["overrides"]
    assert dual_lrs["ours/hard/0.005"] == 1e-2 and dual_lrs["ours/hard-fast/0.005"] == 1e-1
    assert specs["ours/hard/0.005"]["overrides"]["init_log_alpha_std"] == 10_000.0
    assert all(spec["overrides"]["epsilon_mean"] == 0.005 for spec in specs.values())
    paper = specs["paper/hard/0.005"]["overrides"]
    assert paper["policy_kwargs"]["net_arch"] == [256, 256, 256] and paper["policy_kwargs"]["layer_norm"] is True
    assert (paper["target_update_interval"], paper["tau"], paper["buffer_size"]) == (100, 1.0, 1_000_000)
    assert "net_arch" not in specs["ours/hard/0.005"]["overrides"].get("policy_kwargs", {})


def fake_run(cell: str, seed: int, final: float, kl: float, kl_late: float, earlier_evals: float = -150.0) -> dict[str, Any]:
    stats = [
        {"timesteps": t, "kl_mean": kl_late if t > 900 else kl, "alpha_mean": 2.0, "pi_std_min": 0.5, "pi_std_max": 0.5}
        for t in range(100, 1100, 100)
    ]
    return dict(
        cell=cell,
        seed=seed,
        steps=1000,
        final_return=final,
        curve=[{"timesteps": t, "eval_mean": earlier_evals} for t in (600, 800)] + [{"timesteps": 1000, "eval_mean": final}],
        train_stats=stats,
        train_means={"kl_mean": kl, "kl_std": 1e-6},
    )


def test_sweep_summary_counts_success_and_kl_ratios():
    records = [
        fake_run("ours/hard/0.01", 0, -150.0, 0.05, 0.01),
        fake_run("ours/hard/0.01", 1, -250.0, 0.03, 0.03),  # a dip at the last evaluation: -183 over the last 3
        fake_run("ours/hard/0.01", 2, float("nan"), 0.04, 0.02),  # a diverged run is a failure
        fake_run("ours/soft/0.02", 0, -200.0, 0.01, 0.01, earlier_evals=-300.0),  # the threshold counts as success
    ]
    cells = {(c["mode"], c["epsilon_mean"]): c for c in epsilon_sweep.summarize(records, threshold=-200.0)["cells"]}
    hard, soft = cells[("hard", 0.01)], cells[("soft", 0.02)]
    assert (hard["n_success"], hard["n_seeds"], soft["n_success"]) == (1, 3, 1)
    assert (hard["n_success_last3"], soft["n_success_last3"]) == (2, 0)
    assert (hard["steps_to_threshold_median"], soft["steps_to_threshold_median"]) == (600, 1000)
    assert hard["final_mean"] == pytest.approx(-200.0)
    assert hard["kl_mean_over_eps"] == pytest.approx(4.0)
    assert hard["kl_mean_last10pct_over_eps"] == pytest.approx(2.0)
    assert not hard["kl_mean_within_2eps"] and soft["kl_mean_within_2eps"]
    assert soft["cv"] is None  # undefined for one seed


def test_bootstrap_interval_brackets_the_mean():
    values = np.random.default_rng(0).normal(-150, 20, size=10)
    low, high = common.bootstrap_ci(values)
    assert low < values.mean() < high
    assert (low, high) == common.bootstrap_ci(values)  # seeded: the published interval is reproducible
    assert high - low < 4 * values.std()


# ---------------------------------------------------------------- returns.py / epsilon_sweep.py runs, through the zoo


def returns_args(**kwargs: Any) -> argparse.Namespace:
    args: dict[str, Any] = dict(envs=["Pendulum-v1"], algos=["wpo"], seeds=["0"], steps=None, eval_freq=200, n_eval_episodes=1)
    args.update(defaults=False, overrides={})
    return argparse.Namespace(**{**args, **kwargs})


def test_specs_name_the_config_each_run_reads():
    """The zoo's own config, a temporary one with only the policy (--defaults), or one holding the entry of another
    version of the task where the zoo's file has none (rl-zoo3 tunes HalfCheetah as -v4)."""
    (wpo,) = returns.make_specs(returns_args(), done=set())
    assert "config_entry" not in wpo and wpo["steps"] == 20_000 and wpo["train_keys"] == common.WPO_TRAIN_KEYS
    (defaults,) = returns.make_specs(returns_args(algos=["sac"], defaults=True, steps=300), done=set())
    assert defaults["config_entry"] == {"policy": "MlpPolicy", "n_timesteps": 300}
    sac, wpo = returns.make_specs(returns_args(envs=["HalfCheetah-v5"], algos=["sac", "wpo"], steps=1000), done=set())
    assert sac["hyperparams_from"] == "HalfCheetah-v4"
    assert sac["config_entry"] == yaml.safe_load(common.zoo_file("sac").read_text())["HalfCheetah-v4"]
    assert "config_entry" not in wpo  # wpo.yml has HalfCheetah-v5
    assert returns.make_specs(returns_args(), done={("wpo", "Pendulum-v1", 0, 20_000)}) == []


def test_set_reads_values_as_the_zoo_params_do(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``--set`` values are Python literals where they parse as one (YAML kept ``1e-3`` a string, which the zoo took
    for a schedule and failed on), else text for the zoo to evaluate; an item without ``=`` is an error naming it."""
    kwargs = "policy_kwargs=dict(net_arch=[256, 256], n_critics=2)"
    argv = ["returns.py", "--set", "learning_rate=1e-3", "learning_starts=100", "target_aggregation=mean", kwargs]
    monkeypatch.setattr(sys, "argv", [*argv, "use_sde=False"])
    assert returns.parse_args().overrides == {
        "learning_rate": 0.001,
        "learning_starts": 100,
        "target_aggregation": "mean",
        "policy_kwargs": "dict(net_arch=[256, 256], n_critics=2)",
        "use_sde": False,
    }
    monkeypatch.setattr(sys, "argv", ["returns.py", "--set", "learning_rate:1e-3"])
    with pytest.raises(SystemExit):
        returns.parse_args()
    assert "--set: 'learning_rate:1e-3' is not KEY=VALUE" in capsys.readouterr().err


SEEN: list[Any] = []  # the RecorderSeen of the runs of a test


class RecorderSeen(common.EvalRecorder):
    """returns.py's callback, keeping the model and the evaluation env's first observation for the test."""

    def _on_training_start(self) -> None:
        super()._on_training_start()
        SEEN.append(self)
        first_obs = self.eval_env.reset()
        assert isinstance(first_obs, np.ndarray) and self.model.seed is not None
        self.first_eval_obs = first_obs[0]
        self.eval_env.seed(self.model.seed + returns.EVAL_SEED_OFFSET)  # as it was: the evaluations are unchanged


@pytest.mark.slow
@pytest.mark.parametrize("algo, defaults", [("wpo", False), ("sac", False), ("sac", True)])
def test_a_run_is_built_by_the_zoo_and_records_its_curve(algo, defaults, monkeypatch):
    """A returns.py run (epsilon_sweep.py's too): the model the zoo built from the entry and the overrides, the
    evaluation env seeded with seed + 10,000, the record with its curve, hyperparameters and WPO's statistics."""
    monkeypatch.setattr(common, "EvalRecorder", RecorderSeen)
    SEEN.clear()
    overrides = dict(learning_starts=200, buffer_size=1000) if algo == "wpo" else {}
    args = returns_args(algos=[algo], seeds=["3"], steps=400, defaults=defaults, overrides=overrides)
    (spec,) = returns.make_specs(args, done=set())
    spec["train_bin"] = 200
    record = returns.run(spec)
    th.set_num_threads(1)
    (recorder,) = SEEN
    model = recorder.model

    assert record["error"] is None and (record["algo"], record["env_id"], record["seed"], record["steps"]) == (
        algo,
        "Pendulum-v1",
        3,
        400,
    )
    assert [point["timesteps"] for point in record["curve"]] == [200, 400]
    assert set(record["curve"][0]) == {"timesteps", "train_wall_s", "train_cpu_s", "eval_mean", "eval_std", "eval_ep_length"}
    assert record["curve"][0]["eval_ep_length"] == 200 and record["n_eval_episodes"] == 1
    assert record["final_return"] == record["curve"][-1]["eval_mean"] and math.isfinite(record["final_return"])
    assert len(record["commit"]) >= 7 and record["started_utc"] and len(record["load_average_start"]) == 3
    assert isinstance(record["sb3_wpo_uncommitted_changes"], bool)
    assert model.num_timesteps == 400 and model.seed == 3

    # the evaluation env: the zoo's, reseeded (the zoo seeds it with the run's seed)
    assert np.allclose(recorder.first_eval_obs, gym.make("Pendulum-v1").reset(seed=3 + 10_000)[0])
    assert not np.allclose(recorder.first_eval_obs, gym.make("Pendulum-v1").reset(seed=3)[0])

    # the model got the entry (or the defaults) and the overrides; the record names them
    if defaults:
        assert record["hyperparams"] == {"n_timesteps": 400, "policy": "MlpPolicy"}
        assert model.lr_schedule(1.0) == 3e-4 and model.learning_starts == 100  # SAC's constructor defaults
    else:
        entry = common.raw_hyperparams(algo, "Pendulum-v1")
        assert record["hyperparams"] == common.hyperparams_for_json({**entry, **overrides})
        assert model.lr_schedule(1.0) == entry["learning_rate"] == 1e-3  # SAC's default is 3e-4, WPO's 1e-3
    if algo == "wpo":
        assert (model.num_samples, model.n_steps, model.train_freq.frequency) == (entry["num_samples"], 5, 2)  # the entry's
        assert (model.learning_starts, model.replay_buffer.buffer_size) == (200, 1000)
        assert record["train_stats"] and set(common.WPO_TRAIN_KEYS) <= set(record["train_stats"][-1])
        assert record["train_means"]["alpha_mean"] == pytest.approx(math.log1p(math.e**0) + 1e-8, rel=1e-4)
    else:
        assert record["train_stats"] == [] and record["train_means"] == {}


def test_a_run_shorter_than_the_entry_warm_up_records_its_clamp(monkeypatch):
    """TD3's Pendulum entry collects 10,000 steps before learning: in a shorter run (--quick) the warm-up ends with
    the run, as before the zoo built the runs, and the record says so."""
    monkeypatch.setattr(common, "EvalRecorder", RecorderSeen)
    SEEN.clear()
    (spec,) = returns.make_specs(returns_args(algos=["td3"], steps=200, overrides={"buffer_size": 500}), done=set())
    record = returns.run(spec)
    th.set_num_threads(1)
    assert SEEN[0].model.learning_starts == 200 and record["hyperparams"]["learning_starts"] == 200
    assert record["hyperparams"]["noise_type"] == "normal"  # the rest is the entry


def test_committed_results_still_summarize():
    """--report-only reads the committed records (made by the harness before the zoo built the runs)."""
    records = common.read_jsonl(common.RESULTS / "returns" / "runs.jsonl")
    assert records and returns.markdown_table(returns.summarize(records)).count("\n") > 2
    sweep = epsilon_sweep.all_records(common.RESULTS / "epsilon_sweep", "Pendulum-v1", 20_000)
    assert sweep and epsilon_sweep.markdown_tables(epsilon_sweep.summarize(sweep, threshold=-200.0))


def test_gradient_variance_estimators_are_unbiased_and_wpo_is_reparameterization():
    """benchmarks/gradient_variance.py: every estimator is unbiased for the value its relative variance divides by
    (∇J, or F·∇J for plain WPO), and rescaled WPO equals the reparameterization gradient sample by sample."""
    import gradient_variance

    for q_name, sigma in (("quadratic", 0.5), ("two_bumps", 2.0)):
        cell = gradient_variance.run_cell(q_name, sigma, n=4, repeats=4000, seed=0)
        assert cell["max_abs_wpo_minus_reparam"] < 1e-12
        for name in gradient_variance.ESTIMATORS:
            for param in gradient_variance.PARAMS:
                assert abs(cell[f"{name}/{param}/bias_z"]) < 5.0, (q_name, name, param)
        grad = cell["true_grad"]
        if q_name == "quadratic":  # −(a−1)² at μ = 0: ∇J = (2, −2σ)
            assert math.isclose(grad["mu"], 2.0) and math.isclose(grad["sigma"], -2 * sigma)
        assert cell["wpo/mu/expected"] == grad["mu"] and cell["wpo/sigma/expected"] == grad["sigma"]
        assert math.isclose(cell["wpo_plain/mu/expected"], grad["mu"] / sigma**2)
        assert math.isclose(cell["wpo_plain/sigma/expected"], 2 * grad["sigma"] / sigma**2)
        assert math.isclose(cell["wpo_plain/mu/rel_var"], cell["wpo/mu/rel_var"], rel_tol=1e-9)


# ---------------------------------------------------------------- campaign.py


def test_campaign_queue_order_and_names():

    runs = campaign.planned_runs()
    n_tasks = len(campaign.TASKS)
    humanoid, cartpole = "dm_control/humanoid-stand-v0", "dm_control/cartpole-swingup-v0"
    # round one: WPO and SAC seed 0 on every task, humanoid-stand first
    assert runs[:4] == [
        ("wpo", humanoid, 0, 500_000),
        ("sac", humanoid, 0, 500_000),
        ("wpo", cartpole, 0, 200_000),
        ("sac", cartpole, 0, 200_000),
    ]
    assert {(algo, seed) for algo, _, seed, _ in runs[: 2 * n_tasks]} == {("wpo", 0), ("sac", 0)}
    # then round two task by task, the smallest budget first (cartpole-swingup's 200k; humanoid-stand's 500k last)
    assert runs[2 * n_tasks : 2 * n_tasks + 4] == [
        ("wpo", cartpole, 1, 200_000),
        ("sac", cartpole, 1, 200_000),
        ("wpo", cartpole, 2, 200_000),
        ("wpo", "dm_control/walker-walk-v0", 1, 300_000),
    ]
    assert runs[5 * n_tasks - 3 : 5 * n_tasks] == [
        ("wpo", humanoid, 1, 500_000),
        ("sac", humanoid, 1, 500_000),
        ("wpo", humanoid, 2, 500_000),
    ]
    # then the probes, the cheaper first
    cheetah = "HalfCheetah-v5"
    probes = runs[5 * n_tasks : 5 * n_tasks + len(campaign.PROBES)]
    assert probes == [
        ("wpo-utd1", cheetah, 0, 150_000),
        ("wpo-std0.2", cheetah, 0, 150_000),
        ("wpo-utd1", humanoid, 0, 300_000),
    ]
    assert probes == campaign.PROBES
    # then the confirmation of the tuning screen's candidate: seed 0 on every task (where SAC leads first), then 1, 2
    confirmation = runs[5 * n_tasks + len(campaign.PROBES) :]
    assert confirmation == campaign.CONFIRMATION and len(confirmation) == 3 * n_tasks
    mujoco, control_suite = campaign.FAMILY_CANDIDATES["mujoco"], campaign.FAMILY_CANDIDATES["dm_control"]
    assert {mujoco, control_suite} <= set(campaign.CANDIDATES) <= set(campaign.VARIANTS)
    assert confirmation[:2] == [(mujoco, cheetah, 0, 300_000), (mujoco, "Walker2d-v5", 0, 300_000)]
    assert [run[2] for run in confirmation] == [seed for seed in (0, 1, 2) for _ in range(n_tasks)]
    last_two = [(control_suite, cartpole, 0, 200_000), (control_suite, humanoid, 0, 500_000)]
    assert confirmation[n_tasks - 2 : n_tasks] == last_two
    assert {algo for algo, env_id, _, _ in confirmation if env_id.startswith("dm_control/")} == {control_suite}
    assert {(env_id, steps) for _, env_id, _, steps in confirmation} == set(campaign.TASKS)
    assert set(campaign.VARIANTS) <= set(campaign.COLORS), "every variant has a color in the figures"
    assert len({campaign.run_name(*run) for run in runs}) == len(runs)


def fake_run_processes(campaign: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Replace the queue's run processes by fakes that end at their second poll; returns (run, alive) per start."""
    starts: list[tuple[str, int]] = []  # run, the queue's processes alive with it
    done: set[str] = set()

    class FakeRun:
        """A run process that ends at its second poll."""

        alive = 0

        def __init__(self, command: list[str], **_: Any):
            self.name = campaign.run_name(command[4], command[6], int(command[8]), int(command[10]))
            FakeRun.alive += 1
            starts.append((self.name, FakeRun.alive))
            self.pid, self.polls = 0, 0
            self.returncode: int | None = None

        def poll(self) -> int | None:
            self.polls += 1
            if self.polls < 2:
                return None
            FakeRun.alive -= 1
            done.add(self.name)
            self.returncode = 0
            return 0

    monkeypatch.setattr(common.subprocess, "Popen", FakeRun)
    monkeypatch.setattr(campaign, "finished", lambda: set(done))
    return starts


def test_campaign_queue_counts_and_skips_runs_held_by_other_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A restarted queue does not start a run that a live process holds, and counts it among its processes."""

    monkeypatch.setattr(campaign, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(campaign, "TASKS", [("Pendulum-v1", 300)])
    monkeypatch.setattr(campaign, "PROBES", [])
    monkeypatch.setattr(campaign, "CONFIRMATION", [])
    held_dir = tmp_path / "runs" / campaign.run_name("wpo", "Pendulum-v1", 0, 300)
    script = (
        f"import pathlib, sys, time; sys.path.insert(0, {str(BENCHMARKS)!r}); import campaign; "
        f"lock = campaign.hold_run_lock(pathlib.Path({str(held_dir)!r})); print('held', flush=True); time.sleep(3)"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    assert campaign.running_elsewhere(held_dir)
    with pytest.raises(SystemExit, match="running in another process"):
        campaign.hold_run_lock(held_dir)

    starts = fake_run_processes(campaign, monkeypatch)
    campaign.queue(argparse.Namespace(processes=2, eval_freq=100, save_freq=100, poll_s=0.05, first=[], defer=[]))
    holder.wait()
    names = [name for name, _ in starts]
    assert len(names) == 5 and len(set(names)) == 5
    assert names[-1] == held_dir.name, "the held run starts once its holder has ended (3 s; the others take < 1 s)"
    assert all(alive == 1 for _, alive in starts[:-1]), "while held, the run takes one of the queue's 2 processes"
    assert names[0] == campaign.run_name("sac", "Pendulum-v1", 0, 300)


def test_campaign_queue_starts_deferred_runs_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A deferred run waits for every other run, even when it has a checkpoint (those otherwise go first)."""

    monkeypatch.setattr(campaign, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(campaign, "TASKS", [("Pendulum-v1", 300)])
    probe = ("wpo-utd1", "Pendulum-v1", 0, 300)
    monkeypatch.setattr(campaign, "PROBES", [probe])
    monkeypatch.setattr(campaign, "CONFIRMATION", [])
    monkeypatch.setattr(campaign, "progress", lambda name: 100 if name == campaign.run_name(*probe) else 0)
    starts = fake_run_processes(campaign, monkeypatch)
    campaign.queue(argparse.Namespace(processes=1, eval_freq=100, save_freq=100, poll_s=0.01, first=[], defer=[]))
    assert starts[0][0] == campaign.run_name(*probe), "resumable runs go first"

    starts = fake_run_processes(campaign, monkeypatch)
    deferred = [campaign.run_name(*probe)]
    campaign.queue(argparse.Namespace(processes=1, eval_freq=100, save_freq=100, poll_s=0.01, first=[], defer=deferred))
    assert [name for name, _ in starts][-1] == campaign.run_name(*probe) and len(starts) == 6


def test_campaign_queue_starts_runs_named_first_before_resumable_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A run named in ``--first`` goes before the plan and before a resumable run; the rest keep their order."""

    monkeypatch.setattr(campaign, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(campaign, "TASKS", [("Pendulum-v1", 300)])
    probes = [("wpo-utd1", "Pendulum-v1", 0, 300), ("wpo-std0.2", "Pendulum-v1", 0, 300)]
    monkeypatch.setattr(campaign, "PROBES", probes)
    monkeypatch.setattr(campaign, "CONFIRMATION", [])
    resumable = campaign.run_name("sac", "Pendulum-v1", 1, 300)
    monkeypatch.setattr(campaign, "progress", lambda name: 100 if name == resumable else 0)
    starts = fake_run_processes(campaign, monkeypatch)
    first = [campaign.run_name(*probes[1])]
    campaign.queue(argparse.Namespace(processes=1, eval_freq=100, save_freq=100, poll_s=0.01, first=first, defer=[]))
    plan = [campaign.run_name(*spec) for spec in campaign.planned_runs()]
    rest = [name for name in plan if name not in [*first, resumable]]
    assert [name for name, _ in starts] == [*first, resumable, *rest]


def test_campaign_status_tells_runs_without_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    """A run never started (or not yet at its first checkpoint) is not shown as checkpointed at 0 steps."""

    monkeypatch.setattr(campaign, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(campaign, "OUT", tmp_path / "out")
    monkeypatch.setattr(campaign, "TASKS", [("Pendulum-v1", 300)])
    monkeypatch.setattr(campaign, "PROBES", [])
    monkeypatch.setattr(campaign, "CONFIRMATION", [])
    checkpointed = tmp_path / "runs" / campaign.run_name("sac", "Pendulum-v1", 0, 300) / "checkpoint"
    checkpointed.mkdir(parents=True)
    (checkpointed / "state.json").write_text(json.dumps({"timesteps": 200}))
    campaign.status()
    lines = dict(line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines())
    assert lines[campaign.run_name("sac", "Pendulum-v1", 0, 300)] == "200 / 300 steps (checkpointed)"
    assert lines[campaign.run_name("wpo", "Pendulum-v1", 0, 300)] == "no checkpoint"


def test_campaign_snapshot_keeps_the_curve_of_a_run_whose_checkpoint_is_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A run whose checkpoint vanished keeps its earlier snapshot, marked lost; a checkpoint or a record replaces it."""

    monkeypatch.setattr(campaign, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(campaign, "OUT", tmp_path / "out")
    monkeypatch.setattr(campaign, "TASKS", [("Pendulum-v1", 300)])
    monkeypatch.setattr(campaign, "PROBES", [])
    monkeypatch.setattr(campaign, "CONFIRMATION", [])
    names = [campaign.run_name(algo, "Pendulum-v1", 0, 300) for algo in ("wpo", "sac")]
    curve = [{"timesteps": 100, "eval_mean": -1000.0}]
    earlier = [{"name": name, "algo": name[:3], "env_id": "Pendulum-v1", "seed": 0, "curve": curve} for name in names]
    common.write_json(tmp_path / "out" / "in_progress.json", {"runs": earlier})
    restarted = tmp_path / "runs" / names[1] / "checkpoint"
    restarted.mkdir(parents=True)
    (restarted / "state.json").write_text(json.dumps({"timesteps": 200, "curve": curve * 2}))
    campaign_report.snapshot()
    runs = {run["name"]: run for run in json.loads((tmp_path / "out" / "in_progress.json").read_text())["runs"]}
    assert runs[names[0]]["lost"] and runs[names[0]]["curve"] == curve
    assert not runs[names[1]].get("lost") and runs[names[1]]["timesteps"] == 200

    monkeypatch.setattr(campaign, "finished", lambda: {names[0]})
    campaign_report.snapshot()
    runs = {run["name"]: run for run in json.loads((tmp_path / "out" / "in_progress.json").read_text())["runs"]}
    assert list(runs) == [names[1]], "a finished run's record replaces its snapshot"


def test_campaign_variant_runs_the_zoo_entry_with_its_overrides(tmp_path: Path):

    model, hyperparams = campaign.make_experiment("wpo-utd1", "Pendulum-v1", 0, 100, tmp_path).setup_experiment()
    assert model.train_freq.frequency == 1 and hyperparams["train_freq"] == 1  # the reference's example has 4
    assert model.num_samples == 20 and model.n_steps == 5, "the reference's example replaces the entry's settings"
    entry = common.raw_hyperparams("wpo", "Pendulum-v1")
    assert hyperparams["n_timesteps"] == entry["n_timesteps"], "the entry's budget is kept"
    assert campaign_report.gradient_updates("wpo-utd1", "dm_control/humanoid-stand-v0", [50_000]) == [40_000]
    model, hyperparams = campaign.make_experiment("wpo-std0.2", "HalfCheetah-v5", 0, 100, tmp_path).setup_experiment()
    assert model.actor.init_std == 0.2 and model.actor.layer_norm and model.actor.net_arch == [256, 256, 256]
    assert hyperparams["target_aggregation"] == "max" and model.num_samples == 20, "the rest of the reference's example"
    reference = campaign.REFERENCE_EXAMPLE["policy_kwargs"]
    assert campaign.VARIANTS["wpo-std0.2"][1]["policy_kwargs"] == reference.removesuffix(")") + ", init_std=0.2)"
    # The tanh variant is the candidate with one factor changed
    model, _ = campaign.make_experiment("wpo-s1u1-ln2-tanh", "HalfCheetah-v5", 0, 100, tmp_path).setup_experiment()
    assert model.actor.tanh_actions and model.num_samples == 1 and model.actor.net_arch == [256, 256]
    candidate, tanh = campaign.VARIANTS["wpo-s1u1-ln2"][1], campaign.VARIANTS["wpo-s1u1-ln2-tanh"][1]
    assert tanh == {**candidate, "policy_kwargs": candidate["policy_kwargs"].removesuffix(")") + ", tanh_actions=True)"}


# What a campaign variant leaves to wpo.yml's entry: the budget, the warm-up, the policy class, the env wrapper
LEFT_TO_THE_ENTRY = {"n_timesteps", "policy", "learning_starts", "env_wrapper"}


def test_campaign_variants_run_the_same_settings_whatever_wpo_yml_or_the_defaults_hold():
    """A variant (and so a finished run's label, a resumed run) means the same settings after wpo.yml's entries or
    WPO's defaults change: every WPO variant sets each key the family entries tune, each default that changed once,
    and its networks in full (a checkpoint's saved policy_kwargs rebuild its networks)."""
    entries = yaml.safe_load(common.zoo_file("wpo").read_text())
    for family in campaign.FAMILY_CANDIDATES:
        assert set(entries[family]) - LEFT_TO_THE_ENTRY <= set(campaign.REFERENCE_EXAMPLE), family
    assert set(EARLIER_DEFAULTS) <= set(campaign.REFERENCE_EXAMPLE)
    for name, (algo, overrides) in campaign.VARIANTS.items():
        if algo == "wpo":
            assert set(campaign.REFERENCE_EXAMPLE) <= set(overrides), f"{name} leaves some of its settings to wpo.yml"
            assert set(EARLIER_POLICY_DEFAULTS) <= set(policy_kwargs_of(overrides["policy_kwargs"])), (
                f"{name} leaves its networks to the defaults"
            )


def test_wpo_yml_ships_each_familys_candidate():
    """wpo.yml's entry of each campaign task is its family's candidate: the candidate's settings change nothing in it,
    so that the README's results rows (the candidates' runs) are the entries' results."""
    for env_id, _ in campaign.TASKS:
        entry = {k: v for k, v in common.raw_hyperparams("wpo", env_id).items() if k != "hyperparams_from"}
        overrides = campaign.VARIANTS[campaign.candidate(env_id)][1]
        assert {**entry, **overrides} == entry, env_id
    dm_control, mujoco = (campaign.VARIANTS[campaign.FAMILY_CANDIDATES[family]][1] for family in ("dm_control", "mujoco"))
    assert dm_control != mujoco


def test_campaign_reports_wpo_yml_s_entry_per_task_and_says_where_it_has_not_run():
    def record(algo: str, env_id: str, last: float) -> dict[str, Any]:
        return {"algo": algo, "env_id": env_id, "curve": [{"eval_mean": last}] * 3}

    humanoid, cartpole, hopper = "dm_control/humanoid-stand-v0", "dm_control/cartpole-swingup-v0", "Hopper-v5"
    mujoco, dm_control = campaign.FAMILY_CANDIDATES["mujoco"], campaign.FAMILY_CANDIDATES["dm_control"]
    records = [record("sac", humanoid, 440.0), record("wpo", humanoid, 6.0)]
    records += [record("sac", cartpole, 850.0), record(dm_control, cartpole, 860.0), record(mujoco, cartpole, 100.0)]
    records += [record("sac", hopper, 2000.0), record(mujoco, hopper, 3000.0), record(dm_control, hopper, 10.0)]
    records += [record(mujoco, "Walker2d-v5", 4000.0)]  # no SAC run: no row
    rows = {row["env_id"]: row for row in campaign_report.shipped_verdicts(records)}
    assert list(rows) == [humanoid, cartpole, hopper], "the campaign's order"
    assert (rows[humanoid]["algo"], rows[humanoid]["wpo_last3"], rows[humanoid]["verdict"]) == (dm_control, [], "not run")
    assert (rows[cartpole]["algo"], rows[cartpole]["verdict"]) == (dm_control, "level"), "the family's candidate only"
    assert (rows[hopper]["algo"], rows[hopper]["verdict"]) == (mujoco, "ahead")
    assert campaign_report.verdict_cell(rows[humanoid]) == "not run"
    assert campaign_report.verdict_cell(rows[hopper]) == "ahead (so far: 1 WPO, 1 SAC seeds)"


def kill_after_a_checkpoint(monkeypatch: pytest.MonkeyPatch, step_of_the_kill: int) -> None:
    """Make a campaign run raise KeyboardInterrupt at ``step_of_the_kill``, after that step's evaluation."""
    original = campaign.RunCheckpoint._on_step

    def killed(self: Any) -> bool:
        result = original(self)
        if self.num_timesteps == step_of_the_kill:
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(campaign.RunCheckpoint, "_on_step", killed)


def as_the_harness_before_saved_it(run_dir: Path) -> None:
    """Move the run's newest checkpoint to the layout of the harness before this runner: <run dir>/checkpoint/
    {model.zip, replay_buffer.pkl, state.json}, with nothing in <run dir>/checkpoints."""
    checkpoint = campaign.latest_checkpoint(run_dir)
    assert checkpoint is not None and checkpoint.replay_buffer is not None
    (run_dir / "checkpoint").mkdir()
    shutil.copy(checkpoint.model, run_dir / "checkpoint" / "model.zip")
    shutil.copy(checkpoint.replay_buffer, run_dir / "checkpoint" / "replay_buffer.pkl")
    (run_dir / "checkpoint" / "state.json").write_text(json.dumps(checkpoint.state))
    shutil.rmtree(run_dir / campaign.CHECKPOINTS)


@pytest.mark.parametrize("layout", ["checkpoints", "before"])
def test_campaign_run_resumes_from_its_checkpoint(layout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A run killed after a checkpoint goes on from ``find_latest_checkpoint``'s step of SB3's CheckpointCallback (or
    from a checkpoint of the harness before): the curve continues, the timestep count is kept, the transitions
    collected before the checkpoint are in the buffer, and each segment records the commit it ran."""
    monkeypatch.setattr(campaign, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(campaign, "OUT", tmp_path / "out")
    original = campaign.RunCheckpoint._on_step
    kill_after_a_checkpoint(monkeypatch, 350)
    with pytest.raises(KeyboardInterrupt):
        campaign.run("wpo", "Pendulum-v1", 0, 400, eval_freq=100, n_eval_episodes=1, save_freq=100)
    run_dir = tmp_path / "runs" / campaign.run_name("wpo", "Pendulum-v1", 0, 400)
    saved = sorted(path.name for path in (run_dir / campaign.CHECKPOINTS).iterdir())
    assert [name for name in saved if "replay_buffer" in name] == ["rl_model_replay_buffer_300_steps.pkl"], "older dropped"
    assert {f"rl_model_{step}_steps.zip" for step in (100, 200, 300)} <= set(saved), "older models stay"
    checkpoint = campaign.latest_checkpoint(run_dir)
    assert checkpoint is not None and checkpoint.replay_buffer is not None and checkpoint.state["timesteps"] == 300
    assert [point["timesteps"] for point in checkpoint.state["curve"]] == [100, 200, 300]
    assert not (tmp_path / "out" / "runs.jsonl").exists()
    with checkpoint.replay_buffer.open("rb") as file:  # CheckpointCallback saves before the step's transition is stored
        assert pickle.load(file).size() == 299, "the transitions collected up to the checkpoint are kept"
    if layout == "before":
        as_the_harness_before_saved_it(run_dir)
    monkeypatch.setattr(campaign.RunCheckpoint, "_on_step", original)
    resumed: list[tuple[int, int]] = []
    resume = campaign.resumed_model

    def keep_what_was_resumed(*args: Any) -> tuple[Any, dict[str, Any]]:
        model, hyperparams = resume(*args)
        resumed.append((model.num_timesteps, model.replay_buffer.size()))
        return model, hyperparams

    monkeypatch.setattr(campaign, "resumed_model", keep_what_was_resumed)
    campaign.run("wpo", "Pendulum-v1", 0, 400, eval_freq=100, n_eval_episodes=1, save_freq=100)
    assert resumed == [(300, 299)], "the model goes on from the checkpoint's timesteps, with its replay buffer"
    (record,) = common.read_jsonl(tmp_path / "out" / "runs.jsonl")
    assert [point["timesteps"] for point in record["curve"]] == [100, 200, 300, 400]
    assert [segment["from_timesteps"] for segment in record["segments"]] == [0, 300]
    assert all(segment["commit"] for segment in record["segments"])
    assert record["curve"][-1]["train_cpu_s"] > record["curve"][1]["train_cpu_s"]
    from sb3_wpo import WPO

    model = WPO.load(run_dir / campaign.CHECKPOINTS / "rl_model_400_steps.zip")
    assert model.num_timesteps == 400
    assert not list(run_dir.glob("*/*replay_buffer*")), "a finished run drops its buffers"


def test_campaign_curve_records_the_training_statistics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Each evaluation point carries the last train() call's statistics, to tell why a run stalls."""

    monkeypatch.setattr(campaign, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(campaign, "OUT", tmp_path / "out")
    campaign.run("wpo", "Pendulum-v1", 0, 1200, eval_freq=600, n_eval_episodes=1, save_freq=600)  # learning_starts 1000
    (record,) = common.read_jsonl(tmp_path / "out" / "runs.jsonl")
    before_updates, after_updates = record["curve"]
    assert "pi_std_min" not in before_updates
    assert after_updates["pi_std_min"] > 0 and np.isfinite(after_updates["q_mean"]) and after_updates["n_updates"] > 0


def test_campaign_diagnoses_an_unfinished_wpo_run_from_its_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):

    monkeypatch.setattr(campaign, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(campaign, "OUT", tmp_path / "out")
    monkeypatch.setattr(campaign, "TASKS", [("Pendulum-v1", 400)])
    monkeypatch.setitem(campaign.VARIANTS, "wpo", ("wpo", {}))  # the Pendulum-v1 entry as it is: a quick run
    kill_after_a_checkpoint(monkeypatch, 300)
    with pytest.raises(KeyboardInterrupt):
        campaign.run("wpo", "Pendulum-v1", 0, 400, eval_freq=100, n_eval_episodes=1, save_freq=200)
    earlier = {"name": "an earlier run", "timesteps": 100}
    common.write_json(tmp_path / "out" / "diagnostics.json", {"runs": [earlier], "batch_size": 8, "meta": {"commit": "x"}})
    campaign_report.diagnose(batch_size=64)
    campaign_report.diagnose(batch_size=64)  # the same checkpoint again: replaced, not added
    kept, entry = json.loads((tmp_path / "out" / "diagnostics.json").read_text())["runs"]
    assert kept == {**earlier, "batch_size": 8, "meta": {"commit": "x"}}, "earlier diagnoses stay, with their provenance"
    assert entry["batch_size"] == 64 and entry["meta"]["commit"]
    assert entry["name"] == campaign.run_name("wpo", "Pendulum-v1", 0, 400) and entry["timesteps"] == 200
    assert entry["pi_std_quantiles_5_50_95"][1] == pytest.approx(0.5, abs=0.01)  # the initial std: no update yet
    assert 0.0 <= entry["sampled_actions_clipped"] <= 1.0 and entry["alpha_std"] == pytest.approx(1e4)
    assert 0.0 < entry["pi_means_pushed_outward"] < 1.0 and entry["tanh_actions"] is False


def test_campaign_diagnoses_a_named_screen_run_with_tanh_actions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``diagnose --runs``: a run outside the plan (a screen's), with tanh actions: none of its means or samples sits
    beyond [-1, 1] at init, and the tanh-saturated share is what is counted."""
    monkeypatch.setattr(campaign, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(campaign, "OUT", tmp_path / "out")
    kill_after_a_checkpoint(monkeypatch, 300)
    with pytest.raises(KeyboardInterrupt):
        campaign.run("wpo-s1u1-ln2-tanh", "Pendulum-v1", 0, 400, eval_freq=100, n_eval_episodes=1, save_freq=200)
    name = campaign.run_name("wpo-s1u1-ln2-tanh", "Pendulum-v1", 0, 400)
    campaign_report.diagnose([name], batch_size=64)
    (entry,) = json.loads((tmp_path / "out" / "diagnostics.json").read_text())["runs"]
    assert entry["name"] == name and entry["tanh_actions"] is True
    assert entry["pi_means_outside_bounds"] == 0.0 and entry["sampled_actions_clipped"] < 0.01  # N(≈0, 0.5) in u
    with pytest.raises(SystemExit, match="not a run folder name"):
        campaign_report.diagnose(["nonsense_Pendulum-v1_s0_400"])
    campaign_report.snapshot([name])  # the screen's curve so far, for its report
    (partial,) = json.loads((tmp_path / "out" / "in_progress.json").read_text())["runs"]
    fields = (partial["name"], partial["algo"], partial["env_id"], partial["timesteps"])
    assert fields == (name, "wpo-s1u1-ln2-tanh", "Pendulum-v1", 200)


def test_campaign_run_names_parse_back():
    for run in [("wpo-s1u1-ln2-2q", "dm_control/humanoid-stand-v0", 2, 500_000), ("sac", "HalfCheetah-v5", 0, 300_000)]:
        assert campaign.parse_run_name(campaign.run_name(*run)) == run
    for bad in ("wpo_HalfCheetah-v5_300000", "nonsense_HalfCheetah-v5_s0_300000"):
        with pytest.raises(SystemExit, match="not a run folder name"):
            campaign.parse_run_name(bad)


def test_campaign_measures_the_exploration_noise_of_finished_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Finished runs whose final model is still on the machine; not a run without it or one stopped short."""

    monkeypatch.setattr(campaign, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(campaign, "OUT", tmp_path / "out")
    monkeypatch.setitem(campaign.CONFIGS, "sac", None)  # the zoo's own SAC config has Pendulum-v1
    for algo in ("wpo", "sac"):
        campaign.run(algo, "Pendulum-v1", 0, 200, eval_freq=200, n_eval_episodes=1, save_freq=200)
    records = common.read_jsonl(tmp_path / "out" / "runs.jsonl")
    common.append_jsonl(tmp_path / "out" / "runs.jsonl", {**records[0], "name": "gone", "steps": 200})
    shutil.copytree(tmp_path / "runs" / records[0]["name"], tmp_path / "runs" / "short")
    common.append_jsonl(tmp_path / "out" / "runs.jsonl", {**records[0], "name": "short", "steps": 400})
    campaign_report.action_noise(n_states=50, n_samples=4)
    measured = json.loads((tmp_path / "out" / "action_noise.json").read_text())
    wpo, sac = measured["runs"]
    assert (wpo["algo"], sac["algo"]) == ("wpo", "sac") and measured["n_samples"] == 4 and measured["meta"]["commit"]
    # No updates yet (learning_starts > 200): WPO's clipped N(μ≈0, 0.5), SAC's tanh(N(μ≈0, 1)) around tanh(μ)
    assert wpo["action_noise_rms"] == pytest.approx(0.47, abs=0.08)
    assert sac["action_noise_rms"] == pytest.approx(0.63, abs=0.1)
    assert 0.0 < wpo["stochastic_actions_at_bounds"] < 0.2 and sac["deterministic_actions_at_bounds"] == 0.0


def test_campaign_q_bias_sets_the_critics_against_discounted_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``qbias``: each finished run's critics against the Monte-Carlo return of its policy, on the steps whose return
    a time limit does not cut by more than the tolerance; a named run at its newest checkpoint."""
    returns = campaign_report.discounted_returns(np.array([1.0, 2.0, 4.0]), gamma=0.5)
    np.testing.assert_allclose(returns, [1 + 0.5 * 2 + 0.25 * 4, 2 + 0.5 * 4, 4])
    assert campaign_report.complete_steps(200, terminated=True, gamma=0.99, tolerance=0.01) == 200
    assert campaign_report.complete_steps(1000, terminated=False, gamma=0.99, tolerance=0.01) == 1000 - 459
    assert campaign_report.complete_steps(200, terminated=False, gamma=0.99, tolerance=0.01) == 0

    monkeypatch.setattr(campaign, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(campaign, "OUT", tmp_path / "out")
    monkeypatch.setitem(campaign.CONFIGS, "sac", None)  # the zoo's own SAC config has Pendulum-v1
    for algo in ("wpo", "sac"):
        campaign.run(algo, "Pendulum-v1", 0, 200, eval_freq=200, n_eval_episodes=1, save_freq=200)
    campaign_report.q_bias(episodes=2, tolerance=0.3)  # γ = 0.99: the first 200 - 120 steps of each 200-step episode
    wpo, sac = json.loads((tmp_path / "out" / "q_bias.json").read_text())["runs"]
    assert (wpo["algo"], sac["algo"], wpo["n_critics"], sac["n_critics"]) == ("wpo", "sac", 1, 2)
    for entry in (wpo, sac):
        assert entry["steps_measured"] == 2 * 80 and entry["episode_length_mean"] == 200
        assert entry["mc_return_mean"] < 0 < entry["episode_return_mean"] + 2000  # Pendulum's costs, 200 steps
        assert entry["relative_bias"] == pytest.approx((entry["q_mean"] - entry["mc_return_mean"]) / -entry["mc_return_mean"])
    assert sac["q_min_mean"] <= sac["q_mean"]
    campaign_report.q_bias([wpo["name"]], episodes=1, tolerance=0.3)  # measured again: replaces, not appends
    assert len(json.loads((tmp_path / "out" / "q_bias.json").read_text())["runs"]) == 2
    assert campaign_report.q_bias_table([]) == []
    row = campaign_report.q_bias_table([wpo])[-1]
    assert row.startswith(f"| {wpo['name']} | 200 | 1 | 200, ") and row.endswith(f"| {wpo['relative_bias']:+.0%} |")


def test_campaign_mean_push_tells_which_way_the_policy_loss_moves_each_mean():

    mean = th.tensor([[0.5, -0.5, 1.5, -2.0]])  # one state, 4 action dimensions
    q_grads = th.tensor([[[0.1, 0.3, 0.0, -0.2]], [[0.2, -0.4, 0.0, 0.1]]])  # N=2 samples
    beyond = campaign_report.at_bounds(mean, tanh_actions=False)
    push = campaign_report.mean_push(mean, q_grads, beyond)  # steps: +0.3 (out), -0.1 (out), 0 (none), -0.1 (out)
    assert push["pi_means_pushed_outward"] == pytest.approx(3 / 4)
    assert push["pi_means_beyond_bounds_pushed_outward"] == pytest.approx(1 / 2)
    assert push["pi_means_beyond_bounds_without_gradient"] == pytest.approx(1 / 2)
    inside = campaign_report.mean_push(mean[:, :2], q_grads[..., :2], beyond[:, :2])
    assert math.isnan(inside["pi_means_beyond_bounds_pushed_outward"])


def test_campaign_bounds_of_clipped_and_tanh_actions():
    """Clipped actions are at a bound beyond [-1, 1]; tanh actions where tanh saturates (|tanh u| > 0.99, u ≈ 2.65)."""
    u = th.tensor([0.5, 1.5, 2.0, 3.0, -3.0])
    assert campaign_report.at_bounds(u, tanh_actions=False).tolist() == [False, True, True, True, True]
    assert campaign_report.at_bounds(u, tanh_actions=True).tolist() == [False, False, False, True, True]


def test_campaign_counts_the_gradient_updates_of_each_config():

    humanoid = "dm_control/humanoid-stand-v0"
    assert campaign_report.gradient_updates("wpo", humanoid, [5_000, 10_000, 50_000]) == [0, 0, 10_000]  # 0.25 per step
    assert campaign_report.gradient_updates("sac", humanoid, [50_000]) == [40_000]  # one per step after the warm-up
    recorded = {"learning_starts": 100, "train_freq": 2, "gradient_steps": 4}
    assert campaign_report.gradient_updates("wpo", humanoid, [1_100], recorded) == [2_000]


def test_campaign_checkpoint_survives_a_kill_between_renames(tmp_path: Path):

    (tmp_path / "checkpoint.old").mkdir()
    (tmp_path / "checkpoint.old" / "state.json").write_text('{"timesteps": 100}')
    assert campaign.latest_checkpoint(tmp_path).model == tmp_path / "checkpoint.old" / "model.zip"  # type: ignore[union-attr]
    (tmp_path / "checkpoint").mkdir()  # a folder without state.json is incomplete
    assert campaign.latest_checkpoint(tmp_path).model == tmp_path / "checkpoint.old" / "model.zip"  # type: ignore[union-attr]
    assert campaign.latest_checkpoint(tmp_path / "nothing") is None


def test_campaign_summary_counts_steps_to_the_threshold():

    def record(seed: int, evals: list[float]) -> dict[str, Any]:
        curve = [{"timesteps": 10_000 * (i + 1), "eval_mean": value} for i, value in enumerate(evals)]
        env_id = "dm_control/humanoid-stand-v0"  # threshold 100
        return {
            "env_id": env_id,
            "algo": "sac",
            "steps": 30_000,
            "seed": seed,
            "curve": curve,
            "final_return": evals[-1],
            "train_cpu_s": 3600.0,
            "hyperparams": {"learning_starts": 5_000, "train_freq": 4, "gradient_steps": 2},
        }

    (row,) = campaign_report.summarize(
        [record(0, [5.0, 150.0, 90.0]), record(1, [5.0, 6.0, 120.0]), record(2, [5.0, 6.0, 7.0])]
    )
    assert row["seeds_reaching_threshold"] == 2 and row["steps_to_threshold_median"] == 25_000
    assert row["updates_to_threshold_median"] == (25_000 - 5_000) * 2 / 4, "as the run's own hyperparameters make them"
    assert row["last3_mean"] == pytest.approx(np.mean([(5 + 150 + 90) / 3, (5 + 6 + 120) / 3, 6.0]))


def test_campaign_verdict_needs_every_seed_beyond_the_margin():

    def record(algo: str, env_id: str, last: float) -> dict[str, Any]:
        return {"algo": algo, "env_id": env_id, "curve": [{"eval_mean": last}] * 3}

    cartpole, walker, cheetah = "dm_control/cartpole-swingup-v0", "dm_control/walker-walk-v0", "dm_control/cheetah-run-v0"
    records = [record("wpo", cartpole, 800.0), record("wpo", cartpole, 850.0), record("sac", cartpole, 700.0)]
    records += [record("wpo", walker, 800.0), record("wpo", walker, 500.0), record("sac", walker, 700.0)]
    records += [record("wpo", cheetah, 300.0), record("sac", cheetah, 310.0), record("wpo-utd1", cheetah, 900.0)]
    records += [record("wpo", "HalfCheetah-v5", 3000.0)]  # no SAC run yet: no verdict
    humanoid = "dm_control/humanoid-stand-v0"
    records += [record("wpo", humanoid, 5.0), record("wpo", humanoid, 6.0), record("sac", humanoid, 440.0)]
    rows = {row["env_id"]: row for row in campaign_report.verdicts(records)}
    assert set(rows) == {cartpole, walker, cheetah, humanoid} and rows[humanoid]["verdict"] == "behind"
    assert rows[cartpole]["verdict"] == "ahead" and rows[walker]["verdict"] == "level"
    assert rows[cheetah]["verdict"] == "level", "within 5%; a probe is not WPO"
    assert not rows[cartpole]["all_seeds"]
    variant = campaign_report.verdicts(records, "wpo-utd1")  # a candidate's own verdicts, against the same SAC seeds
    assert [(row["env_id"], row["algo"], row["verdict"]) for row in variant] == [(cheetah, "wpo-utd1", "ahead")]


def test_campaign_compares_a_probe_with_every_seed_at_its_budget():
    """A probe's last evaluation beside every WPO and SAC seed's at the same step, not at their longer budgets."""

    def record(algo: str, seed: int, evals: list[float]) -> dict[str, Any]:
        curve = [{"timesteps": 10_000 * (i + 1), "eval_mean": value} for i, value in enumerate(evals)]
        return {"algo": algo, "env_id": "HalfCheetah-v5", "seed": seed, "curve": curve}

    records = [record("sac", 1, [7.0, 8.0, 9.0]), record("wpo", 0, [1.0, 2.0, 3.0]), record("sac", 0, [4.0, 5.0, 6.0])]
    records += [record("wpo-std0.2", 0, [0.5, 1.5]), record("wpo-utd1", 1, [10.0, 11.0, 12.0, 13.0])]
    records += [record(candidate, 0, [1.0, 2.0, 3.0]) for candidate in campaign.CANDIDATES]
    rows = {row["algo"]: row for row in campaign_report.probe_comparisons(records)}
    assert set(rows) == {"wpo-std0.2", "wpo-utd1"}, "WPO, SAC and the candidates (verdict rows) are not probes"
    assert rows["wpo-std0.2"] == {
        "algo": "wpo-std0.2",
        "env_id": "HalfCheetah-v5",
        "seed": 0,
        "timesteps": 20_000,
        "eval_mean": 1.5,
        "wpo_eval_means": {0: 2.0},
        "sac_eval_means": {0: 5.0, 1: 8.0},
    }
    assert list(rows["wpo-std0.2"]["sac_eval_means"]) == [0, 1], "seeds in order"
    assert rows["wpo-utd1"]["wpo_eval_means"] == {} and rows["wpo-utd1"]["sac_eval_means"] == {}, "no run reached 40k"


def test_campaign_report_tables_the_diagnoses_and_the_exploration_noise():
    """The diagnosis and noise tables come from their json alone: fields an older diagnosis lacks read —, the means
    pushed back in are the rest of those beyond the bounds, a probe has its own row and no verdict."""
    humanoid, walker = "dm_control/humanoid-stand-v0", "dm_control/walker-walk-v0"
    older = {"name": campaign.run_name("wpo", humanoid, 1, 500_000), "timesteps": 1_000, "n_updates": 250, "batch_size": 64}
    older |= {"pi_mean_abs": 1.2, "sampled_actions_clipped": 0.5, "buffer_reward_mean": 0.005, "buffer_reward_max": 0.9}
    newer = {**older, "timesteps": 2_000, "pi_means_outside_bounds": 0.55, "pi_std_quantiles_5_50_95": [0.49, 0.5, 0.51]}
    newer |= {"dq_da_norm_mean": 0.004, "pi_means_beyond_bounds_pushed_outward": 0.4}
    newer |= {"pi_means_beyond_bounds_without_gradient": 0.35}
    table = campaign_report.diagnosis_table([newer, older])
    assert "64 replay states" in table[1]
    assert table[5:] == [
        "| humanoid-stand-v0 WPO, reference example seed 1 | 1,000 | 250 | — | 1.20 | — | 50% | — | — | 0.005 (0.90) |",
        "| humanoid-stand-v0 WPO, reference example seed 1 | 2,000 | 250 | 0.49 / 0.50 / 0.51 | 1.20 | 55% | 50% | 0.004 "
        "| 40% / 25% / 35% | 0.005 (0.90) |",
    ]
    assert campaign_report.diagnosis_table([]) == []

    def measured(algo: str, seed: int, rms: float, at_bound: float) -> dict[str, Any]:
        entry = {"name": "", "algo": algo, "env_id": walker, "seed": seed, "timesteps": 300_000, "action_noise_rms": rms}
        return entry | {"deterministic_actions_at_bounds": at_bound}

    runs = [measured("wpo", 1, 0.3, 0.6), measured("sac", 0, 0.2, 0.01), measured("wpo", 0, 0.25, 0.5)]
    runs.append({**measured("wpo-std0.2", 0, 0.1, 0.4), "timesteps": 150_000})
    verdict = {"env_id": walker, "wpo_last3": [1.0, 2.0], "sac_last3": [3.0], "verdict": "behind", "all_seeds": False}
    table = campaign_report.noise_table({"runs": runs, "n_states": 1000, "n_samples": 20}, [verdict])
    assert "1,000 steps" in table[1] and "20 stochastic actions" in table[1]
    assert table[5:] == [
        f"| {walker} | WPO | s0 0.25, s1 0.30 / s0 0.20 | s0 50%, s1 60% / s0 1% | behind (so far: 2 WPO, 1 SAC seeds) |",
        f"| {walker} | wpo-std0.2 at 150,000 | s0 0.10 / — | s0 40% / — | a probe: see the probe table |",
    ]


def test_campaign_report_draws_every_task_in_one_overview(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The overview has a panel per planned task, titled with where it stands: verdict (on how many seeds), running,
    or not started; the report writes it beside the per-task figures."""

    def record(algo: str, env_id: str, seed: int, last: float) -> dict[str, Any]:
        curve = [{"timesteps": 10_000 * (i + 1), "eval_mean": last} for i in range(3)]
        return {"algo": algo, "env_id": env_id, "seed": seed, "steps": 30_000, "curve": curve, "final_return": last}

    cartpole, walker, hopper = "dm_control/cartpole-swingup-v0", "dm_control/walker-walk-v0", "Hopper-v5"
    records = [record("wpo", cartpole, seed, 850.0) for seed in (0, 1, 2)]
    records += [record("sac", cartpole, seed, 700.0) for seed in (0, 1)] + [record("sac", walker, 0, 900.0)]
    records += [record("wpo", walker, 0, 600.0), record("wpo", "HalfCheetah-v5", 0, 5000.0)]
    in_progress = [record("wpo", hopper, 0, 1000.0), {**record("sac", "dm_control/cheetah-run-v0", 0, 300.0), "lost": True}]
    titles = campaign_report.panel_titles(records, in_progress, campaign_report.verdicts(records))
    assert list(titles) == [env_id for env_id, _ in campaign.TASKS]
    assert titles[cartpole] == "cartpole-swingup-v0: WPO ahead (3+2 seeds)"
    assert titles[walker] == "walker-walk-v0: WPO behind (1+1 seeds so far)"
    assert titles[hopper] == "Hopper-v5: running" and titles["Walker2d-v5"] == "Walker2d-v5: not started"
    assert titles["HalfCheetah-v5"] == "HalfCheetah-v5: WPO, reference example finished, no pair yet"
    assert titles["dm_control/cheetah-run-v0"] == "cheetah-run-v0: checkpoint lost, to run again"

    records.append(record("wpo-std0.2", cartpole, 0, 400.0))
    for item in records:
        item["train_cpu_s"] = 60.0
    monkeypatch.setattr(campaign, "OUT", tmp_path)
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(item) + "\n" for item in records))
    (tmp_path / "in_progress.json").write_text(json.dumps({"runs": in_progress}))
    campaign_report.report()
    figures = {path.name for path in tmp_path.glob("*.png")}
    assert figures == {
        "overview.png",
        "curves_dm_control-cartpole-swingup-v0.png",
        "curves_dm_control-walker-walk-v0.png",
        "curves_Hopper-v5.png",
        "curves_HalfCheetah-v5.png",
        "curves_dm_control-cheetah-run-v0.png",
    }
    probe_line = f"| wpo-std0.2 | {cartpole} | 0 | 30,000 | 400.0 | s0 850.0, s1 850.0, s2 850.0 | s0 700.0, s1 700.0 |"
    assert probe_line in (tmp_path / "summary.md").read_text().splitlines()


def test_campaign_overview_key_states_the_schedule_and_margin_the_report_used(monkeypatch: pytest.MonkeyPatch):

    records = [{"eval_freq": 10_000, "n_eval_episodes": 10}, {"eval_freq": 5_000, "n_eval_episodes": 5}]
    monkeypatch.setattr(campaign_report, "VERDICT_MARGIN", 0.1)
    key = campaign_report.overview_key(records).replace("\n", " ")
    assert "5 deterministic episodes every 5k steps or 10 deterministic episodes every 10k steps" in key
    assert "10% above (ahead) or below (behind)" in key


def test_each_run_is_one_command_line_that_selects_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The campaign's, returns.py's and the ε sweep's runs as the command lines a scheduler gets: each selects its
    own run and nothing else."""
    monkeypatch.setattr(campaign, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(campaign, "OUT", tmp_path / "out")
    monkeypatch.setattr(campaign, "TASKS", [("Pendulum-v1", 300)])
    monkeypatch.setattr(campaign, "PROBES", [])
    monkeypatch.setattr(campaign, "CONFIRMATION", [])
    queue_args = argparse.Namespace(first=[], defer=[], eval_freq=100, save_freq=100)
    commands = campaign.pending_commands(queue_args)
    assert [command.name for command in commands] == [campaign.run_name(*spec) for spec in campaign.planned_runs()]
    assert commands[0].line() == (
        "python benchmarks/campaign.py run --algo wpo --env Pendulum-v1 --seed 0 --steps 300 --eval-freq 100 --save-freq 100"
    )
    common.append_jsonl(tmp_path / "out" / "runs.jsonl", {"name": commands[0].name})
    assert commands[0] not in campaign.pending_commands(queue_args), "a finished run has no command left"

    for script, specs in (
        (returns, returns.make_specs(returns_args(algos=["wpo", "sac"], seeds=["3-4"], steps=400), done=set())),
        (epsilon_sweep, epsilon_sweep.make_specs(sweep_args(), done=set())),
    ):
        args = argparse.Namespace(out=tmp_path, defaults=False, set=[])
        for spec in specs:
            argv = script.command(spec, args).argv
            monkeypatch.setattr(sys, "argv", list(argv[1:]))
            child = script.parse_args()
            assert child.in_process and child.out == tmp_path
            assert script.make_specs(child, done=set()) == [spec]


def sweep_args() -> argparse.Namespace:
    args = argparse.Namespace(env="Pendulum-v1", seeds=["0-1"], configs=["ours", "paper"], steps=1000, eval_freq=500)
    args.modes, args.epsilons, args.n_eval_episodes = ["soft", "hard"], [0.005, 0.02], 2
    return args


def test_the_pool_runs_commands_at_most_processes_at_a_time(tmp_path: Path):
    log = tmp_path / "log.txt"
    code = "import sys, time; f = open(sys.argv[1], 'a'); f.write(f's{sys.argv[2]} '); f.flush(); time.sleep(0.2); "
    code += "f.write(f'e{sys.argv[2]} '); sys.exit(int(sys.argv[2]))"
    commands = [common.Command(f"run {i}", (sys.executable, "-c", code, str(log), str(i))) for i in range(3)]
    codes = common.run_commands(lambda: commands, processes=1, poll_s=0.01)
    assert codes == {"run 0": 0, "run 1": 1, "run 2": 2}
    assert log.read_text().split() == ["s0", "e0", "s1", "e1", "s2", "e2"]


def test_tuning_window_scores_the_last_3_evaluations_and_costs_train_cpu_after_the_first() -> None:
    curve = [{"timesteps": 10_000 * k, "eval_mean": float(k), "train_cpu_s": 2.0 * (k - 1)} for k in range(1, 11)]
    record = {"curve": curve}
    at_budget = campaign_report.window(record, 100_000)
    assert at_budget == {"last3": 9.0, "cpu_ms_per_step": pytest.approx(1000 * 18.0 / 90_000)}
    assert campaign_report.window(record, 50_000) == {"last3": 4.0, "cpu_ms_per_step": pytest.approx(1000 * 8.0 / 40_000)}
    assert campaign_report.window(record, 55_000) is None  # no evaluation there
    assert campaign_report.window(record, 30_000) is None  # fewer than 3 evaluations after the first


def test_cpu_times_compare_only_on_the_same_machine() -> None:
    here = common.machine_info()
    assert here["cpu_capability"] == th.backends.cpu.get_cpu_capability() and common.same_machine(here, dict(here))
    assert not common.same_machine(here, {**here, "cpu_capability": "NO AVX"})
    assert not common.same_machine(here, {**here, "cpu": "another CPU"})
    before = {key: value for key, value in here.items() if key != "cpu_capability"}  # a record from before the field
    assert common.same_machine(before, dict(before)) and not common.same_machine(before, here)
    assert common.machine_label({"cpu": "AMD EPYC", "cpu_capability": "AVX2"}) == "AMD EPYC (AVX2)"
    assert common.machine_label({"cpu": "AMD EPYC"}) == "AMD EPYC", "a record from before the field"


def test_pendulum_process_summary_and_commands():
    """pendulum_process.py: WPO and SBX's SAC run the zoo's training command with their own entries and no periodic
    evaluation, a candidate's -params reach WPO's command only, and the summary counts solved seeds and divides by
    SBX's SAC."""
    import pendulum_process

    table = pendulum_process.variants(["num_samples:4 train_freq:2"])
    wpo = pendulum_process.train_command(*table["WPO num_samples:4 train_freq:2"], 20_000, 3, "logs")
    assert wpo[1:3] == ["-m", "rl_zoo3.train"] and wpo[-3:] == ["-params", "num_samples:4", "train_freq:2"]
    assert ["--eval-freq", "-1"] == wpo[wpo.index("--eval-freq") : wpo.index("--eval-freq") + 2]
    sbx = pendulum_process.train_command(*table["SBX SAC (zoo)"], 20_000, 3, "logs")
    assert sbx[1] == "-c" and "sbx.SAC" in sbx[2] and sbx[sbx.index("--algo") + 1] == "sac" and "-params" not in sbx
    runs = [
        {"variant": "WPO (wpo.yml)", "wall_s": wall, "cpu_s": wall - 1, "return": ret}
        for wall, ret in [(100.0, -150.0), (120.0, -250.0), (110.0, -180.0)]
    ] + [{"variant": "SBX SAC (zoo)", "wall_s": wall, "cpu_s": wall, "return": -160.0} for wall in (200.0, 220.0, 240.0)]
    summary = pendulum_process.summarize(runs, ["WPO (wpo.yml)", "SBX SAC (zoo)"])
    assert summary["WPO (wpo.yml)"]["solved"] == 2 and summary["SBX SAC (zoo)"]["solved"] == 3
    assert summary["WPO (wpo.yml)"]["wall_median_over_sbx"] == pytest.approx(110 / 220)
    assert summary["WPO (wpo.yml)"]["wall_min_over_sbx"] == pytest.approx(100 / 200)


def test_raw_hyperparams_of_an_unlisted_task_is_its_family_entry():
    """A MuJoCo task that wpo.yml does not list gets the ``mujoco`` entry, as the zoo trains it, named in
    ``hyperparams_from``; a listed task its own entry."""
    entries = yaml.safe_load(common.zoo_file("wpo").read_text())
    swimmer = common.raw_hyperparams("wpo", "Swimmer-v5")
    assert swimmer == dict(entries["mujoco"], hyperparams_from="mujoco")
    assert common.raw_hyperparams("wpo", "HalfCheetah-v5") == entries["HalfCheetah-v5"]


def test_interleaved_order_rotates_by_one_each_repeat():
    assert list(common.interleaved_order(["a", "b", "c"], 4)) == [
        *[(0, "a"), (0, "b"), (0, "c")],
        *[(1, "b"), (1, "c"), (1, "a")],
        *[(2, "c"), (2, "a"), (2, "b")],
        *[(3, "a"), (3, "b"), (3, "c")],
    ]


def test_timed_process_counts_the_childs_cpu_time():
    wall, cpu = common.timed_process(
        [sys.executable, "-c", "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"]
    )
    assert cpu >= 0.3 and wall >= cpu * 0.5
    with pytest.raises(subprocess.CalledProcessError):
        common.timed_process([sys.executable, "-c", "raise SystemExit(3)"])


def test_tuning_sets_each_screen_beside_sac_and_the_candidate_and_draws_unfinished_screens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    machine = {"cpu": "CPU", "cpu_capability": "AVX2"}

    def record(algo: str, seed: int, evals: list[float], cpu_s_per_step: float = 0.01) -> dict[str, Any]:
        curve = [
            {"timesteps": 10_000 * (i + 1), "eval_mean": value, "train_cpu_s": 10_000 * (i + 1) * cpu_s_per_step}
            for i, value in enumerate(evals)
        ]
        steps = 10_000 * len(evals)
        name = campaign.run_name(algo, "HalfCheetah-v5", seed, steps)
        return {"name": name, "algo": algo, "env_id": "HalfCheetah-v5", "seed": seed, "steps": steps, "curve": curve,
                "machine": machine}  # fmt: skip

    candidate = campaign.candidate("HalfCheetah-v5")
    for path, records in (
        (tmp_path / "campaign" / "runs.jsonl", [record("sac", 0, [1, 2, 3, 4, 5, 6]), record(candidate, 0, [1, 2, 3, 7, 8])]),
        (tmp_path / "tuning" / "runs.jsonl", [record("wpo-s1u1-ln2-std", 0, [1, 1, 1, 1, 2], cpu_s_per_step=0.02)]),
    ):
        for entry in records:
            common.append_jsonl(path, entry)
    unfinished = {**record("wpo-s1u1-ln2-2q", 0, [3, 4]), "steps": 200_000}
    common.write_json(tmp_path / "tuning" / "in_progress.json", {"runs": [unfinished]})
    campaign_report.tuning()
    (row,) = json.loads((tmp_path / "tuning" / "summary.json").read_text())["rows"]
    former = campaign.CANDIDATES[0]
    assert row["last3"] == pytest.approx(4 / 3) and row["sac_last3"] == [4.0] and row[f"{candidate}_last3"] == [6.0]
    assert row[f"{former}_last3"] == [], "an earlier candidate keeps its column"
    assert row["cost_vs_sac"] == pytest.approx(2.0), "same machine: the ratio of train CPU per step"
    table = (tmp_path / "tuning" / "summary.md").read_text()
    confirmations = "".join("6 | " if name == candidate else "- | " for name in campaign.CANDIDATES)  # one column each
    assert f"| wpo-s1u1-ln2-std | HalfCheetah-v5 | 0 | 50,000 | 1 | 4 | - | {confirmations}20.0 | 2.00 |" in table
    assert (tmp_path / "tuning" / "curves.png").stat().st_size > 0


def test_variant_cost_measures_each_tasks_family_candidate_and_the_median_of_the_ratios(monkeypatch, tmp_path):
    import variant_cost

    built = []

    def filled_model(variant: str, env_id: str, folder: Path) -> tuple[str, str]:
        built.append((variant, env_id))
        return variant, env_id

    mujoco, control_suite = campaign.FAMILY_CANDIDATES["mujoco"], campaign.FAMILY_CANDIDATES["dm_control"]
    ms_per_step = {"sac": 10.0, mujoco: 12.0, control_suite: 5.0}
    monkeypatch.setattr(variant_cost, "filled_model", filled_model)
    monkeypatch.setattr(variant_cost, "cpu_per_step", lambda model, steps: ms_per_step[model[0]] / 1e3)
    envs = ["HalfCheetah-v5", "dm_control/cheetah-run-v0", "Hopper-v5"]
    args = argparse.Namespace(variants=["candidate"], env=envs, steps=10, repeats=2, out=tmp_path)
    results = variant_cost.measure(args)
    assert sorted(built) == sorted([(name, env_id) for env_id in envs for name in ("sac", campaign.candidate(env_id))])
    cheetah_run = results["tasks"]["dm_control/cheetah-run-v0"]["candidate"]
    assert cheetah_run["variant"] == control_suite != mujoco
    assert cheetah_run["over_sac_median"] == pytest.approx(0.5)
    assert results["median_over_tasks"]["candidate"]["median"] == pytest.approx(1.2), "median of 1.2, 0.5, 1.2"
    variant_cost.write_markdown(results, tmp_path / "cost.md")
    table = (tmp_path / "cost.md").read_text()
    both = ", ".join(sorted({mujoco, control_suite}))
    assert f"| dm_control/cheetah-run-v0 | {control_suite} | 5.00 / 5.00 | 0.50 / 0.50 |" in table
    assert f"| candidate: {both} | 1.20 / 1.20 |" in table
