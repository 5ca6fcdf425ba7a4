"""sb3_wpo.allocator: glibc keeps WPO's update buffers, unless the user chose an allocator setting."""

import json
import platform
import subprocess
import sys
from typing import Any

import pytest

from sb3_wpo import allocator

ON_GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        return 1


@pytest.fixture
def fake_libc(monkeypatch: pytest.MonkeyPatch) -> FakeLibc:
    libc = FakeLibc()
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: libc)
    monkeypatch.setattr(allocator.platform, "system", lambda: "Linux")
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    for name in allocator.USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    return libc


def test_raises_both_thresholds(fake_libc: FakeLibc) -> None:
    assert allocator._set_thresholds()
    assert sorted(fake_libc.calls) == sorted(
        [(allocator.M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD), (allocator.M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD)]
    )


@pytest.mark.parametrize("name", allocator.USER_SETTINGS)
def test_user_settings_win(fake_libc: FakeLibc, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "/usr/lib/libjemalloc.so" if name == "LD_PRELOAD" else "1000000")
    assert not allocator._set_thresholds()
    assert fake_libc.calls == []


def test_nothing_off_glibc(fake_libc: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert not allocator._set_thresholds()
    monkeypatch.setattr(allocator.platform, "system", lambda: "Darwin")
    assert not allocator._set_thresholds()
    assert fake_libc.calls == []


def test_once_per_process(fake_libc: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_applied", None)
    assert allocator.keep_freed_memory() and allocator.keep_freed_memory()
    assert len(fake_libc.calls) == 2


# A WPO update at humanoid sizes (67 observations, 21 actions, N=20, LayerNorm [256, 256, 256]) in a fresh process,
# with the allocator setting on or off; prints the page faults per update (the median of 3 windows of 10 updates).
FAULTS_PER_UPDATE = """
import json, resource, sys
import numpy as np, torch as th, gymnasium as gym
import sb3_wpo.allocator
from sb3_wpo import WPO
th.set_num_threads(1)
if sys.argv[1] == "off":
    sb3_wpo.allocator._applied = False
class RandomEnv(gym.Env):
    observation_space = gym.spaces.Box(-np.inf, np.inf, (67,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (21,), np.float32)
    def reset(self, *, seed=None, options=None):
        return np.zeros(67, np.float32), {}
    def step(self, action):
        return np.random.standard_normal(67).astype(np.float32), 0.0, False, False, {}
model = WPO("MlpPolicy", RandomEnv(), num_samples=20, learning_starts=300, seed=0,
            policy_kwargs=dict(net_arch=[256, 256, 256], layer_norm=True, activation_fn=th.nn.ELU))
model.learn(300)
model.train(gradient_steps=10, batch_size=256)  # the heap grows to its working size
windows = []
for _ in range(3):  # the median of 3 windows: on a loaded machine one window can catch faults of other causes
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model.train(gradient_steps=10, batch_size=256)
    windows.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
print(json.dumps(sorted(windows)[1]))
"""


def faults_per_update(setting: str) -> Any:
    output = subprocess.run([sys.executable, "-c", FAULTS_PER_UPDATE, setting], check=True, capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not ON_GLIBC, reason="the setting exists on glibc only (sb3_wpo.allocator does nothing elsewhere)")
def test_update_buffers_are_not_faulted_in_again() -> None:
    # Each update frees tens of MB of activations; glibc's defaults give them back to the kernel (≈ 10,000 page
    # faults per update at these sizes), the raised thresholds keep them.
    off, on = faults_per_update("off"), faults_per_update("on")
    assert off > 2000, off
    assert on < off / 10, (on, off)
