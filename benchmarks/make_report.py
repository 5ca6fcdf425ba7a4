"""Write benchmarks/README.md (the results page) from the committed result files.

Every number in the tables comes from benchmarks/results/{speed/speed.json, update_cost/update_cost.json,
returns/summary.json, epsilon_sweep/summary.json, gradient_variance/results.json, campaign/summary.json}; the prose
notes are in benchmarks/notes/*.md (written by hand after reading the results) and are pasted in as they are.

    python benchmarks/make_report.py
"""

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

BENCH = common.ROOT / "benchmarks"
RES = common.RESULTS


def load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def note(name: str) -> str:
    path = BENCH / "notes" / f"{name}.md"
    return path.read_text().strip() + "\n" if path.exists() else ""


def ms(x: float) -> str:
    return f"{x * 1e3:.2f}"


def machine_line(meta: dict[str, Any]) -> str:
    m = meta["machine"]
    return (
        f"`{meta['command']}` at commit `{meta['commit']}`, {meta['date_utc']} UTC, on {m['cpu']} "
        f"(`platform.processor()` = {m['processor']!r}, {m['cpu_count']} cores), torch {m['torch']} on 1 thread, "
        f"Python {m['python']}"
    )


def timing_table(rows: dict[str, dict[str, Any]], unit: str) -> list[str]:
    lines = [
        f"| | wall min ({unit}) | wall median ({unit}) | CPU min ({unit}) | CPU median ({unit}) | repeats |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in rows.items():
        lines.append(
            f"| {name} | {ms(t['wall_min'])} | {ms(t['wall_median'])} | {ms(t['cpu_min'])} | "
            f"{ms(t['cpu_median'])} | {t['repeats']} |"
        )
    return lines


def ratio_line(name: str, r: dict[str, float]) -> str:
    return (
        f"{name}: wall min {r['wall_min']:.2f}, wall median {r['wall_median']:.2f} "
        f"(CPU time: min {r['cpu_min']:.2f}, median {r['cpu_median']:.2f})"
    )


def timing_block(
    heading: str, timings: dict[str, dict[str, Any]], unit: str, ratios: dict[str, dict[str, float]]
) -> list[str]:
    """One env's timing table under its heading, then one line per ratio."""
    return [heading, "", *timing_table(timings, unit), "", *("- " + ratio_line(k, r) for k, r in ratios.items()), ""]


def speed_section(speed: dict[str, Any] | None) -> list[str]:
    """The speed results: the tables from speed.json, in the text of ``notes/speed_method.md`` (what each part
    measures), then the reading of the results (``notes/speed.md``)."""
    out = ["## 1. Speed (`benchmarks/speed.py`)", ""]
    if speed is None:
        return [*out, "Not run yet: `python benchmarks/speed.py`.", ""]
    h, s, mm = speed["headline"], speed["score_method"], speed["matmul"]
    updates: list[str] = []
    for env_id, r in speed["updates"].items():
        updates += timing_block(
            f"{env_id}, `model.train(gradient_steps={speed['args']['updates']}, batch_size=256)`, per update:",
            r["per_update_s"],
            "ms",
            {
                "WPO / SAC": r["ratio_WPO_over_SAC"],
                "WPO / TD3": r["ratio_WPO_over_TD3"],
                "WPO N=20 / SAC": r["ratio_WPO_N20_over_SAC"],
            },
        )
    learn: list[str] = []
    for env_id, r in speed["learn"].items():
        learn += timing_block(
            f"{env_id}, per environment step:",
            r["per_env_step_s"],
            "ms/step",
            {"WPO / SAC": r["ratio_WPO_over_SAC"], "WPO N=20 / SAC": r["ratio_WPO_N20_over_SAC"]},
        )
    critic_split: list[str] = []
    for env_id, r in speed["critic_split"].items():
        critic_split += timing_block(
            f"**{env_id}** (obs_dim {r['obs_dim']}, shipped: {r['shipped']})",
            r["per_update_s"],
            "ms",
            {"split / concatenated": r["ratio_split_over_concatenated"]},
        )
    grid = [
        "| N | batch | wall median (ms) | CPU median (ms) | matmul GFLOP | GFLOP/s (wall) "
        "| fraction of th.mm peak (wall / CPU) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in speed["grid"]["rows"]:
        grid.append(
            f"| {row['num_samples']} | {row['batch_size']} | {ms(row['wall_median'])} | {ms(row['cpu_median'])} | "
            f"{row['flops'] / 1e9:.3f} | {row['gflops_achieved']:.1f} | {row['fraction_of_matmul_peak']:.0%} / "
            f"{row.get('fraction_of_matmul_peak_cpu_time', float('nan')):.0%} |"
        )
    flops = [
        f"- Pendulum-v1, {key}, B=256, [256, 256]: F_c = {g['per_row_critic_fwd']:,}, F_a = {g['per_row_actor_fwd']:,} "
        f"→ {g['total'] / 1e9:.2f} GFLOP per update; achieved {g['achieved_gflops']:.1f} GFLOP/s on wall time = "
        f"{g['fraction_of_peak']:.0%} of the measured th.mm peak ({g['achieved_gflops_cpu_time']:.1f} GFLOP/s = "
        f"{g['fraction_of_peak_cpu_time']:.0%} on process CPU time)."
        for key, g in speed["flops"]["pendulum_B256"].items()
    ]
    profile = ["| op | calls | self CPU (ms) | share |", "|---|---|---|---|"]
    for op in speed["profile"]["top_self_cpu"]:
        profile.append(f"| `{op['op']}` | {op['count']} | {op['self_cpu_ms']:.1f} | {op['share']:.1%} |")
    text = (
        note("speed_method")
        .rstrip("\n")
        .format(
            run=machine_line(speed["meta"]),
            load_before=speed["load_before"],
            load_after=speed["load_after"],
            settings=json.dumps({k: v for k, v in speed["args"].items() if k not in ("out",)}),
            wpo_settings=json.dumps(h["settings"]["WPO"]),
            sac_settings=json.dumps(h["settings"]["SAC"]),
            headline_steps=speed["args"]["headline_steps"],
            headline_table="\n".join(timing_table(h["per_env_step_s"], "ms/step")),
            headline_ratio=ratio_line("WPO / SAC wall-clock per environment step", h["ratio_WPO_over_SAC"]),
            wpo_num_samples=next(iter(speed["updates"].values()))["wpo_num_samples"],
            updates="\n".join(updates),
            learn="\n".join(learn),
            score_env=s["full_update_env"],
            score_table="\n".join(
                timing_table(
                    {f"loss {k}": v for k, v in s["loss_fwd_bwd_N20_B256_D6_s"].items()}
                    | {f"full update {k}": v for k, v in s["full_update_s"].items()},
                    "ms",
                )
            ),
            score_loss_ratio=ratio_line("loss: autograd / closed form", s["loss_ratio_autograd_over_closed_form"]),
            score_update_ratio=ratio_line("full update: autograd / closed form", s["update_ratio_autograd_over_closed_form"]),
            critic_split="\n".join(critic_split),
            grid_table="\n".join(grid),
            mm_best=mm["square_2048"]["gflops_best"],
            mm_median=mm["square_2048"]["gflops_median"],
            mm_critic=mm["critic_hidden_5120x256x256"]["gflops_best"],
            flops_lines="\n".join(flops),
            profile_table="\n".join(profile),
        )
    )
    return [*out, *text.split("\n"), "", note("speed"), "![speed](results/speed/speed.png)", ""]


def update_cost_section(cost: dict[str, Any] | None) -> list[str]:
    out = ["## 1b. One update against the matmul floor, and the allocator (`benchmarks/update_cost.py`)", ""]
    if cost is None:
        return [*out, "Not run yet: `python benchmarks/update_cost.py`.", ""]
    args = cost["args"]
    out += [
        f"Run: {machine_line(cost['meta'])}.",
        f"Load average before: {cost['load_before']}, after: {cost['load_after']}. {args['repeats']} child processes "
        f"per variant (interleaved), {args['timings']} timings of {args['updates']} updates each.",
        "",
        "| sizes (obs/act) | N | hidden | glibc default: ms/update (min / median) | kept: ms/update (min / median) "
        "| speed-up (median) | page faults per update (default → kept) | matmul GFLOP | matmul floor (ms) "
        "| kept ÷ floor |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, r in cost["update"].items():
        before, after = r["glibc default"], r["kept"]
        out.append(
            f"| {size} | {r['num_samples']} | {r['hidden']} | {ms(before['wall_min'])} / {ms(before['wall_median'])} "
            f"| {ms(after['wall_min'])} / {ms(after['wall_median'])} | {r['speedup_kept_over_default']['wall_median']:.2f}× "
            f"| {before['page_faults_per_update_median']:.0f} → {after['page_faults_per_update_median']:.0f} "
            f"| {r['flops_per_update'] / 1e9:.2f} | {ms(r['matmul_floor_s'])} | {r['max_speedup_left']:.2f} |"
        )
    process = cost["process"]
    out += [
        "",
        f"Whole process, `python {process['command']}` (seconds, {args['repeats']} interleaved repeats):",
        "",
        "| | wall min | wall median | CPU median | ÷ SAC (wall median) |",
        "|---|---|---|---|---|",
    ]
    for name, t in process["per_process_s"].items():
        r = process["ratio_over_SAC"].get(name)
        out.append(
            f"| {name} | {t['wall_min']:.1f} | {t['wall_median']:.1f} | {t['cpu_median']:.1f} "
            f"| {'' if r is None else format(r['wall_median'], '.2f')} |"
        )
    compiled = cost.get("compiled")
    if compiled:
        out += [
            "",
            "The N·B-row core of the update, eager vs `torch.compile` (ms per call, medians; ∇a Q compiled through "
            "`torch.func.grad_and_value`):",
            "",
            "| sizes | computation | eager | compiled | speed-up | largest difference | compile (s) |",
            "|---|---|---|---|---|---|---|",
        ]
        for size, row in compiled.items():
            for name, r in row.items():
                if not isinstance(r, dict):
                    continue
                if "error" in r:
                    out.append(f"| {size} | {name} | | | failed: `{r['error']}` | | |")
                    continue
                out.append(
                    f"| {size} | {name} | {ms(r['eager_wall_median'])} | {ms(r['compiled_wall_median'])} "
                    f"| {r['speedup_median']:.2f}× | {r['max_abs_difference']:.1e} | {r['compile_s']:.0f} |"
                )
    out += ["", note("update_cost"), "![update cost](results/update_cost/update_cost.png)", ""]
    return out


def returns_section(summary: dict[str, Any] | None) -> list[str]:
    out = ["## 2. Returns (`benchmarks/returns.py`)", ""]
    if summary is None:
        return [*out, "Not run yet.", ""]
    sys.path.insert(0, str(BENCH))
    from returns import markdown_table

    out += [
        f"Summary written by {machine_line(summary['meta'])}.",
        "Deterministic evaluation every 2,000 steps on a separate environment (10 episodes, eval env seeded "
        "seed + 10,000); final return = the last evaluation (at the step budget). Hyperparameters: rl-zoo3 "
        "`sac.yml`, `td3.yml`, `tqc.yml` (parsed as rl-zoo3's ExperimentManager does: `lin_` schedules, "
        "policy_kwargs strings, TD3's `noise_type`/`noise_std`), and `hyperparams/wpo.yml` for WPO. Wall-clock and CPU "
        "time exclude evaluation; wall-clock is inflated by other jobs on the same 2 cores (2 runs in parallel).",
        "",
        markdown_table(summary),
        "Per-seed final returns:",
        "",
    ]
    for g in summary["groups"]:
        out.append(f"- {g['env_id']} {g['algo'].upper()} (seeds {g['seeds']}): {g['final_returns']}")
    out += ["", note("returns")]
    for png in sorted((RES / "returns").glob("curves_*.png")):
        out.append(f"![{png.stem}](results/returns/{png.name})")
    out.append("")
    return [*out, *defaults_section()]


def defaults_section() -> list[str]:
    """The constructor defaults on Pendulum-v1 (the quick start), one summary per setting of the defaults
    (``results/defaults/<name>``), with the command that made it."""
    out = ["### The constructor defaults on Pendulum-v1 (`returns.py --defaults`)", "", note("defaults")]
    for folder in sorted(path.parent for path in (RES / "defaults").glob("*/summary.json")):
        summary = load(folder / "summary.json")
        out += [
            f"`results/defaults/{folder.name}`: {machine_line(summary['meta'])}.",
            "",
            (folder / "summary.md").read_text(),
            f"![{folder.name}](results/defaults/{folder.name}/curves_Pendulum-v1.png)",
            "",
        ]
    return out


def sweep_section(summary: dict[str, Any] | None) -> list[str]:
    out = ["## 3. ε sweep (`benchmarks/epsilon_sweep.py`)", ""]
    if summary is None:
        return [*out, "Not run.", ""]
    from epsilon_sweep import markdown_tables

    out += [
        f"Summary written by {machine_line(summary['meta'])}.",
        "",
        markdown_tables(summary),
        note("epsilon"),
        "![epsilon sweep](results/epsilon_sweep/epsilon_sweep.png)",
        "",
    ]
    return out


def variance_section(result: dict[str, Any] | None) -> list[str]:
    out = ["## 4. Variance of the policy-gradient estimate (`benchmarks/gradient_variance.py`)", ""]
    if result is None:
        return [*out, "Not run yet: `python benchmarks/gradient_variance.py`.", ""]
    settings = result["settings"]
    max_diff = max(c["max_abs_wpo_minus_reparam"] for c in result["cells"])
    max_z = max(row["max_abs_bias_z"] for row in result["summary"])
    out += [
        f"Run: {machine_line(result['meta'])}; {settings['repeats']:,} independent estimates per cell, "
        f"N = 1, 2, …, {2 ** settings['max_log2_n']}, σ in {settings['sigmas']}. Q functions: "
        + "; ".join(f"`{name}` Q(a) = {q['formula']} at μ = {q['mu']}" for name, q in result["q_functions"].items())
        + ".",
        "",
        "Relative variance = Var[estimate] / (its expected value)², the expected value exact (∇J from J in closed form; "
        "F·∇J for plain WPO). N·relvar is about constant in N (the median over N is shown); the ratios are "
        "relvar(REINFORCE) / relvar(WPO) over N ≥ 2, min / median / max: above 1, WPO's estimate is the less noisy. "
        f"Rescaled WPO and the reparameterization gradient agree sample by sample (largest difference {max_diff:.1e}), "
        "plain WPO differs from them by constant factors, so the three have one relative variance (the column WPO). "
        f"All estimators are unbiased: the largest |mean − expected| is {max_z:.2f} standard errors over all cells.",
        "",
        "| Q | σ | parameter | ∂J | N·relvar WPO (= reparam.) | N·relvar REINFORCE | N·relvar REINFORCE-LOO "
        "| REINFORCE / WPO | REINFORCE-LOO / WPO |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def ratio(row: dict[str, Any], name: str) -> str:
        return " / ".join(f"{row[f'{name}_over_wpo_{stat}']:.3g}" for stat in ("min", "median", "max"))

    for row in result["summary"]:
        out.append(
            f"| {row['q']} | {row['sigma']:g} | {'μ' if row['param'] == 'mu' else 'σ'} | {row['true_grad']:.3g} "
            f"| {row['wpo_n_times_rel_var_median']:.3g} | {row['reinforce_n_times_rel_var_median']:.3g} "
            f"| {row['reinforce_loo_n_times_rel_var_median']:.3g} "
            f"| {ratio(row, 'reinforce')} | {ratio(row, 'reinforce_loo')} |"
        )
    out += ["", note("gradient_variance"), "![gradient variance](results/gradient_variance/gradient_variance.png)", ""]
    return out


def tuning_section() -> list[str]:
    """The tuning screen of issue 26 (notes/tuning.md): its table and figure, the variants' cost against SAC's, and the
    Pendulum-v1 entry's whole training process against SBX's SAC."""
    out = ["## 6. Tuning for SB3's budgets (`benchmarks/campaign.py`, `variant_cost.py`, `pendulum_process.py`)", ""]
    out += [note("tuning"), ""]
    costs = [RES / "tuning" / "cost.md", *sorted((RES / "tuning").glob("cost_*/cost.md"))]  # each a side-by-side run
    for table in (RES / "tuning" / "summary.md", *costs, RES / "pendulum_process" / "summary.md"):
        if table.exists():
            out += [f"`{table.relative_to(BENCH)}`:", "", table.read_text(), ""]
    for figure in (RES / "tuning" / "curves.png", RES / "pendulum_process" / "pendulum_process.png"):
        if figure.exists():
            out += [f"![{figure.stem}]({figure.relative_to(BENCH)})", ""]
    return out


def campaign_section(summary: dict[str, Any] | None) -> list[str]:
    out = ["## 5. Beyond Pendulum: DeepMind Control and MuJoCo (`benchmarks/campaign.py`)", "", note("campaign"), ""]
    if summary is not None and summary["groups"]:
        out += [(RES / "campaign" / "summary.md").read_text(), ""]
    if (RES / "campaign" / "overview.png").exists():
        out += ["![every task so far](results/campaign/overview.png)", ""]
    for png in sorted((RES / "campaign").glob("curves_*.png")):
        out.append(f"![{png.stem}](results/campaign/{png.name})")
    out.append("")
    return out


def render() -> str:
    """The results page, from the committed result files and notes."""
    speed = load(RES / "speed" / "speed.json")
    cost = load(RES / "update_cost" / "update_cost.json")
    returns = load(RES / "returns" / "summary.json")
    sweep = load(RES / "epsilon_sweep" / "summary.json")
    variance = load(RES / "gradient_variance" / "results.json")
    campaign = load(RES / "campaign" / "summary.json")
    lines = [
        "# Benchmarks",
        "",
        "<!-- generated by `python benchmarks/make_report.py` from benchmarks/results/*; edit benchmarks/notes/*.md -->",
        "",
        note("intro"),
        *speed_section(speed),
        *update_cost_section(cost),
        *returns_section(returns),
        *sweep_section(sweep),
        *variance_section(variance),
        *campaign_section(campaign),
        *tuning_section(),
        note("not_run"),
    ]
    return "\n".join(lines)


def main() -> None:
    (BENCH / "README.md").write_text(render())
    print(f"wrote {BENCH / 'README.md'}")


if __name__ == "__main__":
    main()
