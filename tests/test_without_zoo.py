"""sb3-wpo without the RL Zoo (no ``zoo`` extra): the start-up hook stays inert, and ``python -m sb3_wpo.zoo`` says
which extra to install.

In an environment without rl_zoo3 (the floor job of ``.ci/floors`` uninstalls it), the commands run as they are;
where rl_zoo3 is installed, a finder put first in ``sys.meta_path`` makes it missing as an uninstalled package is
(``ModuleNotFoundError`` for ``rl_zoo3`` and its modules)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sb3_wpo import _zoo_hook

ROOT = Path(__file__).resolve().parent.parent

HIDE_RL_ZOO3 = """
import sys
class HideRlZoo3:
    def find_spec(self, name, path=None, target=None):
        if name == "rl_zoo3" or name.startswith("rl_zoo3."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, HideRlZoo3())
"""

RUN_ZOO_MODULE = """
import runpy
sys.argv = ["sb3_wpo.zoo", *sys.argv[1:]]
runpy.run_module("sb3_wpo.zoo", run_name="__main__", alter_sys=True)
"""

CHECK_INERT_HOOK = """
import sys
hooked = any(getattr(f, "_sb3_wpo_zoo_hook", False) for f in sys.meta_path)
from sb3_wpo import WPO
WPO("MlpPolicy", "Pendulum-v1", learning_starts=0, batch_size=8, buffer_size=100).learn(10)
try:
    import rl_zoo3.utils
except ModuleNotFoundError as error:
    print("missing:", error.name)
print("hooked:", hooked, "zoo imported:", "sb3_wpo.zoo" in sys.modules)
"""

RL_ZOO3_INSTALLED = importlib.util.find_spec("rl_zoo3") is not None


def python(code: str | None, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -c CODE ARGS`` (``python -m sb3_wpo.zoo ARGS`` for None) in an environment without rl_zoo3."""
    prelude = HIDE_RL_ZOO3 if RL_ZOO3_INSTALLED else "import sys\n"
    if code is None:
        command = ["-c", prelude + RUN_ZOO_MODULE] if RL_ZOO3_INSTALLED else ["-m", "sb3_wpo.zoo"]
    else:
        command = ["-c", prelude + code]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop(_zoo_hook.ENV_VAR, None)
    return subprocess.run([sys.executable, *command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train", "enjoy"])
def test_zoo_entry_point_names_the_extra(script, tmp_path):
    result = python(None, script, "--algo", "wpo", "--env", "Pendulum-v1", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (
        "python -m sb3_wpo.zoo needs the RL Zoo (no module named 'rl_zoo3'): pip install \"sb3-wpo[zoo]\""
    )


@pytest.mark.slow
def test_startup_hook_is_inert(tmp_path):
    """WPO trains; the hook is installed, imports nothing, and ``import rl_zoo3`` fails as without sb3-wpo."""
    result = python(CHECK_INERT_HOOK, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ["missing: rl_zoo3", "hooked: True zoo imported: False"]
    assert "sb3-wpo" not in result.stderr  # no warning from the hook
