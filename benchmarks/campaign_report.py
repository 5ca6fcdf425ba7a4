"""The campaign's reporting (its runs: ``benchmarks/campaign.py``): tables, figures, diagnosis, exploration noise and
critics' bias from the run records (``runs.jsonl``) and the checkpoints of unfinished runs.

    python benchmarks/campaign_report.py snapshot   # curves of unfinished runs so far -> in_progress.json
    python benchmarks/campaign_report.py diagnose   # unfinished WPO runs' policy and critic -> diagnostics.json
    python benchmarks/campaign_report.py noise      # finished runs' exploration noise -> action_noise.json
    python benchmarks/campaign_report.py qbias      # critics against their policy's returns (finished runs or --runs)
    python benchmarks/campaign_report.py report     # summary.md (finished runs, diagnoses, noise), figures (overview.png: all)
    python benchmarks/campaign_report.py tuning     # the tuning screen against the campaign -> results/tuning/summary.*

``$SB3_WPO_CAMPAIGN_OUT`` (the records' folder) and ``$SB3_WPO_RUNS`` (the checkpoints') as for the runs.
"""

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import campaign
import common
import numpy as np
from campaign import CANDIDATES, COLORS, SEEDS, TASKS, VARIANTS, candidate, planned_runs, run_name

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
# A verdict needs every WPO seed beyond every SAC seed by this share of the largest |return| of the task's seeds.
VERDICT_MARGIN = 0.05
TANH_SATURATED = 0.99  # |tanh u| beyond which (1 − tanh²u) < 2%: a tanh action at its bound


def selected_runs(runs: list[str] | None) -> list[tuple[str, str, int, int]]:
    """The runs named by folder (``--runs``), else the plan's."""
    return [campaign.parse_run_name(name) for name in runs] if runs else planned_runs()


def snapshot(runs: list[str] | None = None) -> None:
    """The curves so far of the plan's runs (or of ``runs``, folder names such as a screen's) that have a checkpoint
    but no record yet, for the report. An unfinished run whose checkpoint is gone (a session's machine came back
    without them) keeps its earlier snapshot, marked ``lost``: the notes cite those curves, and the run starts again
    from 0."""
    path = campaign.OUT / "in_progress.json"
    earlier = {run["name"]: run for run in json.loads(path.read_text())["runs"]} if path.exists() else {}
    done = campaign.finished()
    partial = []
    for algo, env_id, seed, steps in selected_runs(runs):
        name = run_name(algo, env_id, seed, steps)
        checkpoint = campaign.latest_checkpoint(campaign.RUNS / name)
        if name in done:
            continue
        if checkpoint is not None:
            partial.append(dict(name=name, algo=algo, env_id=env_id, seed=seed, steps=steps, **checkpoint.state))
        elif name in earlier:
            partial.append({**earlier[name], "lost": True})
    common.write_json(path, {"runs": partial, "meta": common.provenance()})
    lost = sum(run.get("lost", False) for run in partial)
    print(f"{len(partial) - lost} runs in progress and {lost} lost runs written to {path}")


def at_bounds(u: Any, tanh_actions: bool) -> Any:
    """Where Gaussian values u (means or samples) leave the critic's action-gradient (almost) nothing: beyond [-1, 1]
    for the reference's clipped actions (∇u Q = 0), |tanh u| > 0.99 for tanh actions (∇u Q below 2% of ∇a Q)."""
    return u.tanh().abs() > TANH_SATURATED if tanh_actions else u.abs() > 1.0


def mean_push(mean: Any, q_grads: Any, beyond: Any) -> dict[str, float]:
    """Where the policy loss moves each policy mean, from ∇u Q at its N samples (mean [B, D], q_grads [N, B, D]):
    the variance-rescaled loss's step on μ is Σ_n ∇u Q, outwards when its sign is that of μ. Shares over all the
    means, and over those at the bounds (``beyond`` [B, D], from ``at_bounds``)."""
    step = q_grads.sum(dim=0)
    outward, still = (step * mean > 0).float(), (step == 0).float()
    return {
        "pi_means_pushed_outward": float(outward.mean()),
        "pi_means_beyond_bounds_pushed_outward": float(outward[beyond].mean()) if beyond.any() else float("nan"),
        "pi_means_beyond_bounds_without_gradient": float(still[beyond].mean()) if beyond.any() else float("nan"),
    }


