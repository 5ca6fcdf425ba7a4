"""Start-up hook that registers WPO in the RL Zoo (rl_zoo3) when, and only when, rl_zoo3 is imported.

rl_zoo3's scripts check ``--algo`` against ``rl_zoo3.utils.ALGOS`` before they import anything named on their
command line, so ``--algo wpo`` must be in that dict by the time the script parses its arguments. The file
``sb3_wpo_zoo_hook.pth``, which ``pip install`` (regular or editable) puts at the top of site-packages, loads this
file at interpreter start-up *by path*, without importing the ``sb3_wpo`` package, and calls :func:`install`.

So this file must stay cheap: it imports only ``sys`` and ``os`` (already loaded at start-up) and adds a
``sys.meta_path`` finder that does nothing until a module of :data:`ZOO_MODULES` is imported. Right after such a
module has run, its registries are filled by ``sb3_wpo.zoo.patch_module`` (imported then, not before): this module
calls ``sb3_wpo.zoo``, never the other way round.

Set ``SB3_WPO_NO_ZOO_HOOK=1`` to turn the hook off; ``python -m sb3_wpo.zoo train|enjoy|...`` works without it.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing would slow every interpreter start-up
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

ENV_VAR = "SB3_WPO_NO_ZOO_HOOK"

# The zoo modules that hold what ``--algo wpo`` needs (``ALGOS``; the Optuna sampler and converter; the default config).
ZOO_MODULES = frozenset({"rl_zoo3.utils", "rl_zoo3.hyperparams_opt", "rl_zoo3.exp_manager"})

# A marker attribute, not the class: the copy of this file loaded by path at start-up and ``sb3_wpo._zoo_hook``
# are two modules, and must recognize each other's finder.
_MARKER = "_sb3_wpo_zoo_hook"


def disabled() -> bool:
    """Whether ``SB3_WPO_NO_ZOO_HOOK`` turns the hook off (any value but empty, 0, false, no, off)."""
    return os.environ.get(ENV_VAR, "").strip().lower() not in ("", "0", "false", "no", "off")


class _RegisteringLoader:
    """Wraps the loader of a zoo module: runs the module, then registers WPO in it."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> Any:  # get_code, get_source, get_filename, is_package, resource readers...
        return getattr(self._loader, name)

    def create_module(self, spec: Any) -> ModuleType | None:
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        try:
            from sb3_wpo import zoo

            zoo.patch_module(module.__name__, module)
        except Exception as error:  # the zoo must keep working for its own algorithms
            import warnings

            warnings.warn(f"sb3-wpo: could not register WPO in {module.__name__}: {error!r}")


class ZooFinder:
    """``sys.meta_path`` finder that gives the modules of :data:`ZOO_MODULES` a loader that registers WPO in them."""

    _sb3_wpo_zoo_hook = True

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in ZOO_MODULES:
            return None
        for finder in sys.meta_path:
            if getattr(finder, _MARKER, False) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and not isinstance(spec.loader, _RegisteringLoader):
            spec.loader = _RegisteringLoader(spec.loader)  # type: ignore[assignment]
        return spec

    def invalidate_caches(self) -> None:
        pass


def installed() -> bool:
    """Whether a WPO zoo finder is in ``sys.meta_path``."""
    return any(getattr(finder, _MARKER, False) for finder in sys.meta_path)


def install() -> bool:
    """Add the finder to ``sys.meta_path`` (once), unless ``SB3_WPO_NO_ZOO_HOOK`` is set; returns whether it is there.

    Zoo modules imported before this call are not touched: ``sb3_wpo.zoo.register()`` registers WPO in them."""
    if disabled():
        return False
    if not installed():
        sys.meta_path.insert(0, ZooFinder())
    return True
