"""RL Zoo integration (sb3_wpo/zoo.py, sb3_wpo/_zoo_hook.py, sb3_wpo_zoo_hook.pth, hyperparams/wpo.yml).

The subprocess tests run the zoo's own commands, as rl-baselines3-zoo's tests do, against the *installed*
sb3-wpo (``pip install -e .`` in CI): they need the start-up hook that the .pth file installs.
``test_installed_wheel_and_editable`` builds a wheel and an editable wheel and runs the zoo's commands in a fresh
environment with each installed."""

import ast
import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import tarfile
import venv
import warnings
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import optuna
import pytest
import shimmy  # noqa: F401  (registers the dm_control/ ids, for zoo.task_family)
import yaml


from stable_baselines3 import SAC
from torch import nn

from sb3_wpo import WPO, _zoo_hook, zoo
from helpers import EARLIER_DEFAULTS, EARLIER_POLICY_DEFAULTS, policy_defaults, policy_kwargs_of, wpo_defaults

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "hyperparams" / "wpo.yml"
ENV_IDS = (
    "Pendulum-v1",
    "MountainCarContinuous-v0",
    "LunarLanderContinuous-v3",
    "BipedalWalker-v3",
    "HalfCheetah-v5",
    "Hopper-v5",
    "Walker2d-v5",
    "Ant-v5",
    "Humanoid-v5",
    "dm_control/humanoid-stand-v0",
    "dm_control/humanoid-walk-v0",
    "dm_control/cartpole-swingup-v0",
    "dm_control/walker-walk-v0",
    "dm_control/cheetah-run-v0",
)
NOT_RUN = "no committed benchmark"
# Small budgets: 300 steps, learning from step 200 with small batches (a few seconds per run on one thread).
N_STEPS = "300"
SMALL = ["learning_starts:200", "batch_size:32", "num_samples:4", "buffer_size:1000"]


def run(args, cwd, env_update=None, check=True, python=sys.executable):
    """Run ``python args...`` like a user would (one torch thread); returns the CompletedProcess."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop(_zoo_hook.ENV_VAR, None)
    env.update(env_update or {})
    result = subprocess.run(
        [str(python), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if check:
        assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def train_args(log_folder, *extra):
    return ["--algo", "wpo", "--env", "Pendulum-v1", "-n", N_STEPS, "-f", log_folder, "--num-threads", "1", *extra]


# ---------------------------------------------------------------- config


def test_one_config_file():
    """hyperparams/wpo.yml is the only copy in the repository, and the default config of a source checkout (an
    editable install); wheels ship it as sb3_wpo/hyperparams/wpo.yml (``test_installed_wheel_and_editable``)."""
    assert not (ROOT / "sb3_wpo" / "hyperparams").exists()
    assert zoo.DEFAULT_CONFIG == CONFIG.resolve()


def wpo_settings(hyperparams: dict, earlier: bool = False) -> dict:
    """An entry's or a run's settings as WPO takes them, without the budget: WPO's defaults where they are not set,
    or (``earlier``, for the benchmark records) the defaults the records ran with."""
    defaults, policy = wpo_defaults(), policy_defaults()
    if earlier:
        defaults, policy = {**defaults, **EARLIER_DEFAULTS}, {**policy, **EARLIER_POLICY_DEFAULTS}
    settings = {name: value for name, value in {**defaults, **hyperparams}.items() if name != "n_timesteps"}
    return {**settings, "policy_kwargs": {**policy, **policy_kwargs_of(settings["policy_kwargs"])}}


def test_config_entries():
    """Each entry says what stands behind it: for a family, the campaign, which ran its settings on the family's tasks;
    for a listed task, the committed runs (campaign, tuning screen, returns) of its settings, where there are such
    runs (Pendulum-v1 has them); else that no committed benchmark stands behind it. The records written before WPO's
    defaults changed are read with the defaults they ran with."""
    config = yaml.safe_load(CONFIG.read_text())
    assert set(config) == {"default", *zoo.FAMILIES, *ENV_IDS}
    results = ROOT / "benchmarks" / "results"
    # (where a run's record is, the record)
    runs = [
        (name, run)
        for name in ("campaign", "tuning", "returns")
        for run in map(json.loads, (results / name / "runs.jsonl").open())
        if run["algo"].startswith("wpo")
    ]
    pointers = {
        "campaign": ("benchmarks/results/campaign",),
        "tuning": ("benchmarks/results/tuning", "benchmarks/notes/tuning.md"),
        "returns": ("benchmarks/results/returns",),
    }
    lines = CONFIG.read_text().splitlines()
    for key in config:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
        comments = []
        for line in reversed(lines[:index]):
            if not line.startswith("#"):
                break
            comments.append(line)
        tasks = [
            run for run in runs if (zoo.task_family(run[1]["env_id"]) if key in zoo.FAMILIES else run[1]["env_id"]) == key
        ]
        ran = {where for where, run in tasks if wpo_settings(run["hyperparams"], earlier=True) == wpo_settings(config[key])}
        text = " ".join(comments)
        if key == "Pendulum-v1":
            assert ran == {"returns"}, "the Pendulum-v1 entry is what its benchmark ran"
        if ran:
            assert NOT_RUN not in text, key
            assert any(pointer in text for where in ran for pointer in pointers[where]), f"{key}: say where its runs are"
        else:
            assert NOT_RUN in text, f"{key} has no committed run of its settings: its comment must say {NOT_RUN!r}"


@pytest.mark.parametrize("key", ["default", *zoo.FAMILIES, *ENV_IDS])
def test_config_arguments_are_valid(key):
    """Every entry's arguments are accepted by WPO (checked at construction, before any model is built)."""
    hyperparams = dict(yaml.safe_load(CONFIG.read_text())[key])
    assert hyperparams.pop("policy") == "MlpPolicy"
    assert float(hyperparams.pop("n_timesteps")) > 0
    hyperparams.pop("env_wrapper", None)
    policy_kwargs = policy_kwargs_of(hyperparams.pop("policy_kwargs", None))
    model = WPO("MlpPolicy", "Pendulum-v1", policy_kwargs=policy_kwargs, _init_setup_model=False, **hyperparams)
    for name, value in hyperparams.items():
        assert getattr(model, name) == value or name in ("train_freq", "learning_rate")