def diagnose(runs: list[str] | None = None, batch_size: int = 1024) -> None:
    """The policy and critic of each unfinished WPO run of the plan (or of ``runs``, folder names such as a screen's) at
    its last checkpoint, on ``batch_size`` replay states (seeded): the policy std, how far the means sit towards the
    action bounds, how many sampled actions reach the critic at a bound (``at_bounds``: clipped, or tanh-saturated),
    the size of the action-gradient of Q, which way the policy loss moves the means (``mean_push``) and the rewards in
    the buffer, to tell why a run stalls. Added to ``diagnostics.json`` (in ``campaign.OUT``), which keeps the
    diagnoses of earlier checkpoints."""
    import pickle

    import torch as th

    from sb3_wpo import WPO

    th.set_num_threads(1)
    path, meta = campaign.OUT / "diagnostics.json", common.provenance()
    # Earlier diagnoses are kept (summary.md tables them all): one entry per run and checkpoint, each with its provenance
    earlier = json.loads(path.read_text()) if path.exists() else {"runs": []}
    diagnostics = [{"meta": earlier.get("meta"), "batch_size": earlier.get("batch_size"), **e} for e in earlier["runs"]]
    done = campaign.finished()
    for algo, env_id, seed, steps in selected_runs(runs):
        name = run_name(algo, env_id, seed, steps)
        checkpoint = campaign.latest_checkpoint(campaign.RUNS / name)
        if VARIANTS[algo][0] != "wpo" or name in done or checkpoint is None or checkpoint.replay_buffer is None:
            if runs:
                print(f"{name}: no checkpoint with a replay buffer to diagnose, or finished")
            continue
        model = WPO.load(checkpoint.model, device="cpu")
        with checkpoint.replay_buffer.open("rb") as file:
            buffer = pickle.load(file)
        np.random.seed(0)
        th.manual_seed(0)
        data = buffer.sample(batch_size)
        with th.no_grad():
            mean, std = model.actor.distribution_params(data.observations)
        actions = model._sample_actions(mean, std)
        q_values, q_grads = model._q_and_action_gradients(data.observations, actions)  # as the update computes them
        tanh_actions = model.actor.tanh_actions
        means_at_bounds = at_bounds(mean, tanh_actions)
        rewards = buffer.rewards[: buffer.size()]
        entry = {
            "name": name,
            "timesteps": model.num_timesteps,
            "n_updates": model._n_updates,
            "pi_mean_abs": float(mean.abs().mean()),
            "tanh_actions": tanh_actions,
            "pi_means_outside_bounds": float(means_at_bounds.float().mean()),
            "pi_std_quantiles_5_50_95": [float(q) for q in th.quantile(std.flatten(), th.tensor([0.05, 0.5, 0.95]))],
            "sampled_actions_clipped": float(at_bounds(actions, tanh_actions).float().mean()),
            "q_mean": float(q_values.mean()),
            "q_std": float(q_values.std()),
            "dq_da_norm_mean": float(q_grads.norm(dim=-1).mean()),
            **mean_push(mean, q_grads, means_at_bounds),
            "buffer_reward_mean": float(rewards.mean()),
            "buffer_reward_max": float(rewards.max()),
            "alpha_mean": float(th.nn.functional.softplus(model.log_alpha_mean.detach()).mean()),
            "alpha_std": float(th.nn.functional.softplus(model.log_alpha_std.detach()).mean()),
            "batch_size": batch_size,
            "meta": meta,
        }
        diagnostics = [d for d in diagnostics if (d["name"], d["timesteps"]) != (name, entry["timesteps"])] + [entry]
        print(json.dumps({key: value for key, value in entry.items() if key != "meta"}))
    common.write_json(path, {"runs": diagnostics, "meta": meta})
    print(f"{len(diagnostics)} diagnoses in {path}")


def load_run(run: tuple[str, str, int, int], model_path: Path) -> tuple[Any, Any]:
    """A run's model at ``model_path``, loaded as a resumed run loads it, and the run's own evaluation env (one env,
    no logs), both seeded with the run's seed."""
    import tempfile

    import torch as th

    with tempfile.TemporaryDirectory() as log_folder:
        experiment = campaign.make_experiment(*run, Path(log_folder), trained_agent=str(model_path))
        model, _ = experiment.setup_experiment()
        env = experiment.create_envs(1, eval_env=True, no_log=True)
    env.seed(run[2])
    th.manual_seed(run[2])
    return model, env


def action_noise(n_states: int = 1000, n_samples: int = 20) -> None:
    """How much each finished run's final policy still explores: on the states of its deterministic policy's own
    trajectory (``n_states`` steps of the evaluation env), the RMS distance of ``n_samples`` stochastic actions, as
    the run executes them (SAC's squashed, WPO's clipped), from the deterministic action, in SB3's normalized action
    units [-1, 1], and the share of them at a bound (|a| ≥ 0.99: SAC's tanh never reaches 1). WPO's std is held
    near its initial 0.5 by the reference's fixed std penalty (α_std = 1e4); SAC tunes its entropy.
    -> ``action_noise.json``"""
    import torch as th

    th.set_num_threads(1)
    path, meta, entries = campaign.OUT / "action_noise.json", common.provenance(), []
    for record in common.read_jsonl(campaign.OUT / "runs.jsonl"):
        checkpoint = campaign.latest_checkpoint(campaign.RUNS / record["name"])
        if checkpoint is None or checkpoint.state["timesteps"] != record["steps"]:
            continue  # this machine no longer has the final model
        model, env = load_run((record["algo"], record["env_id"], record["seed"], record["steps"]), checkpoint.model)
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


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = Σ_k γ^k r_{t+k} of one episode's rewards [T], to its end."""
    returns, total = np.zeros(len(rewards)), 0.0
    for t in reversed(range(len(rewards))):
        total = rewards[t] + gamma * total
        returns[t] = total
    return returns


