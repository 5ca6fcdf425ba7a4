"""RL Zoo (rl_zoo3) integration of WPO: ``--algo wpo`` in the zoo's own commands.

With sb3-wpo installed, the start-up hook (``sb3_wpo._zoo_hook``, see there) calls :func:`patch_module` as the zoo
modules are imported, so ``python -m rl_zoo3.train --algo wpo ...`` just works. :func:`main` is an explicit entry
point that needs no hook (e.g. with ``SB3_WPO_NO_ZOO_HOOK=1``)::

    python -m sb3_wpo.zoo train --algo wpo --env Pendulum-v1
    python -m sb3_wpo.zoo enjoy --algo wpo --env Pendulum-v1 -f logs/

Registration adds:

- ``"wpo": WPO`` to ``rl_zoo3.utils.ALGOS`` (the ``--algo`` choices of train, enjoy, record_video, ...);
- :func:`sample_wpo_params` / :func:`convert_wpo_params` to ``HYPERPARAMS_SAMPLER`` / ``HYPERPARAMS_CONVERTER``
  (``--optimize``, and ``--trial-id`` to train with a trial's parameters);
- :data:`DEFAULT_CONFIG` as the config of ``--algo wpo`` without ``--conf-file`` (``ExperimentManager.__init__`` is
  wrapped: the zoo looks for ``rl_zoo3/hyperparams/wpo.yml``, which it does not ship);
- the entries of task families (``ExperimentManager.read_hyperparameters`` is wrapped): with ``--algo wpo``, a task
  that has no entry of its own in the config gets the entry of its family (:func:`task_family`: ``mujoco`` or
  ``dm_control``) where the config has one, else the ``default`` entry (:func:`config_entry`). ``-params`` still
  overrides it; train saves the entry in the run's ``config.yml``, which enjoy reads.

Everything is idempotent. enjoy / record_video / push_to_hub load a WPO agent with its saved ``buffer_size`` (they
pass ``buffer_size=1`` only to the algorithms they list by name, which WPO is not, as sb3-contrib's CrossQ is not):
SB3 allocates that buffer with ``np.zeros``, which on Linux reserves address space but no memory until written.
"""

import functools
import importlib
import inspect
import re
import runpy
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import gymnasium as gym
from torch import nn

from sb3_wpo.wpo import WPO

ALGO_NAME = "wpo"


def _find_default_config() -> Path:
    """The repository has one ``hyperparams/wpo.yml``, at its root. A wheel ships it as ``sb3_wpo/hyperparams/wpo.yml``
    (``[tool.hatch.build.targets.wheel]`` in pyproject.toml); a source checkout, and so an editable install, reads the
    root file itself."""
    package = Path(__file__).resolve().parent
    shipped, in_checkout = package / "hyperparams" / "wpo.yml", package.parent / "hyperparams" / "wpo.yml"
    return shipped if shipped.is_file() or not in_checkout.is_file() else in_checkout


DEFAULT_CONFIG = _find_default_config()

NET_ARCHS = {
    "small": [64, 64],
    "medium": [256, 256],
    "big": [400, 300],
}
ACTIVATION_FNS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}

# What a trial stored before a setting joined the search space ran with (WPO's defaults of the time), so that
# ``--trial-id`` rebuilds the model it trained
EARLIER_TRIALS: dict[str, Any] = {
    "activation_fn": "relu",
    "layer_norm": False,
    "tanh_actions": False,
    "n_critics": 1,
    "policy_delay": 1,
}

# The config entries that hold the settings of a family of tasks (see task_family).
FAMILIES = ("mujoco", "dm_control")

# The pip extra that brings the RL Zoo and what its scripts import.
ZOO_EXTRA = 'pip install "sb3-wpo[zoo]"'

# Scripts of rl_zoo3 that ``python -m sb3_wpo.zoo SCRIPT`` runs (as ``python -m rl_zoo3.SCRIPT``).
SCRIPTS = ("train", "enjoy", "record_video", "record_training", "push_to_hub", "load_from_hub")


def convert_wpo_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """Turn the parameters sampled by :func:`sample_wpo_params` (an Optuna trial's ``params``) into WPO's arguments.

    Like rl_zoo3's ``convert_offpolicy_params``: it is also used on a stored trial's params (``--trial-id``)."""
    hyperparams = {**EARLIER_TRIALS, **sampled_params}
    hyperparams["gamma"] = 1 - hyperparams.pop("one_minus_gamma")
    hyperparams["batch_size"] = 2 ** hyperparams.pop("batch_size_pow")
    hyperparams["buffer_size"] = int(10 ** hyperparams.pop("buffer_size_pow"))
    # One gradient step per environment step (n_envs=1), as the zoo does for SAC.
    hyperparams["gradient_steps"] = hyperparams["train_freq"]
    policy_kwargs = {
        "net_arch": NET_ARCHS[hyperparams.pop("net_arch")],
        "init_std": hyperparams.pop("init_std"),
    }
    policy_kwargs["activation_fn"] = ACTIVATION_FNS[hyperparams.pop("activation_fn")]
    for name in ("layer_norm", "tanh_actions", "n_critics"):
        policy_kwargs[name] = hyperparams.pop(name)
    hyperparams["policy_kwargs"] = policy_kwargs
    return hyperparams