# What a listed task of a family sets differently from its family's entry.
OWN_SETTINGS = {
    "Humanoid-v5": ("n_timesteps",),
    "dm_control/cartpole-swingup-v0": ("n_timesteps",),
    "dm_control/walker-walk-v0": ("n_timesteps",),
    "dm_control/cheetah-run-v0": ("n_timesteps",),
}


def test_listed_tasks_merge_their_family():
    """A family's settings are in its entry alone: a listed task of the family is its family's entry (merged with
    ``<<: *anchor``) and the settings of :data:`OWN_SETTINGS`, so that a change of the family entry reaches listed
    and unlisted tasks alike."""
    config = yaml.safe_load(CONFIG.read_text())
    families = {key: zoo.task_family(key) for key in ENV_IDS}
    assert set(families.values()) == {None, *zoo.FAMILIES}
    for key, family in families.items():
        if family is not None:
            assert config[key] == {**config[family], **{name: config[key][name] for name in OWN_SETTINGS.get(key, ())}}, key


def test_task_family():
    """Every DeepMind Control Suite task (shimmy's ``dm_control/<domain>-<task>-v0`` ids of ``suite.ALL_TASKS``) is
    of the ``dm_control`` family, every Gymnasium MuJoCo task of ``mujoco``; nothing else is, registered or not."""
    from dm_control import suite

    registry = gym.envs.registry
    suite_ids = {f"dm_control/{domain}-{task}-v0" for domain, task in suite.ALL_TASKS}
    mujoco_v5 = {key for key in registry if key.endswith("-v5") and "mujoco" in str(registry[key].entry_point)}
    assert len(suite_ids) == len(suite.ALL_TASKS) >= 28 and suite_ids <= set(registry)
    assert {"Swimmer-v5", "Reacher-v5", "HumanoidStandup-v5", "InvertedPendulum-v5", "Pusher-v5"} <= mujoco_v5
    families = {key: zoo.task_family(key) for key in registry}
    assert {key for key, family in families.items() if family == "dm_control"} == suite_ids
    assert mujoco_v5 <= {key for key, family in families.items() if family == "mujoco"}
    assert families["Pendulum-v1"] is None and families["dm_control/lift_brick_features-v0"] is None
    assert zoo.task_family("dm_control/finger-fly-v0") is None and zoo.task_family("Swimmer-v99") is None