def complete_steps(length: int, terminated: bool, gamma: float, tolerance: float) -> int:
    """How many first steps of an episode have a Monte-Carlo return that is the return of Q's definition: all of a
    terminated episode's; of one cut by a time limit, those at least log(tolerance)/log(γ) steps before the cut, whose
    missing tail weighs at most ``tolerance``."""
    return length if terminated else max(0, length - math.ceil(math.log(tolerance) / math.log(gamma)))


def q_bias(runs: list[str] | None = None, episodes: int = 5, tolerance: float = 0.01) -> None:
    """How far each run's critic is from the return of the policy it evaluates: ``episodes`` episodes of the policy
    as the run acts (stochastic: WPO's clipped samples, SAC's squashed ones) on the run's evaluation env, seeded, and
    at every step with a complete discounted return (``complete_steps``) Q(s, a) set against that Monte-Carlo return.
    A single critic that the actor climbs overestimates (DDPG's and TD3's finding); SAC takes the min of two. Runs:
    ``runs`` (folder names, at their newest checkpoint) or the finished runs of the records whose final model is on
    this machine. Added to ``q_bias.json`` (in ``campaign.OUT``), which keeps earlier measurements."""
    import torch as th

    th.set_num_threads(1)
    path, meta = campaign.OUT / "q_bias.json", common.provenance()
    measured = result_runs("q_bias.json")
    if runs:
        selected = [(name, campaign.parse_run_name(name)) for name in runs]
    else:
        records = common.read_jsonl(campaign.OUT / "runs.jsonl")
        selected = [(r["name"], (r["algo"], r["env_id"], r["seed"], r["steps"])) for r in records]
    for name, run in selected:
        checkpoint = campaign.latest_checkpoint(campaign.RUNS / name)
        if checkpoint is None or (not runs and checkpoint.state["timesteps"] != run[3]):
            if runs:
                print(f"{name}: no checkpoint on this machine")
            continue
        model, env = load_run(run, checkpoint.model)
        q_values, mc_returns, lengths, episode_returns = [], [], [], []
        observation = env.reset()
        for _ in range(episodes):
            observations, actions, rewards, done = [], [], [], False
            while not done:
                action, _ = model.predict(observation, deterministic=False)
                observations.append(observation)
                actions.append(model.policy.scale_action(action))  # what the replay buffer stores and Q takes
                observation, reward, dones, infos = env.step(action)
                rewards.append(float(reward[0]))
                done = bool(dones[0])
            terminated = not infos[0].get("TimeLimit.truncated", False)
            keep = complete_steps(len(rewards), terminated, model.gamma, tolerance)
            with th.no_grad():
                states = model.policy.obs_to_tensor(np.concatenate(observations[:keep]))[0]
                q = model.critic(states, th.as_tensor(np.concatenate(actions[:keep]), dtype=th.float32))
            q_values.append((th.cat(q, dim=1) if isinstance(q, tuple) else q).numpy())  # SAC's critic: a tuple
            mc_returns.append(discounted_returns(np.array(rewards), model.gamma)[:keep])
            lengths.append(len(rewards))
            episode_returns.append(sum(rewards))
        q_all, mc = np.concatenate(q_values), np.concatenate(mc_returns)
        if len(mc) == 0:
            print(f"{name}: no step with a complete return (episodes shorter than the tolerance allows)")
            continue
        entry = {
            "name": name,
            "algo": run[0],
            "env_id": run[1],
            "seed": run[2],
            "timesteps": checkpoint.state["timesteps"],
            "episodes": episodes,
            "episode_length_mean": float(np.mean(lengths)),
            "episode_return_mean": float(np.mean(episode_returns)),
            "steps_measured": len(mc),
            "q_mean": float(q_all.mean()),  # the critics' mean: what WPO's actor follows
            "q_min_mean": float(q_all.min(axis=1).mean()),  # the min of the critics: SAC's (and -2q's) target
            "n_critics": int(q_all.shape[1]),
            "mc_return_mean": float(mc.mean()),
            "relative_bias": float((q_all.mean() - mc.mean()) / abs(mc.mean())),
            "tolerance": tolerance,
            "meta": meta,
        }
        measured = [m for m in measured if (m["name"], m["timesteps"]) != (name, entry["timesteps"])] + [entry]
        print(json.dumps({key: value for key, value in entry.items() if key != "meta"}))
    common.write_json(path, {"runs": measured, "meta": meta})
    print(f"{len(measured)} measurements in {path}")


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
        threshold = common.THRESHOLDS.get(env_id)
        first_steps = [(common.first_crossing(r["curve"], threshold), r) for r in runs if threshold is not None]
        reached_by = [(steps, r) for steps, r in first_steps if steps is not None]
        reached = [steps for steps, _ in reached_by]
        # The same points in gradient updates: WPO and SAC make different numbers per step
        reached_updates = [gradient_updates(algo, env_id, [int(steps)], r.get("hyperparams"))[0] for steps, r in reached_by]
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
                "threshold": common.THRESHOLDS.get(env_id),
                "seeds_reaching_threshold": len(reached),
                "steps_to_threshold_median": float(np.median(reached)) if reached else None,
                "updates_to_threshold_median": float(np.median(reached_updates)) if reached else None,
                "train_cpu_h_median": float(np.median([r["train_cpu_s"] for r in runs]) / 3600),
                "machines": sorted({common.machine_label(r.get("machine", {})) for r in runs}),
            }
        )
    return rows


