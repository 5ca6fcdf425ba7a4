"""The README's claims against the repository: its results table against the committed summaries (the numbers' one
home), its links against the files, its Python snippets against the package."""

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch as th

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CAMPAIGN_SUMMARY = ROOT / "benchmarks" / "results" / "campaign" / "summary.json"
RETURNS_SUMMARY = ROOT / "benchmarks" / "results" / "returns" / "summary.json"
TABLE_MARKER = "<!-- results-table:"
VERDICT_MARGIN = 0.05  # the campaign's rule (benchmarks/campaign.py), applied to Pendulum-v1's final returns


def assert_check_rejects(check: Callable[[str], None], old: str, new: str) -> None:
    """``check`` fails on the README with its first ``old`` replaced by ``new`` (a check that can fail)."""
    text = README.read_text()
    assert old in text, f"the README no longer has {old!r}: pick another cell for this test"
    with pytest.raises(AssertionError):
        check(text.replace(old, new, 1))


def results_rows(text: str) -> list[list[str]]:
    """The cells of the results table: the markdown table right after the marker, without its header rows."""
    lines = text[text.index(TABLE_MARKER) :].splitlines()[1:]
    table = [line for line in lines[: next(i for i, line in enumerate(lines) if not line.startswith("|"))]]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]


def number(text: str) -> float:
    return float(text.replace("−", "-").replace(",", ""))


def verdict(wpo: list[float], sac: list[float]) -> str:
    margin = VERDICT_MARGIN * max(abs(value) for value in wpo + sac)
    return "ahead" if min(wpo) > max(sac) + margin else "behind" if max(wpo) < min(sac) - margin else "level"


def expected_rows() -> dict[str, dict[str, Any]]:
    """Per task, what the README's row must say, read from the summaries."""
    rows: dict[str, dict[str, Any]] = {}
    returns = {(g["env_id"], g["algo"]): g for g in json.loads(RETURNS_SUMMARY.read_text())["groups"]}
    wpo, sac = returns["Pendulum-v1", "wpo"], returns["Pendulum-v1", "sac"]
    rows["Pendulum-v1"] = {
        "steps": wpo["steps"],
        "wpo": (wpo["final_mean"], wpo["final_std"], wpo["n_seeds"]),
        "sac": (sac["final_mean"], sac["final_std"], sac["n_seeds"]),
        "verdict": verdict(wpo["final_returns"], sac["final_returns"]),
    }
    rows["Pendulum-v1"]["reference"] = None  # wpo.yml's Pendulum-v1 entry has its own study
    campaign = json.loads(CAMPAIGN_SUMMARY.read_text())
    groups = {(g["env_id"], g["algo"]): g for g in campaign["groups"]}
    for row in campaign["shipped_verdicts"]:  # wpo.yml's entry of each task (its family's candidate) against SAC
        shipped, sac = groups.get((row["env_id"], row["algo"])), groups[row["env_id"], "sac"]
        reference = groups[row["env_id"], "wpo"]  # the reference's example settings: the ablation column
        assert shipped is None or shipped["steps"] == sac["steps"] == reference["steps"]
        rows[row["env_id"]] = {
            "steps": sac["steps"],
            "wpo": (shipped["last3_mean"], None, len(shipped["seeds"])) if shipped else None,
            "sac": (sac["last3_mean"], None, len(sac["seeds"])),
            "verdict": row["verdict"],
            "reference": (reference["last3_mean"], None, len(reference["seeds"])),
        }
    return rows


def check_cell(cell: str, expected: tuple[float, float | None, int] | None) -> None:
    """A cell of returns, ``mean ± std (seeds)`` or ``mean (seeds)``; ``—`` where the summaries have no runs."""
    if expected is None:
        assert cell == "—", f"{cell!r}: the summaries have no such runs"
        return
    mean, std, seeds = expected
    match = re.fullmatch(r"([−\-\d.,]+)(?: ± ([\d.,]+))? \((\d+)\)", cell)
    assert match, f"cannot read the cell {cell!r}"
    assert number(match[1]) == round(mean, 1), f"{cell!r}: the summary says {mean:.1f}"
    if std is not None:
        assert match[2] is not None and number(match[2]) == round(std, 1), f"{cell!r}: the summary's std is {std:.1f}"
    assert int(match[3]) == seeds, f"{cell!r}: the summary has {seeds} seeds"