def test_config_entry():
    """``--algo wpo`` trains a task with its own entry, else its family's, else ``default``."""
    config = yaml.safe_load(CONFIG.read_text())
    assert zoo.config_entry(config, "Hopper-v5") == "Hopper-v5"
    assert zoo.config_entry(config, "Pendulum-v1") == "Pendulum-v1"
    assert zoo.config_entry(config, "Swimmer-v5") == "mujoco"
    assert zoo.config_entry(config, "dm_control/finger-spin-v0") == "dm_control"
    assert zoo.config_entry(config, "CartPole-v1") == "default"
    assert zoo.config_entry({"Pendulum-v1": {}}, "Swimmer-v5") is None


# ---------------------------------------------------------------- sampler


def test_sampler_and_converter():
    """Sampled hyperparameters build a WPO model, and converting a trial's stored params (``--trial-id``) gives
    the same hyperparameters."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    kl_modes, action_maps, critics, networks = set(), set(), set(), set()
    for _ in range(20):
        trial = study.ask()
        hyperparams = zoo.sample_wpo_params(trial, 1, 1, {"using_her_replay_buffer": False, "her_kwargs": {}})
        assert zoo.convert_wpo_params(trial.params) == hyperparams
        assert hyperparams["gradient_steps"] == hyperparams["train_freq"]
        assert 0.97 <= hyperparams["gamma"] < 1
        # ε is sampled only where it acts (learned duals), so no trial builds a model that warns about a dead ε.
        assert ("epsilon_mean" in hyperparams) == (hyperparams["dual_learning_rate"] > 0)
        kl_modes.add(hyperparams["dual_learning_rate"] > 0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model = WPO("MlpPolicy", "Pendulum-v1", _init_setup_model=False, **hyperparams)
        assert model.policy_kwargs["net_arch"] in zoo.NET_ARCHS.values()
        action_maps.add(model.policy_kwargs["tanh_actions"])
        critics.add((model.policy_kwargs["n_critics"], model.policy_delay))
        networks.add((model.policy_kwargs["layer_norm"], model.policy_kwargs["activation_fn"]))
        study.tell(trial, 0.0)
    assert kl_modes == {True, False} and action_maps == {True, False}
    assert critics == {(1, 1), (1, 2), (2, 1), (2, 2)}
    assert networks == {(True, nn.ELU), (True, nn.ReLU), (False, nn.ELU), (False, nn.ReLU)}
    # A trial stored before tanh_actions, n_critics, policy_delay and the networks joined the search space converts
    # to what it ran with: WPO's defaults of its time, not today's
    newer = ("tanh_actions", "n_critics", "policy_delay", "layer_norm", "activation_fn")
    old_params = {key: value for key, value in trial.params.items() if key not in newer}
    converted = zoo.convert_wpo_params(old_params)
    assert converted["policy_delay"] == 1 != wpo_defaults()["policy_delay"]
    then = dict(tanh_actions=False, n_critics=1, layer_norm=False, activation_fn=nn.ReLU)
    assert {name: converted["policy_kwargs"][name] for name in then} == then


def test_registered_in_zoo_dicts():
    from rl_zoo3 import ALGOS
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER

    zoo.register()
    assert ALGOS["wpo"] is WPO
    assert HYPERPARAMS_SAMPLER["wpo"].__name__ == "sample_wpo_params"
    assert HYPERPARAMS_CONVERTER["wpo"].__name__ == "convert_wpo_params"


def test_load_like_enjoy(tmp_path):
    """rl_zoo3's enjoy / record_video / push_to_hub load agents with these custom objects; WPO, which is not in their
    lists of off-policy algorithms (as sb3-contrib's CrossQ), keeps its saved buffer_size, the others get
    buffer_size=1."""
    WPO("MlpPolicy", "Pendulum-v1", learning_starts=0, batch_size=8, buffer_size=100).save(tmp_path / "agent")
    custom_objects = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0}
    model = WPO.load(tmp_path / "agent.zip", custom_objects=custom_objects, device="auto", seed=0)
    assert model.learning_rate == 0.0 and model.buffer_size == 100
    model = WPO.load(tmp_path / "agent.zip", custom_objects=custom_objects, buffer_size=1, seed=0)
    assert model.learning_rate == 0.0 and model.buffer_size == 1
    with pytest.raises(ValueError, match="learning_rate"):
        WPO.load(tmp_path / "agent.zip", learning_rate=0.0)  # an override in kwargs is still checked


# ---------------------------------------------------------------- hook


def test_install_and_register_are_idempotent():
    from rl_zoo3.exp_manager import ExperimentManager

    for _ in range(3):
        assert _zoo_hook.install()
        zoo.register()
    assert sum(bool(getattr(f, "_sb3_wpo_zoo_hook", False)) for f in sys.meta_path) == 1
    init = ExperimentManager.__init__
    assert init._sb3_wpo_patched and not getattr(init.__wrapped__, "_sb3_wpo_patched", False)
    read = ExperimentManager.read_hyperparameters
    assert read.__name__ == "read_hyperparameters" and not hasattr(read.__wrapped__, "__wrapped__")


def imported_modules(statements):
    """Names of the modules that the import statements among ``statements`` (ast nodes) import."""
    names = set()
    for node in statements:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {node.module or ""} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_imports_go_one_way():
    """The hook imports only os and sys at module level (sb3_wpo.zoo when a zoo module has run); sb3_wpo.zoo never
    imports the hook."""
    hook = ast.parse((ROOT / "sb3_wpo" / "_zoo_hook.py").read_text())
    assert imported_modules(hook.body) == {"__future__", "__future__.annotations", "os", "sys"}
    assert "sb3_wpo.zoo" in imported_modules(ast.walk(hook))
    zoo_imports = imported_modules(ast.walk(ast.parse((ROOT / "sb3_wpo" / "zoo.py").read_text())))
    assert not [name for name in zoo_imports if "_zoo_hook" in name]


CHECK_HOOK = """
import sys
hooked = any(getattr(f, "_sb3_wpo_zoo_hook", False) for f in sys.meta_path)
heavy = sorted(m for m in ("torch", "rl_zoo3", "sb3_wpo", "stable_baselines3", "optuna") if m in sys.modules)
print("start-up:", hooked, heavy)
import rl_zoo3, rl_zoo3.hyperparams_opt, rl_zoo3.exp_manager
print("algos:", "wpo" in rl_zoo3.ALGOS, "wpo" in rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER,
      "wpo" in rl_zoo3.hyperparams_opt.HYPERPARAMS_CONVERTER,
      getattr(rl_zoo3.exp_manager.ExperimentManager.__init__, "_sb3_wpo_patched", False))
if "wpo" in rl_zoo3.ALGOS:
    import sb3_wpo, sb3_wpo.zoo
    print("package:", sb3_wpo.__file__)
    print("config:", sb3_wpo.zoo.DEFAULT_CONFIG)
"""


@pytest.mark.slow
def test_startup_hook_is_installed_and_cheap(tmp_path):
    """The .pth file installs the finder at start-up without importing torch, rl_zoo3 or sb3_wpo; importing the
    zoo registers WPO everywhere."""
    output = run(["-c", CHECK_HOOK], cwd=tmp_path).stdout
    assert "start-up: True []" in output, f"is sb3-wpo installed (pip install -e .)? {output}"
    assert "algos: True True True True" in output


@pytest.mark.slow
def test_startup_hook_can_be_turned_off(tmp_path):
    output = run(["-c", CHECK_HOOK], cwd=tmp_path, env_update={_zoo_hook.ENV_VAR: "1"}).stdout
    assert "start-up: False []" in output
    assert "algos: False False False False" in output


@pytest.mark.parametrize("has_hook_file", [True, False])
def test_startup_hook_is_silent_where_the_package_files_are_gone(tmp_path, has_hook_file):
    """The .pth file runs at every interpreter start-up, for every program: where the sb3_wpo that Python finds has
    no hook file (an editable install whose checkout was moved or deleted), it does nothing and prints nothing."""
    package = tmp_path / "packages" / "sb3_wpo"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    if has_hook_file:
        shutil.copy(ROOT / "sb3_wpo" / "_zoo_hook.py", package)
    (tmp_path / "site").mkdir()
    shutil.copy(ROOT / "sb3_wpo_zoo_hook.pth", tmp_path / "site")
    check = (
        f"import sys, site; sys.path.insert(0, {str(package.parent)!r}); site.addsitedir({str(tmp_path / 'site')!r}); "
        "print('hooked:', any(getattr(f, '_sb3_wpo_zoo_hook', False) for f in sys.meta_path))"
    )
    result = run(["-S", "-c", check], cwd=tmp_path)  # -S: no site-packages, so no installed copy of the hook
    assert result.stdout.strip() == f"hooked: {has_hook_file}" and result.stderr == ""


@pytest.mark.slow
def test_explicit_entry_point_usage(tmp_path):
    result = run(["-m", "sb3_wpo.zoo"], cwd=tmp_path, check=False)
    assert result.returncode == 2 and "usage: python -m sb3_wpo.zoo" in result.stderr
    result = run(["-m", "sb3_wpo.zoo", "fly"], cwd=tmp_path, check=False)
    assert result.returncode == 2 and "unknown script 'fly'" in result.stderr


def wheel_names(wheel):
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The wheel, the editable wheel and the sdist that ``pip install .``, ``pip install -e .`` and ``python -m build``
    make (with this environment's hatchling, the build backend), from a copy of the sources; and a wheel built from
    that sdist."""
    pytest.importorskip("hatchling")
    tmp = tmp_path_factory.mktemp("build")
    source = tmp / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "sb3_wpo_zoo_hook.pth", ".gitignore"):
        shutil.copy(ROOT / name, source / name)
    for name in ("sb3_wpo", "hyperparams"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = "import sys, hatchling.build as b; print(getattr(b, 'build_' + sys.argv[1])(sys.argv[2]))"

    def make(kind, out, cwd):
        out.mkdir()
        return out / run(["-c", build, kind, out], cwd=cwd).stdout.split()[-1]

    artifacts = {kind: make(kind, tmp / kind, source) for kind in ("wheel", "editable", "sdist")}
    with tarfile.open(artifacts["sdist"]) as archive:
        archive.extractall(tmp / "unpacked", filter="data")
    artifacts["from_sdist"] = make("wheel", tmp / "from_sdist", next((tmp / "unpacked").iterdir()))
    return source, artifacts


@pytest.mark.slow
def test_wheels_contain_hook_and_config(built):
    """The .pth file is at the root of the wheel, of the editable wheel and of a wheel built from the sdist; the wheels
    ship hyperparams/wpo.yml as sb3_wpo/hyperparams/wpo.yml; the editable wheel ships no copy of it."""
    _, artifacts = built
    names = wheel_names(artifacts["wheel"])
    assert {"sb3_wpo_zoo_hook.pth", "sb3_wpo/hyperparams/wpo.yml", "sb3_wpo/_zoo_hook.py", "sb3_wpo/zoo.py"} <= set(names)
    assert [name for name in names if not name.startswith(("sb3_wpo/", "sb3_wpo-"))] == ["sb3_wpo_zoo_hook.pth"]
    with zipfile.ZipFile(artifacts["wheel"]) as archive:
        assert archive.read("sb3_wpo/hyperparams/wpo.yml") == CONFIG.read_bytes()
        record = archive.read(next(n for n in names if n.endswith("dist-info/RECORD"))).decode()
    assert "sb3_wpo_zoo_hook.pth," in record  # so that pip uninstall removes it
    with zipfile.ZipFile(artifacts["editable"]) as archive:
        assert archive.read("sb3_wpo_zoo_hook.pth") == (ROOT / "sb3_wpo_zoo_hook.pth").read_bytes()
        assert not [name for name in archive.namelist() if name.endswith(".yml")]
    assert {"sb3_wpo_zoo_hook.pth", "sb3_wpo/hyperparams/wpo.yml"} <= set(wheel_names(artifacts["from_sdist"]))


def fresh_environment(path):
    """A new virtual environment that takes sb3-wpo's dependencies from this one: a .pth file lists this
    environment's site-packages folders, whose own .pth files (this environment's sb3-wpo hook among them) are
    not run there. Returns its python and its site-packages."""
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(path)
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = run(["-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=path, python=python).stdout
    site_packages = Path(purelib.strip())
    folders = [*site.getsitepackages(), site.getusersitepackages() if site.ENABLE_USER_SITE else ""]
    folders += [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    dependencies = [folder for folder in dict.fromkeys(folders) if folder and Path(folder).is_dir()]
    # "00": read before the editable wheel's _editable_impl_sb3_wpo.pth, which imports the editables package
    (site_packages / "00_dependencies.pth").write_text("\n".join(dependencies) + "\n")
    return python, site_packages


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wheel", "editable"])
def test_installed_wheel_and_editable(built, kind, tmp_path):
    """``pip install`` of the wheel, or of the editable wheel, into a fresh environment: at start-up the hook is
    there and imports nothing heavy; ``--algo wpo`` reads the one config (the wheel's copy of hyperparams/wpo.yml,
    or the file in the sources); ``python -m rl_zoo3.train`` and ``python -m rl_zoo3.enjoy`` work, with no flag."""
    source, artifacts = built
    python, site_packages = fresh_environment(tmp_path / "env")
    pip = ["-m", "pip", "install", "--no-deps", "--no-index", "--target", site_packages]
    run([*pip, artifacts[kind]], cwd=tmp_path)
    installed = sorted(path.name for path in site_packages.iterdir())
    assert "sb3_wpo_zoo_hook.pth" in installed and ("sb3_wpo" in installed) == (kind == "wheel")

    output = run(["-c", CHECK_HOOK], cwd=tmp_path, python=python).stdout
    assert "start-up: True []" in output and "algos: True True True True" in output, output
    package = Path(re.search(r"package: (.*)", output).group(1)).resolve()
    config = Path(re.search(r"config: (.*)", output).group(1))
    if kind == "wheel":
        where = site_packages.resolve()
        assert package.parent.parent == where and config.resolve() == where / "sb3_wpo" / "hyperparams" / "wpo.yml"
    else:
        assert package.parent.parent == source.resolve() and config.resolve() == (source / "hyperparams" / "wpo.yml").resolve()
    assert config.read_bytes() == CONFIG.read_bytes()

    logs = tmp_path / "logs"
    output = run(["-m", "rl_zoo3.train", *train_args(logs, "-params", *SMALL)], cwd=tmp_path, python=python).stdout
    assert f"Loading hyperparameters from: {config}" in output
    enjoy = ["--algo", "wpo", "--env", "Pendulum-v1", "-f", logs, "--no-render", "-n", "200", "--num-threads", "1"]
    assert "Episode Reward:" in run(["-m", "rl_zoo3.enjoy", *enjoy], cwd=tmp_path, python=python).stdout


# ---------------------------------------------------------------- the zoo's commands


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``python -m rl_zoo3.train --algo wpo --env Pendulum-v1`` with the packaged default config, saving the
    replay buffer; returns the log folder and the output."""
    cwd = tmp_path_factory.mktemp("zoo")
    logs = cwd / "logs"
    result = run(["-m", "rl_zoo3.train", *train_args(logs, "--save-replay-buffer", "-params", *SMALL)], cwd=cwd)
    return logs, result.stdout


def assert_default_config(output):
    """The zoo read the installed sb3-wpo's config: hyperparams/wpo.yml, or the copy of it that a wheel ships."""
    match = re.search(r"Loading hyperparameters from: (.*)", output)
    assert match, output[:2000]
    path = Path(match.group(1).strip())
    assert path.name == "wpo.yml" and "rl_zoo3" not in path.parts and path.read_bytes() == CONFIG.read_bytes()


@pytest.mark.slow
def test_train_default_config(trained):
    logs, output = trained
    assert_default_config(output)
    run_dir = logs / "wpo" / "Pendulum-v1_1"
    assert (run_dir / "Pendulum-v1" / "config.yml").is_file()
    assert (run_dir / "replay_buffer.pkl").is_file()
    model = WPO.load(run_dir / "Pendulum-v1.zip", buffer_size=1)
    pendulum = yaml.safe_load(CONFIG.read_text())["Pendulum-v1"]
    assert model.num_timesteps == int(N_STEPS) and model.learning_starts == 200  # -params overrides the config
    assert model.train_freq.frequency == pendulum.get("train_freq", 1)  # the default config
    assert model.n_steps == pendulum.get("n_steps", 1)


@pytest.mark.slow
def test_enjoy(trained, tmp_path):
    logs, _ = trained
    args = ["-m", "rl_zoo3.enjoy", "--algo", "wpo", "--env", "Pendulum-v1", "-f", logs, "--no-render", "-n", "300"]
    output = run([*args, "--num-threads", "1"], cwd=tmp_path).stdout
    assert "Episode Reward:" in output and "Loading" in output


@pytest.mark.slow
def test_continue_training_with_replay_buffer(trained, tmp_path):
    """``-i`` loads the agent and its saved replay buffer, then trains on."""
    logs, _ = trained
    agent = logs / "wpo" / "Pendulum-v1_1" / "Pendulum-v1.zip"
    args = train_args(logs, "-i", agent, "--save-replay-buffer", "-params", *SMALL)
    output = run(["-m", "rl_zoo3.train", *args], cwd=tmp_path).stdout
    assert "Loading pretrained agent" in output and "Loading replay buffer" in output
    model = WPO.load(logs / "wpo" / "Pendulum-v1_2" / "Pendulum-v1.zip", buffer_size=1)
    model.load_replay_buffer(logs / "wpo" / "Pendulum-v1_2" / "replay_buffer.pkl")
    assert model.replay_buffer.size() == 2 * int(N_STEPS)  # the first run's transitions and the new ones


@pytest.mark.slow
def test_console_script_and_conf_file(tmp_path):
    """``rl_zoo3 train`` (the console script) with ``--conf-file hyperparams/wpo.yml`` (the repository's copy)."""
    script = Path(sys.executable).parent / "rl_zoo3"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "rl_zoo3.cli"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop(_zoo_hook.ENV_VAR, None)
    args = ["train", *train_args(tmp_path / "logs", "--conf-file", CONFIG, "-params", *SMALL)]
    result = subprocess.run([*command, *map(str, args)], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-5000:]
    assert f"Loading hyperparameters from: {CONFIG}" in result.stdout
    assert (tmp_path / "logs" / "wpo" / "Pendulum-v1_1" / "Pendulum-v1.zip").is_file()


@pytest.mark.slow
def test_explicit_entry_point_without_hook(trained, tmp_path):
    """With the hook turned off, the zoo does not know wpo, but ``python -m sb3_wpo.zoo`` trains and enjoys."""
    logs, _ = trained
    no_hook = {_zoo_hook.ENV_VAR: "1"}
    enjoy = ["enjoy", "--algo", "wpo", "--env", "Pendulum-v1", "-f", logs, "--no-render", "-n", "200"]
    refused = run(["-m", "rl_zoo3.enjoy", *enjoy[1:]], cwd=tmp_path, env_update=no_hook, check=False)
    assert refused.returncode == 2 and "invalid choice: 'wpo'" in refused.stderr
    output = run(["-m", "sb3_wpo.zoo", *enjoy], cwd=tmp_path, env_update=no_hook).stdout
    assert "Episode Reward:" in output
    new_logs = tmp_path / "logs"
    output = run(["-m", "sb3_wpo.zoo", "train", *train_args(new_logs, "-params", *SMALL)], cwd=tmp_path, env_update=no_hook)
    assert_default_config(output.stdout)
    assert (new_logs / "wpo" / "Pendulum-v1_1" / "Pendulum-v1.zip").is_file()


@pytest.mark.slow
def test_optimize_and_train_a_trial(tmp_path):
    """``--optimize`` with WPO's sampler, 2 trials in an Optuna JournalStorage file (``--storage x.log``), then
    ``--trial-id`` trains with a stored trial's hyperparameters (WPO's converter)."""
    storage = tmp_path / "study.log"
    args = train_args(tmp_path / "logs", "-params", "learning_starts:290")
    args += ["--optimize", "--n-trials", "2", "--n-jobs", "1", "--sampler", "random", "--pruner", "none"]
    args += ["--n-evaluations", "1", "--eval-episodes", "1", "--no-optim-plots", "--storage", storage, "--study-name", "s"]
    run(["-m", "rl_zoo3.train", *args], cwd=tmp_path)
    backend = optuna.storages.journal.JournalFileBackend(str(storage))
    study = optuna.load_study(study_name="s", storage=optuna.storages.JournalStorage(backend))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(np.isfinite(t.value) for t in study.trials)
    expected = {"learning_rate", "num_samples", "dual_learning_rate", "init_log_alpha_mean", "init_std", "net_arch"}
    assert expected <= set(study.trials[1].params)

    args = train_args(tmp_path / "trial_logs", "--storage", storage, "--study-name", "s", "--trial-id", "1")
    output = run(["-m", "rl_zoo3.train", *args, "-params", "learning_starts:290"], cwd=tmp_path).stdout
    assert "Loading from Optuna study..." in output
    model = WPO.load(tmp_path / "trial_logs" / "wpo" / "Pendulum-v1_1" / "Pendulum-v1.zip", buffer_size=1)
    params = study.trials[1].params
    assert model.num_samples == params["num_samples"]
    assert model.lr_schedule(1.0) == pytest.approx(params["learning_rate"])
    assert model.policy_kwargs["net_arch"] == zoo.NET_ARCHS[params["net_arch"]]


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["wpo", "sac"])
def test_deepmind_control_through_shimmy(algo, tmp_path):
    """``--env dm_control/...  --gym-packages shimmy``: WPO with its entry in wpo.yml (Dict observations flattened by
    the entry's env_wrapper), SAC with the campaign's config; then enjoy the agent."""
    logs = tmp_path / "logs"
    env_id = "dm_control/cartpole-swingup-v0"
    config = [] if algo == "wpo" else ["--conf-file", ROOT / "benchmarks" / "hyperparams" / "sac.yml"]
    small = ["learning_starts:100", "batch_size:32", "buffer_size:1000"] + (["num_samples:4"] if algo == "wpo" else [])
    args = ["--algo", algo, "--env", env_id, "--gym-packages", "shimmy", "-n", N_STEPS, "-f", logs, "--num-threads", "1"]
    output = run(["-m", "rl_zoo3.train", *args, *config, "-params", *small], cwd=tmp_path).stdout
    if algo == "wpo":
        assert_default_config(output)
    model_path = logs / algo / "dm_control-cartpole-swingup-v0_1" / "dm_control-cartpole-swingup-v0.zip"
    model = (WPO if algo == "wpo" else SAC).load(model_path, buffer_size=1)
    assert model.observation_space.shape == (5,) and model.num_timesteps == int(N_STEPS)
    enjoy = ["--algo", algo, "--env", env_id, "--gym-packages", "shimmy", "-f", logs, "--no-render", "-n", "300"]
    assert "Loading" in run(["-m", "rl_zoo3.enjoy", *enjoy, "--num-threads", "1"], cwd=tmp_path).stdout


# Tasks that wpo.yml does not list, two of each family, and the family entry each should train with.
UNLISTED_TASKS = {
    "Swimmer-v5": "mujoco",
    "Reacher-v5": "mujoco",
    "dm_control/finger-spin-v0": "dm_control",
    "dm_control/point_mass-easy-v0": "dm_control",
}


@pytest.mark.slow
@pytest.mark.parametrize("env_id", UNLISTED_TASKS)
def test_unlisted_task_trains_with_its_family(env_id, tmp_path):
    """``python -m rl_zoo3.train --algo wpo --env ENV_ID`` (``--gym-packages shimmy`` for DMC) for a task that
    wpo.yml does not list: the run's saved config is its family's entry, but for what ``-params`` sets; then enjoy
    replays the saved agent."""
    family = UNLISTED_TASKS[env_id]
    config = yaml.safe_load(CONFIG.read_text())
    assert env_id not in config
    logs = tmp_path / "logs"
    packages = ["--gym-packages", "shimmy"] if family == "dm_control" else []
    args = ["--algo", "wpo", "--env", env_id, *packages, "-n", N_STEPS, "-f", logs, "--num-threads", "1"]
    small = ["learning_starts:100", "batch_size:32", "num_samples:4", "buffer_size:1000"]
    output = run(["-m", "rl_zoo3.train", *args, "-params", *small], cwd=tmp_path).stdout
    assert f"Using the '{family}' hyperparameters for {env_id}" in output
    assert_default_config(output)

    name = env_id.replace("/", "-")
    run_dir = logs / "wpo" / f"{name}_1"
    saved = dict(yaml.unsafe_load((run_dir / name / "config.yml").read_text()))
    overridden = {"learning_starts": 100, "batch_size": 32, "num_samples": 4, "buffer_size": 1000}
    assert saved == {**config[family], **overridden}
    model = WPO.load(run_dir / f"{name}.zip", buffer_size=1)
    entry = config[family]
    assert (model.num_samples, model.n_steps, model.target_aggregation) == (4, entry["n_steps"], entry["target_aggregation"])
    assert (model.policy_delay, model.dual_learning_rate) == (entry["policy_delay"], entry["dual_learning_rate"])
    assert model.policy_kwargs["layer_norm"] and model.policy_kwargs["activation_fn"] is nn.ELU
    assert len(model.observation_space.shape) == 1  # DMC's Dict observations flattened by the family's env_wrapper

    enjoy = ["--algo", "wpo", "--env", env_id, *packages, "-f", logs, "--no-render", "-n", "200", "--num-threads", "1"]
    assert f"Loading {run_dir / name}.zip" in run(["-m", "rl_zoo3.enjoy", *enjoy], cwd=tmp_path).stdout


@pytest.mark.slow
def test_an_id_that_is_not_a_task_gets_the_zoos_error(tmp_path):
    args = ["--algo", "wpo", "--env", "dm_control/finger-fly-v0", "--gym-packages", "shimmy", "-f", tmp_path / "logs"]
    result = run(["-m", "rl_zoo3.train", *args], cwd=tmp_path, check=False)
    assert result.returncode != 0 and "dm_control/finger-fly-v0 not found in gym registry" in result.stderr