def last3_by_group(records: list[dict[str, Any]]) -> dict[tuple[str, str], list[float]]:
    """Each run's mean of its last 3 evaluations, by (task, algo)."""
    last3: dict[tuple[str, str], list[float]] = {}
    for record in records:
        last3.setdefault((record["env_id"], record["algo"]), []).append(last3_mean(record))
    return last3


def verdict_row(env_id: str, algo: str, wpo: list[float], sac: list[float]) -> dict[str, Any]:
    """``algo`` (a WPO variant) against SAC on one task: ahead when every WPO seed's mean of its last 3 evaluations
    beats every SAC seed's by more than ``VERDICT_MARGIN`` of the largest |value|, behind in the opposite case, else
    level; ``not run`` without WPO seeds."""
    if not wpo:
        verdict = "not run"
    else:
        margin = VERDICT_MARGIN * max(abs(value) for value in wpo + sac)
        verdict = "ahead" if min(wpo) > max(sac) + margin else "behind" if max(wpo) < min(sac) - margin else "level"
    complete = len(wpo) >= len(SEEDS["wpo"]) and len(sac) >= len(SEEDS["sac"])
    return {"env_id": env_id, "algo": algo, "wpo_last3": wpo, "sac_last3": sac, "verdict": verdict, "all_seeds": complete}


def verdicts(records: list[dict[str, Any]], algo: str = "wpo") -> list[dict[str, Any]]:
    """Per task with finished ``algo`` and SAC runs, ``verdict_row``."""
    last3 = last3_by_group(records)
    return [
        verdict_row(env_id, algo, last3[env_id, algo], last3[env_id, "sac"])
        for env_id, _ in TASKS
        if (env_id, algo) in last3 and (env_id, "sac") in last3
    ]