def check_results_table(text: str) -> None:
    expected = expected_rows()
    rows = results_rows(text)
    assert [row[0] for row in rows] == list(expected), "the table's tasks must be the summaries' tasks, in their order"
    for task, steps, wpo, sac, verdict_cell, reference, _link in rows:
        row = expected[task]
        assert number(steps) == row["steps"], f"{task}: {steps} steps, the summary has {row['steps']}"
        check_cell(wpo, row["wpo"])
        check_cell(sac, row["sac"])
        check_cell(reference, row["reference"])
        assert verdict_cell == row["verdict"], f"{task}: the table says {verdict_cell}, the summary {row['verdict']}"


def test_results_table_matches_the_summaries() -> None:
    check_results_table(README.read_text())


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("| 954.6 (3) |", "| 954.7 (3) |"),
        ("| 6.4 (2) |", "| 6.4 (3) |"),
        ("| 872.9 (3) |", "| 872.9 (2) |"),
        ("| level | 5,668.1 (3) |", "| behind | 5,668.1 (3) |"),
        ("| 495.2 (2) | behind |", "| 495.2 (2) | level |"),
        ("| 6.4 (3) | 495.2 (2) |", "| 6.4 (2) | 495.2 (2) |"),
        ("| level | — |", "| level | 859.7 (3) |"),
        ("22.3 (10)", "22.4 (10)"),
        ("| 20,000 |", "| 20,001 |"),
    ],
)
def test_results_check_rejects_a_changed_number(old: str, new: str) -> None:
    assert_check_rejects(check_results_table, old, new)


def settings_rows(text: str) -> dict[str, list[str]]:
    """The cells of the table of the reference and our departures, by setting: reference, ``WPO()``, wpo.yml."""
    lines = text[text.index("| setting | reference") :].splitlines()
    table = lines[2 : next(i for i, line in enumerate(lines) if not line.startswith("|"))]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    return {row[0]: row[1:] for row in cells}


def check_settings_table(text: str) -> None:
    """The ``WPO()`` and wpo.yml columns against WPO's signature and the MuJoCo / DMC family entries."""
    import yaml
    from helpers import policy_defaults, policy_kwargs_of, wpo_defaults
    from torch import nn

    defaults = wpo_defaults()
    entries = yaml.safe_load((ROOT / "hyperparams" / "wpo.yml").read_text())
    mujoco, dm_control = entries["mujoco"], entries["dm_control"]
    kwargs = policy_kwargs_of(mujoco["policy_kwargs"])
    rows = {
        setting: dict(zip(("reference", "default", "entry"), cells, strict=True))
        for setting, cells in settings_rows(text).items()
    }
    assert rows["samples N"]["default"] == str(defaults["num_samples"])
    assert rows["samples N"]["entry"] == str(mujoco["num_samples"])
    assert rows["updates per env step"]["default"].startswith(f"{defaults['gradient_steps'] / defaults['train_freq']:g} ")
    assert rows["updates per env step"]["entry"].startswith(f"{mujoco['gradient_steps'] / mujoco['train_freq']:g},")
    assert f"policy_delay={mujoco['policy_delay']}" in rows["updates per env step"]["entry"]

    def rate(entry: dict) -> str:
        return f"{entry['learning_rate']:.0e}".replace("e-0", "e-")

    assert rows["learning rate"]["default"].startswith(rate(defaults))
    family_rates = dict.fromkeys(map(rate, (mujoco, dm_control)))  # dm_control's merges mujoco's unless it sets its own
    assert rows["learning rate"]["entry"] == " / ".join(family_rates), "MuJoCo / DMC, one value where equal"
    assert rows["n-step returns"]["default"].startswith(f"{defaults['n_steps']} ")
    assert rows["n-step returns"]["entry"] == str(mujoco["n_steps"])
    assert rows["warm-up"]["default"].startswith(f"{defaults['learning_starts']:,} ")
    assert rows["warm-up"]["entry"].startswith(f"{mujoco['learning_starts']:,} ")
    assert rows["networks"]["entry"] == f"LayerNorm MLP {kwargs['net_arch']}, ELU" and kwargs["layer_norm"]
    assert kwargs["activation_fn"] is nn.ELU
    assert f"n_critics={kwargs['n_critics']}" in rows["critics, V(s')"]["entry"]
    policy = policy_defaults()
    assert rows["networks"]["default"] == f"LayerNorm MLP {policy['net_arch']}, ELU" and policy["layer_norm"]
    assert policy["activation_fn"] is nn.ELU
    assert f"n_critics={policy['n_critics']}" in rows["critics, V(s')"]["default"]
    assert f"policy_delay={defaults['policy_delay']}" in rows["updates per env step"]["default"]
    assert mujoco["target_aggregation"] == "mean" and "mean over N" in rows["critics, V(s')"]["entry"]
    assert mujoco["dual_learning_rate"] == 0 and "α learned" not in rows["ε_mean / ε_std, α"]["entry"].split(";")[0]
    assert f"dual_learning_rate={dm_control['dual_learning_rate']:g}" in rows["ε_mean / ε_std, α"]["entry"]