def sample_wpo_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna sampler of WPO's hyperparameters (same signature and conventions as rl_zoo3's ``sample_sac_params``).

    :param trial: an ``optuna.Trial``
    :param n_actions: dimension of the action space (unused)
    :param n_envs: number of environments (unused)
    :param additional_args: ``using_her_replay_buffer`` and ``her_kwargs`` from the zoo
    :return: WPO's keyword arguments, through :func:`convert_wpo_params`
    """
    one_minus_gamma = trial.suggest_float("one_minus_gamma", 0.0001, 0.03, log=True)
    # From 2**5=32 to 2**10=1024
    batch_size_pow = trial.suggest_int("batch_size_pow", 5, 10)
    # 1e4 to 1e6
    buffer_size_pow = trial.suggest_int("buffer_size_pow", 4, 6)
    learning_rate = trial.suggest_float("learning_rate", 1e-5, 0.002, log=True)
    train_freq = trial.suggest_int("train_freq", 1, 10)
    # 1-2 samples at one update per step learn as well as 20 at a quarter (benchmarks/notes/tuning.md)
    num_samples = trial.suggest_categorical("num_samples", [1, 2, 4, 8, 20])
    # The KL term: a fixed weight α = softplus(init_log_alpha_mean) (soft), or a bound ε tracked by learned duals (hard);
    # ε alone would be a dead dimension in soft mode.
    dual_learning_rate = trial.suggest_categorical("dual_learning_rate", [0.0, 0.01, 0.1])
    init_log_alpha_mean = trial.suggest_float("init_log_alpha_mean", -3.0, 3.0)
    init_std = trial.suggest_float("init_std", 0.1, 1.0, log=True)
    n_steps = trial.suggest_categorical("n_steps", [1, 3, 5])
    target_update_interval = trial.suggest_categorical("target_update_interval", [1, 10, 100, 1000])
    net_arch = trial.suggest_categorical("net_arch", ["small", "medium", "big"])
    tanh_actions = trial.suggest_categorical("tanh_actions", [False, True])
    # One critic with 1-step returns overestimates on Walker2d-v5; two critics with the min, updated twice per policy
    # update, cost about one critic's CPU time (benchmarks/notes/tuning.md, stage 8)
    n_critics = trial.suggest_categorical("n_critics", [1, 2])
    policy_delay = trial.suggest_categorical("policy_delay", [1, 2])
    # The reference's LayerNorm MLP with ELU (WPO's default) or SAC's plain ReLU MLP, and the two crossed
    layer_norm = trial.suggest_categorical("layer_norm", [True, False])
    activation_fn = trial.suggest_categorical("activation_fn", ["elu", "relu"])

    trial.set_user_attr("gamma", 1 - one_minus_gamma)
    trial.set_user_attr("batch_size", 2**batch_size_pow)

    hyperparams = {
        "one_minus_gamma": one_minus_gamma,
        "batch_size_pow": batch_size_pow,
        "buffer_size_pow": buffer_size_pow,
        "learning_rate": learning_rate,
        "train_freq": train_freq,
        "num_samples": num_samples,
        "dual_learning_rate": dual_learning_rate,
        "init_log_alpha_mean": init_log_alpha_mean,
        "init_std": init_std,
        "n_steps": n_steps,
        "target_update_interval": target_update_interval,
        "net_arch": net_arch,
        "tanh_actions": tanh_actions,
        "n_critics": n_critics,
        "policy_delay": policy_delay,
        "layer_norm": layer_norm,
        "activation_fn": activation_fn,
    }
    if dual_learning_rate > 0:
        hyperparams["epsilon_mean"] = trial.suggest_float("epsilon_mean", 1e-3, 0.1, log=True)
    if additional_args.get("using_her_replay_buffer"):
        from rl_zoo3.hyperparams_opt import sample_her_params

        hyperparams = sample_her_params(trial, hyperparams, additional_args["her_kwargs"])
        # HER's buffer needs one-step transitions
        hyperparams["n_steps"] = 1
    return convert_wpo_params(hyperparams)


def task_family(env_id: str) -> str | None:
    """The family of a registered task, whose config entry it gets without one of its own: ``"mujoco"`` for
    Gymnasium's MuJoCo tasks (entry point in ``gymnasium.envs.mujoco``), ``"dm_control"`` for the DeepMind Control
    Suite's ``dm_control/<domain>-<task>-v0`` (shimmy's ids of ``dm_control.suite.ALL_TASKS``; not its locomotion and
    manipulation tasks); None for any other id, registered or not."""
    spec = gym.envs.registry.get(env_id)
    if spec is None:
        return None
    if isinstance(spec.entry_point, str) and spec.entry_point.startswith("gymnasium.envs.mujoco"):
        return "mujoco"
    suite_task = re.fullmatch(r"dm_control/(\w+)-(\w+)-v0", env_id)
    if suite_task is not None:
        from dm_control import suite

        if suite_task.groups() in suite.ALL_TASKS:
            return "dm_control"
    return None


def config_entry(entries: dict[str, Any], env_id: str) -> str | None:
    """The key of the entry of ``entries`` (a config) that ``--algo wpo --env ENV_ID`` trains with: the task's own,
    else its family's (:func:`task_family`), else ``default``; None if there is none of these."""
    family = task_family(env_id) if env_id not in entries else None
    for key in (env_id, family, "default"):
        if key in entries:
            return key
    return None