def shipped_verdicts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task with SAC runs: wpo.yml's entry for it (its family's candidate, ``campaign.candidate``) against SAC,
    ``verdict_row``: ``not run`` while that entry has no finished run on the task."""
    last3 = last3_by_group(records)
    return [
        verdict_row(env_id, candidate(env_id), last3.get((env_id, candidate(env_id)), []), last3[env_id, "sac"])
        for env_id, _ in TASKS
        if (env_id, "sac") in last3
    ]


def label(algo: str) -> str:
    """How the reports name a variant: ``wpo`` (the reference's example settings, which wpo.yml's MuJoCo and Control
    Suite entries held until the tuning screen) by what it is, the others by their names."""
    return "WPO, reference example" if algo == "wpo" else algo.upper()


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
        if record["algo"] in SEEDS or record["algo"] in CANDIDATES:  # the candidates have verdict rows
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

        with Path(campaign.CONFIGS[zoo_algo] or common.zoo_file(zoo_algo)).open() as file:
            hyperparams = {**yaml.safe_load(file)[env_id], **overrides}
    defaults = (100, 1, 1)  # learning_starts, train_freq, gradient_steps: the defaults of WPO and SAC
    start = int(float(hyperparams.get("learning_starts", defaults[0])))
    train_freq = int(float(hyperparams.get("train_freq") or defaults[1]))
    per_step = int(float(hyperparams.get("gradient_steps", defaults[2]))) / train_freq
    return [max(0, t - start) * per_step for t in timesteps]


def campaign_summary(folder: Path) -> tuple[dict[str, Any], list[str]]:
    """The campaign's summary (``summary.json`` less its provenance) and its table (``summary.md``), made from the
    folder's committed result files alone: ``runs.jsonl`` and the diagnoses (``diagnostics.json``,
    ``action_noise.json``, ``q_bias.json``), so that a test can check the committed page against them."""
    records = common.read_jsonl(folder / "runs.jsonl")
    rows = summarize(records) if records else []
    task_verdicts = verdicts(records)
    shipped = shipped_verdicts(records)
    candidate_verdicts = [row for algo in CANDIDATES for row in verdicts(records, algo)]
    probes = probe_comparisons(records)
    summary = {
        "groups": rows,
        "shipped_verdicts": shipped,
        "verdicts": task_verdicts,
        "candidate_verdicts": candidate_verdicts,
        "probes": probes,
    }
    lines = [
        "| task | algo | steps | seeds | final return mean ± std | mean of last 3 evals | steps (gradient updates) to "
        "threshold, median of seeds reaching it | train CPU h (median), on | anchor |",
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
            f"| {row['env_id']} | {label(row['algo'])} | {row['steps']:,} | {len(row['seeds'])} | "
            f"{row['final_mean']:.1f} ± {row['final_std']:.1f} | {row['last3_mean']:.1f} ± {row['last3_std']:.1f} | "
            f"{to_threshold} | {row['train_cpu_h_median']:.2f}, {' / '.join(row['machines'])} | {anchor[0]}: {anchor[1]} |"
        )
    lines += [
        "",
        "WPO against SAC per task: first wpo.yml's entries (each family's candidate), then the reference's example "
        "settings and the tuning screen's other candidates.",
        "",
        "| task | WPO, last 3 evals per seed | SAC, last 3 evals per seed | "
        f"WPO is ({VERDICT_MARGIN:.0%} margin, every seed) |",
        "|---|---|---|---|",
    ]
    others = [row for row in candidate_verdicts if row["algo"] != candidate(row["env_id"])]
    for row in shipped + task_verdicts + others:
        wpo, sac = (", ".join(f"{value:.1f}" for value in row[key]) for key in ("wpo_last3", "sac_last3"))
        lines.append(f"| {row['env_id']} | {label(row['algo'])}: {wpo or '—'} | {sac} | {verdict_cell(row)} |")
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
    lines += diagnosis_table(result_runs("diagnostics.json", folder))
    noise_file = folder / "action_noise.json"
    if noise_file.exists():
        lines += noise_table(json.loads(noise_file.read_text()), task_verdicts)
    lines += q_bias_table(result_runs("q_bias.json", folder))
    return summary, lines


def report() -> None:
    import matplotlib.pyplot as plt

    summary, lines = campaign_summary(campaign.OUT)
    meta = common.provenance()
    common.write_json(campaign.OUT / "summary.json", {**summary, "meta": meta})
    (campaign.OUT / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    records = common.read_jsonl(campaign.OUT / "runs.jsonl")
    in_progress = result_runs("in_progress.json")
    shipped = summary["shipped_verdicts"]
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
        common.save_figure(fig, campaign.OUT / f"curves_{env_id.replace('/', '-')}.png", meta)

    # The whole campaign in one figure: a panel per task, titled with the verdict so far; the tuning's other variants
    # are in the tasks' own figures
    fig, axes = plt.subplots(2, (len(TASKS) + 1) // 2, figsize=(19, 8.5))
    titles = panel_titles(records, in_progress, shipped)
    for ax, (env_id, steps) in zip(axes.flat, TASKS, strict=False):
        draw_runs(env_id, groups, ax, algos=(candidate(env_id), "wpo", "sac"))
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
    common.save_figure(fig, campaign.OUT / "overview.png", meta)


def q_bias_table(measured: list[dict[str, Any]]) -> list[str]:
    """``q_bias.json`` as a table, a row per run and checkpoint."""
    if not measured:
        return []
    episodes = " or ".join(str(n) for n in sorted({entry["episodes"] for entry in measured}))
    tolerances = " or ".join(f"{t:.0%}" for t in sorted({entry["tolerance"] for entry in measured}))
    lines = [
        "",
        f"Critics against the return of the policy they evaluate (`q_bias.json`, `campaign_report.py qbias`: {episodes} "
        "episodes of the stochastic policy as the run acts, seeded; Q(s, a) at each step against its discounted "
        f"Monte-Carlo return, the steps whose return a time limit cuts by more than {tolerances} left out):",
        "",
        "| run | steps | critics | episodes' length, return | steps measured | Q (mean of critics) | min of critics | "
        "Monte-Carlo return | Q against it |",
        "|" + "---|" * 9,
    ]
    labels = run_labels()
    for entry in sorted(measured, key=lambda entry: (labels.get(entry["name"], entry["name"]), entry["timesteps"])):
        q_min = f"{entry['q_min_mean']:.1f}" if entry["n_critics"] > 1 else "—"
        lines.append(
            f"| {labels.get(entry['name'], entry['name'])} | {entry['timesteps']:,} | {entry['n_critics']} | "
            f"{entry['episode_length_mean']:.0f}, {entry['episode_return_mean']:.0f} | {entry['steps_measured']:,} | "
            f"{entry['q_mean']:.1f} | {q_min} | {entry['mc_return_mean']:.1f} | {entry['relative_bias']:+.0%} |"
        )
    return lines


def result_runs(name: str, folder: Path | None = None) -> list[dict[str, Any]]:
    """The ``runs`` of a result file of the campaign's folder or of ``folder`` (none while it is not written yet)."""
    path = (folder or campaign.OUT) / name
    return json.loads(path.read_text())["runs"] if path.exists() else []


def verdict_cell(row: dict[str, Any]) -> str:
    """A task's verdict (a row of ``verdicts``), with the seeds it rests on while some are still missing."""
    state = (
        ""
        if row["all_seeds"] or not row["wpo_last3"]
        else f" (so far: {len(row['wpo_last3'])} WPO, {len(row['sac_last3'])} SAC seeds)"
    )
    return f"{row['verdict']}{state}"


def share(value: float | None) -> str:
    """A share as a percentage, ``—`` where the result file has none (a field added later, or no such means)."""
    return "—" if value is None or math.isnan(value) else f"{value:.0%}"


def run_labels() -> dict[str, str]:
    """``humanoid-stand-v0 WPO seed 1`` for each planned run's folder name."""
    return {
        run_name(algo, env_id, seed, steps): f"{env_id.removeprefix('dm_control/')} {label(algo)} seed {seed}"
        for algo, env_id, seed, steps in planned_runs()
    }