def test_settings_table_says_what_ships() -> None:
    check_settings_table(README.read_text())


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("| 20 | 1 | 1 |", "| 20 | 1 | 20 |"),
        ("| 20 | 1 | 1 |", "| 20 | 8 | 1 |"),
        ("| 1e-3 (Adam) | 1e-3 |", "| 1e-3 (Adam) | 1e-3 / 3e-4 |"),
        ("| 1e-3 (Adam) | 1e-3 |", "| 1e-3 (Adam) | 3e-4 |"),
        ("| 1e-3 (Adam) | 1e-3 |", "| 3e-4 (Adam) | 1e-3 |"),
        ("| 1, the policy at every second (`policy_delay=2`)", "| 1, the policy at every second (`policy_delay=3`)"),
        ("(`train_freq=1`), the policy at every second (`policy_delay=2`)", "(`train_freq=1`), the policy (`policy_delay=1`)"),
        ("| 1 (SB3 has no n-step Dict buffer) | 1 |", "| 1 (SB3 has no n-step Dict buffer) | 5 |"),
        ("256), ELU | LayerNorm MLP [256, 256], ELU |", "256), ELU | MLP [256, 256], ReLU |"),
        ("ELU | LayerNorm MLP [256, 256], ELU |\n", "ELU | LayerNorm MLP [256], ELU |\n"),
        ("target actions | two (`n_critics=2`)", "target actions | one (`n_critics=1`)"),
        ("(`dual_learning_rate=0.01`;", "(`dual_learning_rate=0.1`;"),
    ],
)
def test_settings_check_rejects_a_changed_setting(old: str, new: str) -> None:
    assert_check_rejects(check_settings_table, old, new)


def test_relative_links_point_at_files() -> None:
    links = re.findall(r"\]\((?!https?://|#)([^)\s]+)\)", README.read_text())
    assert links, "no relative link found: the pattern is broken"
    missing = [link for link in links if not (ROOT / link.split("#")[0]).exists()]
    assert not missing, f"README links to missing files: {missing}"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_python_snippets_compile() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 3
    for block in blocks:
        compile(block, "README.md", "exec")