def _patch_utils(module: ModuleType) -> None:
    module.ALGOS.setdefault(ALGO_NAME, WPO)


def _patch_hyperparams_opt(module: ModuleType) -> None:
    module.HYPERPARAMS_SAMPLER.setdefault(ALGO_NAME, sample_wpo_params)
    module.HYPERPARAMS_CONVERTER.setdefault(ALGO_NAME, convert_wpo_params)


def _patch_exp_manager(module: ModuleType) -> None:
    """``ExperimentManager(algo="wpo", config=None)`` reads :data:`DEFAULT_CONFIG` instead of
    ``rl_zoo3/hyperparams/wpo.yml`` (which the zoo does not ship)."""
    cls = module.ExperimentManager
    original = cls.__init__
    if getattr(original, "_sb3_wpo_patched", False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        arguments = signature.bind_partial(self, *args, **kwargs).arguments
        original(self, *args, **kwargs)
        if arguments.get("algo") == ALGO_NAME and not arguments.get("config"):
            self.config = str(DEFAULT_CONFIG)

    __init__._sb3_wpo_patched = True  # type: ignore[attr-defined]
    cls.__init__ = __init__
    cls.read_hyperparameters = _read_family_hyperparameters(cls.read_hyperparameters)


def _read_family_hyperparameters(original: Any) -> Any:
    """Wrap ``ExperimentManager.read_hyperparameters`` so that, with ``--algo wpo`` and a YAML config, it reads the
    entry :func:`config_entry` picks. The zoo reads the entry named by ``self.env_name.gym_id`` (then applies
    ``--trial-id`` and ``-params``, and prints and saves the result): that name is the entry's key for the call."""

    @functools.wraps(original)
    def read_hyperparameters(self: Any) -> Any:
        env_id = self.env_name.gym_id
        if self.algo != ALGO_NAME or not str(self.config).endswith((".yml", ".yaml")):
            return original(self)
        import yaml  # a dependency of rl_zoo3, not of sb3-wpo

        with open(self.config) as file:
            key = config_entry(yaml.safe_load(file), env_id)
        if key is None or key == env_id:
            return original(self)
        from huggingface_sb3 import EnvironmentName

        print(f"Using the '{key}' hyperparameters for {env_id}")
        env_name, self.env_name = self.env_name, EnvironmentName(key)
        try:
            return original(self)
        finally:
            self.env_name = env_name

    return read_hyperparameters


_PATCHES = {
    "rl_zoo3.utils": _patch_utils,
    "rl_zoo3.hyperparams_opt": _patch_hyperparams_opt,
    "rl_zoo3.exp_manager": _patch_exp_manager,
}


def patch_module(name: str, module: ModuleType) -> None:
    """Register WPO in the zoo module ``name`` (``rl_zoo3.utils``, ``rl_zoo3.hyperparams_opt`` or
    ``rl_zoo3.exp_manager``; others are left alone) once it has run; idempotent."""
    patch = _PATCHES.get(name)
    if patch is not None:
        patch(module)


def register() -> None:
    """Import the zoo modules that hold WPO's registration and register it there; idempotent."""
    for name in _PATCHES:
        patch_module(name, importlib.import_module(name))


def is_registered() -> bool:
    """Whether ``--algo wpo`` is known to rl_zoo3 in this interpreter (imports rl_zoo3)."""
    import rl_zoo3

    return rl_zoo3.ALGOS.get(ALGO_NAME) is WPO


def main(argv: list[str] | None = None) -> None:
    """``python -m sb3_wpo.zoo SCRIPT [ARGS]``: run ``python -m rl_zoo3.SCRIPT [ARGS]`` with WPO registered, whatever
    the start-up hook (also with ``SB3_WPO_NO_ZOO_HOOK`` set, or with the sources on ``PYTHONPATH``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SCRIPTS:
        print(f"usage: python -m sb3_wpo.zoo {{{','.join(SCRIPTS)}}} [arguments of rl_zoo3's script]", file=sys.stderr)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"unknown script {argv[0]!r}", file=sys.stderr)
            raise SystemExit(2)
        raise SystemExit(0 if argv else 2)
    script, *arguments = argv
    try:
        register()
    except ModuleNotFoundError as error:
        raise SystemExit(f"python -m sb3_wpo.zoo needs the RL Zoo (no module named {error.name!r}): {ZOO_EXTRA}") from error
    sys.argv = [f"rl_zoo3.{script}", *arguments]
    runpy.run_module(f"rl_zoo3.{script}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