def diagnosis_table(diagnoses: list[dict[str, Any]]) -> list[str]:
    """``diagnostics.json`` as a table, a row per run and checkpoint. The means beyond the bounds pushed back in are
    those ``mean_push`` finds neither pushed outwards nor without gradient."""
    if not diagnoses:
        return []
    batch_sizes = " or ".join(f"{size:,}" for size in sorted({entry["batch_size"] for entry in diagnoses}))
    lines = [
        "",
        f"WPO runs diagnosed at checkpoints before they finished (`diagnostics.json`, `campaign_report.py diagnose`: "
        f"on {batch_sizes} replay states each, seeded; at a bound: beyond [−1, 1], or |tanh| > {TANH_SATURATED} for "
        "tanh actions):",
        "",
        "| run | steps | updates | policy std (5/50/95%) | mean of \\|μ\\| | means at a bound | sampled actions "
        "at a bound | ∇a Q norm | of the means at a bound: pushed out / in / no gradient | buffer's reward: mean (max) |",
        "|" + "---|" * 10,
    ]
    labels = run_labels()

    def label(entry: dict[str, Any]) -> str:  # a run the plan does not hold keeps its folder name
        return labels.get(entry["name"], entry["name"])

    def tanh(entry: dict[str, Any]) -> str:
        return " (tanh actions)" if entry.get("tanh_actions") else ""

    for entry in sorted(diagnoses, key=lambda entry: (label(entry), entry["timesteps"])):
        quantiles = entry.get("pi_std_quantiles_5_50_95")
        std = " / ".join(f"{q:.2f}" for q in quantiles) if quantiles else "—"
        grad = f"{entry['dq_da_norm_mean']:.3f}" if "dq_da_norm_mean" in entry else "—"
        out, still = entry.get("pi_means_beyond_bounds_pushed_outward"), entry.get("pi_means_beyond_bounds_without_gradient")
        pushed_in = None if out is None or still is None else 1.0 - out - still
        push = " / ".join(share(value) for value in (out, pushed_in, still)) if out is not None else "—"
        lines.append(
            f"| {label(entry)}{tanh(entry)} | {entry['timesteps']:,} | {entry['n_updates']:,} | {std} | "
            f"{entry['pi_mean_abs']:.2f} | {share(entry.get('pi_means_outside_bounds'))} | "
            f"{share(entry['sampled_actions_clipped'])} | {grad} | {push} | "
            f"{entry['buffer_reward_mean']:.3f} ({entry['buffer_reward_max']:.2f}) |"
        )
    return lines


def noise_table(noise: dict[str, Any], task_verdicts: list[dict[str, Any]]) -> list[str]:
    """``action_noise.json`` as a table: per task, each measured seed's action noise and share of deterministic
    actions at a bound, WPO's beside SAC's, with the task's verdict; a probe's own row under its task."""
    by_run: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in sorted(noise["runs"], key=lambda entry: entry["seed"]):
        by_run.setdefault((entry["env_id"], entry["algo"]), []).append(entry)
    verdict = {row["env_id"]: verdict_cell(row) for row in task_verdicts}

    def cell(entries: list[dict[str, Any]], key: str, value: Callable[[float], str]) -> str:
        return ", ".join(f"s{entry['seed']} {value(entry[key])}" for entry in entries) or "—"

    lines = [
        "",
        f"Exploration noise of finished runs at their budget (`action_noise.json`, `campaign_report.py noise`: on "
        f"{noise['n_states']:,} steps of each run's deterministic trajectory, {noise['n_samples']} stochastic actions "
        "per state, executed as the run executes them: SAC's squashed, WPO's clipped):",
        "",
        "| task | WPO run | action noise, RMS from the deterministic action: WPO / SAC | deterministic actions at a bound "
        "(\\|a\\| ≥ 0.99): WPO / SAC | WPO is |",
        "|---|---|---|---|---|",
    ]
    for env_id, _ in TASKS:
        for algo in VARIANTS:
            if algo == "sac" or (env_id, algo) not in by_run:
                continue
            probe = algo != "wpo"  # a shorter budget than SAC's: the probe table compares it
            wpo, sac = by_run[env_id, algo], [] if probe else by_run.get((env_id, "sac"), [])
            rms = " / ".join(cell(runs, "action_noise_rms", "{:.2f}".format) for runs in (wpo, sac))
            at_bound = " / ".join(cell(runs, "deterministic_actions_at_bounds", share) for runs in (wpo, sac))
            run = f"{algo} at {wpo[0]['timesteps']:,}" if probe else "WPO"
            judged = "a probe: see the probe table" if probe else verdict.get(env_id, "—")
            lines.append(f"| {env_id} | {run} | {rms} | {at_bound} | {judged} |")
    return lines