def test_loss_snippet_runs_with_the_shapes_it_names() -> None:
    """The loss snippet, run with tensors of the shapes the README gives ([B, D], [N, B, D], [D])."""
    (snippet,) = [block for block in python_blocks() if "wpo_loss(" in block]
    n, b, d = 4, 3, 2
    names: dict[str, Any] = {
        "online_mean": th.zeros(b, d, requires_grad=True),
        "online_std": th.ones(b, d, requires_grad=True),
        "target_mean": th.zeros(b, d),
        "target_std": th.ones(b, d),
        "actions": th.randn(n, b, d),
        "q_grads": th.randn(n, b, d),
        "log_alpha_mean": th.zeros(d),
        "log_alpha_std": th.zeros(d),
    }
    exec(snippet, names)
    assert names["loss"].shape == ()
    names["loss"].backward()
    assert names["online_mean"].grad is not None and th.isfinite(names["online_mean"].grad).all()


QUICK_START_CLAIM = "The defaults solve Pendulum-v1 in 20,000 steps"


def constant_schedules_as_values(settings: dict) -> dict:
    """Settings with a constant schedule as its value: the zoo hands SB3 ``ConstantSchedule(val=1e-3)`` where
    ``WPO(...)`` keeps ``1e-3``, the same learning rate (records hold the schedule's repr)."""
    constant = re.compile(r"ConstantSchedule\(val=(.+)\)")
    return {
        key: float(match[1]) if isinstance(value, str) and (match := constant.fullmatch(value)) else value
        for key, value in settings.items()
    }


# Policy options added after the defaults' benchmark ran, with the default that keeps the code path it ran (the
# update at the defaults is bit-identical to before: tests/test_refactor_identity.py)
POLICY_OPTIONS_ADDED_SINCE: dict[str, Any] = {"max_std": None}


def check_quick_start_claim(text: str) -> None:
    """The README's claim after its quick start rests on the summary it links: every seed (5 at least) of WPO at
    today's defaults ends above −200 at 20,000 steps. A record holds the settings its model was built with
    (``settings``); one older than that field, the hyperparameters its zoo entry set, the rest left to the defaults."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import common

    from sb3_wpo import WPO

    claim = text[text.index(QUICK_START_CLAIM) :][:300]
    link = re.search(r"\]\((benchmarks/results/defaults/[^)]+)/summary\.md\)", claim)
    assert link is not None, "the claim links the summary of its benchmark"
    records = [json.loads(line) for line in (ROOT / link[1] / "runs.jsonl").open()]
    runs = [record for record in records if record["algo"] == "wpo"]
    defaults = common.model_settings(WPO("MlpPolicy", "Pendulum-v1"))
    assert len({run["seed"] for run in runs}) == len(runs) >= 5
    for run in runs:
        assert (run["env_id"], run["steps"]) == ("Pendulum-v1", 20_000)
        settings = run.get("settings") or {key: value for key, value in run["hyperparams"].items() if key != "policy"}
        ran = constant_schedules_as_values(settings)
        today = {key: defaults[key] for key in settings}
        if isinstance(settings.get("policy_kwargs"), dict):  # options the policy gained after the record, left off
            recorded = settings["policy_kwargs"]
            today["policy_kwargs"] = {
                key: value
                for key, value in today["policy_kwargs"].items()
                if key in recorded or POLICY_OPTIONS_ADDED_SINCE.get(key, ...) != value
            }
        assert constant_schedules_as_values(today) == ran, f"seed {run['seed']} did not run at today's defaults"
        assert run["final_return"] > -200, f"seed {run['seed']} ends at {run['final_return']:.1f}"


def test_quick_start_claim_rests_on_a_benchmark_of_the_defaults() -> None:
    check_quick_start_claim(README.read_text())


def test_quick_start_check_rejects_a_benchmark_of_other_settings() -> None:
    text = README.read_text()
    earlier = "benchmarks/results/defaults/learning_starts_1000/summary.md"
    link = re.search(r"\]\((benchmarks/results/defaults/[^)]+/summary\.md)\)", text[text.index(QUICK_START_CLAIM) :])
    assert link is not None and link[1] != earlier
    with pytest.raises(AssertionError):
        check_quick_start_claim(text.replace(link[1], earlier))
