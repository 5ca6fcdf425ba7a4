"""Start-up hook that registers WPO in the RL Zoo (rl_zoo3) when, and only when, rl_zoo3 is imported.

``sb3_wpo_zoo_hook.pth`` (installed into site-packages by ``pip install .`` and ``pip install -e .``) loads this
file at interpreter start-up *by path*, without importing the ``sb3_wpo`` package, and calls :func:`install`.
So it must stay cheap: it imports only ``os`` and ``sys``, and installs a ``sys.meta_path`` finder that does
nothing until a module of :data:`PATCHED_MODULES` is imported. Then:

- the code of ``rl_zoo3.enjoy``, ``rl_zoo3.record_video`` and ``rl_zoo3.push_to_hub`` gets ``"wpo"`` added to
  their list of off-policy algorithms (loaded with ``buffer_size=1``), also when run with ``python -m``;
- once ``rl_zoo3.utils`` / ``rl_zoo3.hyperparams_opt`` / ``rl_zoo3.exp_manager`` have run, ``sb3_wpo.zoo``
  adds WPO to ``ALGOS``, its Optuna sampler and converter, and ``sb3_wpo/hyperparams/wpo.yml`` as the default
  config of ``--algo wpo``.

Set ``SB3_WPO_NO_ZOO_HOOK=1`` to turn the hook off; ``python -m sb3_wpo.zoo train|enjoy|...`` works without it.
"""

from __future__ import annotations

import os
import sys
from types import CodeType

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing would slow every interpreter start-up
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

ENV_VAR = "SB3_WPO_NO_ZOO_HOOK"
ALGO_NAME = "wpo"

# Modules whose code lists the off-policy algorithms in a local variable (enjoy, record_video, push_to_hub).
OFF_POLICY_LIST_MODULES = frozenset({"rl_zoo3.enjoy", "rl_zoo3.record_video", "rl_zoo3.push_to_hub"})
# Modules patched by ``sb3_wpo.zoo.patch_module`` once they have run.
REGISTRY_MODULES = frozenset({"rl_zoo3.utils", "rl_zoo3.hyperparams_opt", "rl_zoo3.exp_manager"})
PATCHED_MODULES = OFF_POLICY_LIST_MODULES | REGISTRY_MODULES

# A marker attribute, not the class: two copies of this module (the one loaded by path at start-up and
# ``sb3_wpo._zoo_hook``) must recognize each other's finder.
_MARKER = "_sb3_wpo_zoo_hook"


def disabled() -> bool:
    """Whether ``SB3_WPO_NO_ZOO_HOOK`` turns the hook off (any value but empty, 0, false, no, off)."""
    return os.environ.get(ENV_VAR, "").strip().lower() not in ("", "0", "false", "no", "off")


def _is_off_policy_list(value: Any) -> bool:
    """The constant tuple behind ``off_policy_algos = ["qrdqn", "dqn", "ddpg", "sac", "her", "td3", "tqc"]``."""
    return (
        isinstance(value, tuple)
        and all(isinstance(item, str) for item in value)
        and {"sac", "td3", "dqn"}.issubset(value)
        and ALGO_NAME not in value
    )


def add_to_off_policy_lists(code: CodeType) -> CodeType:
    """Return ``code`` (and its nested functions) with ``"wpo"`` appended to the zoo's off-policy algorithm lists."""
    consts = tuple(
        (*value, ALGO_NAME)
        if _is_off_policy_list(value)
        else add_to_off_policy_lists(value)
        if isinstance(value, CodeType)
        else value
        for value in code.co_consts
    )
    return code.replace(co_consts=consts) if consts != code.co_consts else code


def _after_exec(fullname: str, module: ModuleType) -> None:
    if fullname in REGISTRY_MODULES:
        try:
            from sb3_wpo import zoo

            zoo.patch_module(fullname, module)
        except Exception as error:  # the zoo must keep working for its own algorithms
            import warnings

            warnings.warn(f"sb3-wpo: could not register WPO in {fullname}: {error!r}")


class _PatchingLoader:
    """Wraps the loader of a zoo module: patches its code object, then registers WPO once the module has run."""

    def __init__(self, loader: Any, fullname: str) -> None:
        self._loader = loader
        self._fullname = fullname

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, is_package, resource readers, ...
        return getattr(self._loader, name)

    def create_module(self, spec: Any) -> ModuleType | None:
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def get_code(self, fullname: str) -> CodeType | None:
        # Also what runpy calls for ``python -m rl_zoo3.enjoy`` / ``python -m rl_zoo3.record_video``.
        code = self._loader.get_code(fullname)
        if code is not None and self._fullname in OFF_POLICY_LIST_MODULES:
            code = add_to_off_policy_lists(code)
        return code

    def exec_module(self, module: ModuleType) -> None:
        code = self.get_code(self._fullname) if hasattr(self._loader, "get_code") else None
        if code is None:
            self._loader.exec_module(module)
        else:
            exec(code, module.__dict__)
        _after_exec(self._fullname, module)


class ZooFinder:
    """``sys.meta_path`` finder that hands the zoo modules of :data:`PATCHED_MODULES` a patching loader."""

    _sb3_wpo_zoo_hook = True

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in PATCHED_MODULES:
            return None
        for finder in sys.meta_path:
            if getattr(finder, _MARKER, False) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and not isinstance(spec.loader, _PatchingLoader):
            spec.loader = _PatchingLoader(spec.loader, fullname)  # type: ignore[assignment]
        return spec

    def invalidate_caches(self) -> None:
        pass


def installed() -> bool:
    """Whether a WPO zoo finder is in ``sys.meta_path``."""
    return any(getattr(finder, _MARKER, False) for finder in sys.meta_path)


def install(force: bool = False) -> bool:
    """Install the finder (once); ``force`` ignores ``SB3_WPO_NO_ZOO_HOOK``. Returns whether it is installed.

    Zoo modules imported before this call are patched in place by ``sb3_wpo.zoo.register``."""
    if disabled() and not force:
        return False
    if not installed():
        sys.meta_path.insert(0, ZooFinder())
    if any(name in sys.modules for name in PATCHED_MODULES):
        from sb3_wpo import zoo

        zoo.register()
    return True