def overview_key(records: list[dict[str, Any]]) -> str:
    """The overview's key, with the evaluation schedule the finished runs used and the verdict's margin."""
    schedules = sorted({(r["n_eval_episodes"], r["eval_freq"]) for r in records if "eval_freq" in r})
    schedule = " or ".join(f"{episodes} deterministic\nepisodes every {freq / 1000:g}k steps" for episodes, freq in schedules)
    schedule = schedule or "a schedule of its\nown"
    return (
        "One line per seed: WPO with wpo.yml's entry (its family's\n"
        "tuned candidate), WPO with the reference's example\n"
        "settings (red) and SB3's SAC (blue, rl-zoo3's MuJoCo\n"
        f"settings), each evaluated on {schedule}.\n"
        "Solid: finished; dashed: in progress; dotted: checkpoint lost.\n"
        "Verdict (wpo.yml's entry): every seed's mean of its last 3\n"
        f"evaluations {VERDICT_MARGIN:.0%} above (ahead) or below (behind) every\n"
        "SAC seed's, else level. Per task, against gradient updates\n"
        "too: curves_<task>.png; the numbers: summary.md."
    )


def draw_runs(
    env_id: str,
    groups: list[tuple[list[dict[str, Any]], str, str]],
    by_steps: Any,
    by_updates: Any = None,
    algos: tuple[str, ...] = tuple(VARIANTS),
) -> None:
    """A line per seed of each of ``algos`` on ``env_id`` (style by group: finished, in progress, lost), against
    environment steps and, on ``by_updates``, against gradient updates; the task's anchor and threshold."""
    for algo in algos:
        for group, style, state in groups:
            runs = [r for r in group if r["env_id"] == env_id and r["algo"] == algo and r["curve"]]
            for index, r in enumerate(runs):
                steps = [p["timesteps"] for p in r["curve"]]
                values = [p["eval_mean"] for p in r["curve"]]
                name = f"{label(algo)} ({len(runs)} seed{'s' * (len(runs) != 1)}, {state})" if index == 0 else None
                by_steps.plot(steps, values, style, color=COLORS[algo], alpha=0.8, lw=1.2, label=name)
                if by_updates is not None:
                    updates = gradient_updates(algo, env_id, steps, r.get("hyperparams"))
                    by_updates.plot(updates, values, style, color=COLORS[algo], alpha=0.8, lw=1.2, label=name)
    if env_id in ANCHORS:
        text, value = ANCHORS[env_id]
        by_steps.axhline(value, color="0.4", ls=":", lw=1, label=text)
    if env_id in common.THRESHOLDS:
        by_steps.axhline(common.THRESHOLDS[env_id], color="0.7", ls="-.", lw=0.8, label="threshold of the table")
        if by_updates is not None:
            by_updates.axhline(common.THRESHOLDS[env_id], color="0.7", ls="-.", lw=0.8)


def panel_titles(
    records: list[dict[str, Any]], in_progress: list[dict[str, Any]], task_verdicts: list[dict[str, Any]]
) -> dict[str, str]:
    """Per task: its name and where it stands: WPO's verdict against SAC (wpo.yml's entry, a row of
    ``shipped_verdicts``, where it has run) with the WPO+SAC seeds it rests on; else running, finished by one algorithm
    only, checkpoint lost (to run again), or not started."""
    verdict = {row["env_id"]: row for row in task_verdicts if row["verdict"] != "not run"}
    titles = {}
    for env_id, _ in TASKS:
        lost = [r for r in in_progress if r["env_id"] == env_id and r.get("lost")]
        running = [r for r in in_progress if r["env_id"] == env_id and not r.get("lost")]
        done = sorted({label(r["algo"]) for r in records if r["env_id"] == env_id})
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


def window(record: dict[str, Any], steps: int) -> dict[str, float] | None:
    """A run at ``steps``: the mean of its last 3 evaluations up to there, and its train CPU time per environment
    step since its first evaluation (the warm-up before learning_starts costs nothing)."""
    curve = [point for point in record["curve"] if point["timesteps"] <= steps]
    if not curve or curve[-1]["timesteps"] != steps or len(curve) < 4:
        return None
    cpu_ms = 1000 * (curve[-1]["train_cpu_s"] - curve[0]["train_cpu_s"]) / (steps - curve[0]["timesteps"])
    return {"last3": last3_mean({"curve": curve}), "cpu_ms_per_step": cpu_ms}


