"""Packaging lives in pyproject.toml; this file only installs ``sb3_wpo_zoo_hook.pth`` into site-packages.

The .pth file registers WPO in the RL Zoo when rl_zoo3 is imported (see ``sb3_wpo/_zoo_hook.py``). A .pth file must
sit at the top of site-packages, which package data cannot do:

- ``pip install .`` (wheel): ``build_py`` copies it to the root of the build directory, i.e. of the wheel;
- ``pip install -e .`` (PEP 660 editable wheel): setuptools does not put build outputs in an editable wheel, so
  ``editable_wheel`` copies it into the unpacked wheel, whatever the editable strategy.

``tests/test_zoo.py`` checks that both wheels contain it.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = Path(__file__).resolve().parent / "sb3_wpo_zoo_hook.pth"


class build_py_with_pth(build_py):
    def run(self) -> None:
        super().run()
        self.copy_file(str(PTH), str(Path(self.build_lib, PTH.name)), preserve_mode=False)


class editable_wheel_with_pth(editable_wheel):
    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
        result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        shutil.copyfile(PTH, Path(unpacked_wheel, PTH.name))
        return result


setup(cmdclass={"build_py": build_py_with_pth, "editable_wheel": editable_wheel_with_pth})