def tuning_summary(out: Path, campaign_folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Each screening run (``results/tuning``) beside the campaign's SAC seeds and the reference settings' WPO seeds
    at the same step, by the rule of ``benchmarks/notes/tuning.md``: score = mean of the last 3 evaluations, cost =
    train CPU time per step against SAC's median over its seeds that ran on the same CPU (``common.same_machine``;
    none: no ratio, and ``variant_cost.py`` measures it side by side). The rows (``summary.json``) and the table
    (``summary.md``), made from the committed result files alone."""
    screened = common.read_jsonl(out / "runs.jsonl")
    baseline = common.read_jsonl(campaign_folder / "runs.jsonl")
    rows = []
    for record in screened:
        steps, env_id = record["steps"], record["env_id"]
        own = window(record, steps)
        assert own is not None, f"{record['name']}: no evaluation at its budget"
        row: dict[str, Any] = {"variant": record["algo"], "env_id": env_id, "seed": record["seed"], "steps": steps, **own}
        for algo in ("sac", "wpo", *CANDIDATES):
            others = [(r, w) for r in baseline if r["env_id"] == env_id and r["algo"] == algo if (w := window(r, steps))]
            row[f"{algo}_last3"] = [w["last3"] for _, w in others]
            costs = [w["cpu_ms_per_step"] for r, w in others if common.same_machine(r["machine"], record["machine"])]
            row[f"{algo}_cpu_ms_per_step"] = float(np.median(costs)) if costs else None
        row["cost_vs_sac"] = own["cpu_ms_per_step"] / row["sac_cpu_ms_per_step"] if row["sac_cpu_ms_per_step"] else None
        rows.append(row)

    def values(xs: list[float]) -> str:
        return ", ".join(f"{x:.0f}" for x in xs) or "-"

    candidates = "".join(f" {candidate} seeds there (confirmation) |" for candidate in CANDIDATES)
    lines = [
        f"| variant | task | seed | steps | last 3 evals | SAC seeds there | reference WPO seeds there |{candidates} "
        "train CPU ms / step | × SAC's |",
        "|---|---|---|---|---|---|---|" + "---|" * len(CANDIDATES) + "---|---|",
    ]
    for row in rows:
        cost = f"{row['cost_vs_sac']:.2f}" if row["cost_vs_sac"] else "-"
        confirmations = "".join(f" {values(row[f'{candidate}_last3'])} |" for candidate in CANDIDATES)
        lines.append(
            f"| {row['variant']} | {row['env_id']} | {row['seed']} | {row['steps']:,} | {row['last3']:.0f} | "
            f"{values(row['sac_last3'])} | {values(row['wpo_last3'])} |{confirmations} {row['cpu_ms_per_step']:.1f} | {cost} |"
        )
    lines += [
        "",
        "× SAC's: against the campaign's SAC seeds on the same CPU (`-`: none ran on that CPU); `cost.md` measures the "
        "candidates side by side.",
    ]
    diagnoses = out / "diagnostics.json"  # SB3_WPO_CAMPAIGN_OUT=benchmarks/results/tuning campaign_report.py diagnose --runs
    if diagnoses.exists():
        lines += diagnosis_table(json.loads(diagnoses.read_text())["runs"])
    lines += q_bias_table(result_runs("q_bias.json", out))  # ... campaign_report.py qbias --runs
    return rows, lines


def tuning() -> None:
    import matplotlib.pyplot as plt

    out = common.RESULTS / "tuning"
    rows, lines = tuning_summary(out, common.RESULTS / "campaign")
    common.write_json(out / "summary.json", {"rows": rows, "meta": common.provenance()})
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    screened = common.read_jsonl(out / "runs.jsonl")
    baseline = common.read_jsonl(common.RESULTS / "campaign" / "runs.jsonl")

    # Unfinished screens (``SB3_WPO_CAMPAIGN_OUT=benchmarks/results/tuning campaign_report.py snapshot --runs ...``)
    in_progress = [run for run in result_runs("in_progress.json", out) if not run.get("lost")]
    tasks = sorted({row["env_id"] for row in rows} | {run["env_id"] for run in in_progress})
    # a panel per task, its legend below it: a screen has more runs than a panel can hold
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 9), squeeze=False)
    for ax, env_id in zip(axes[0], tasks, strict=True):
        budget = max(row["steps"] for row in rows + in_progress if row["env_id"] == env_id)
        variants = {"sac", "wpo", *(row["variant"] for row in rows), *(run["algo"] for run in in_progress)}
        for group, kind, style, width in (
            (baseline, " (campaign)", ":", 1.0),
            (screened, "", "-", 1.6),
            (in_progress, " (in progress)", "--", 1.6),
        ):
            for record in group:
                if record["env_id"] != env_id or record["algo"] not in variants:
                    continue
                curve = [point for point in record["curve"] if point["timesteps"] <= budget]
                ax.plot(
                    [point["timesteps"] for point in curve],
                    [point["eval_mean"] for point in curve],
                    style,
                    color=COLORS[record["algo"]],
                    lw=width,
                    label=f"{record['algo']} s{record['seed']}{kind}",
                )
        ax.set(title=env_id, xlabel="environment steps", ylabel="evaluation return (10 episodes)")
        ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    fig.subplots_adjust(top=0.95, bottom=0.5, left=0.04, right=0.99, wspace=0.2)
    common.save_figure(fig, out / "curves.png", common.provenance())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("snapshot", "diagnose", "noise", "qbias", "report", "tuning"))
    parser.add_argument("--runs", nargs="+", help="snapshot, diagnose, qbias: run folder names (default: the plan's runs)")
    args = parser.parse_args()
    if args.runs and args.command not in ("snapshot", "diagnose", "qbias"):
        parser.error(f"--runs is an option of snapshot, diagnose and qbias, not of {args.command}")
    if args.command in ("snapshot", "diagnose", "qbias"):
        {"snapshot": snapshot, "diagnose": diagnose, "qbias": q_bias}[args.command](args.runs)
    else:
        {"noise": action_noise, "report": report, "tuning": tuning}[args.command]()


if __name__ == "__main__":
    main()
