"""Saves are atomic (a process killed while saving never leaves a corrupt file at the target path), and loading a
corrupt, truncated or foreign file fails with an error that names the file."""

import io
import os
import pickle
import random
import signal
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from sb3_wpo import WPO, LoadError

TINY: dict[str, Any] = dict(
    buffer_size=20_000, learning_starts=20, batch_size=16, num_samples=2, policy_kwargs=dict(net_arch=[8]), seed=0
)
KILL_TRIALS = 30


@pytest.fixture(scope="module")
def model() -> WPO:
    model = WPO("MlpPolicy", "Pendulum-v1", device="cpu", **TINY)  # saved by forked children, which cannot use CUDA
    model.learn(60)
    return model


def kill_while_saving(save: Callable[[int], None], max_delay: float, rng: random.Random) -> None:
    """Fork a child that calls ``save(i)`` for i = 0, 1, ... and SIGKILL it after a random delay."""
    pid = os.fork()
    if pid == 0:  # the child never returns to pytest
        try:
            for i in range(10**9):
                save(i)
        finally:
            os._exit(0)
    time.sleep(rng.uniform(0.0, max_delay))
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "the child was killed while saving"


def test_killed_saves_leave_loadable_files(model: WPO, tmp_path: Path):
    model_target, buffer_target = tmp_path / "model", tmp_path / "buffer"  # SB3 appends .zip and .pkl
    model.save(model_target)
    model.save_replay_buffer(buffer_target)

    rng = random.Random(0)
    interrupted = replaced = 0
    start = time.monotonic()
    for trial in range(1, KILL_TRIALS + 1):

        def save(i: int, trial: int = trial) -> None:
            model._n_updates = trial * 100_000 + i  # every save differs
            model.save(model_target)
            model.save_replay_buffer(buffer_target)

        kill_while_saving(save, max_delay=0.15, rng=rng)
        leftovers = list(tmp_path.glob(".*.tmp"))  # a kill during a write leaves its temporary file, never the target
        interrupted += bool(leftovers)
        for leftover in leftovers:
            leftover.unlink()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["buffer.pkl", "model.zip"]
        loaded = WPO.load(tmp_path / "model.zip")
        loaded.load_replay_buffer(tmp_path / "buffer.pkl")
        assert loaded.replay_buffer is not None and model.replay_buffer is not None
        assert loaded.replay_buffer.size() == model.replay_buffer.size()
        replaced += loaded._n_updates // 100_000 == trial  # this trial's child completed a save before the kill
    print(f"{KILL_TRIALS} kills: {interrupted} during a write, {replaced} after replacing the files")
    assert replaced >= 3, "the children completed saves that replaced the files"
    assert interrupted >= 3, f"only {interrupted} kills hit a write: the test does not bite"
    assert time.monotonic() - start < 60


def test_control_plain_sb3_saves_do_get_corrupted(model: WPO, tmp_path: Path):
    """The same kills against SB3's non-atomic save leave a corrupt file: the harness above can see corruption."""
    target = tmp_path / "model.zip"
    rng = random.Random(1)
    for _ in range(40):
        kill_while_saving(lambda i: BaseAlgorithm.save(model, target), max_delay=0.1, rng=rng)
        try:
            WPO.load(target)
        except (LoadError, FileNotFoundError):
            return
    pytest.fail("40 kills during SB3's plain save never left a corrupt file")


def test_save_paths_follow_sb3(model: WPO, tmp_path: Path):
    model.save(tmp_path / "sub" / "dir" / "model")  # missing folders are created, .zip appended
    model.save(str(tmp_path / "named.zip"))
    model.save_replay_buffer(str(tmp_path / "sub" / "buffer"))
    model.save_replay_buffer(tmp_path / "buffer.pickle")  # a suffix is kept
    assert (tmp_path / "sub" / "dir" / "model.zip").is_file() and (tmp_path / "named.zip").is_file()
    assert (tmp_path / "sub" / "buffer.pkl").is_file() and (tmp_path / "buffer.pickle").is_file()
    assert not list(tmp_path.rglob("*.tmp"))
    WPO.load(tmp_path / "sub" / "dir" / "model")  # loading also tries the .zip suffix
    model.load_replay_buffer(tmp_path / "sub" / "buffer")
    stream = io.BytesIO()  # file objects are written directly
    model.save(stream)
    stream.seek(0)
    assert WPO.load(stream).num_timesteps == model.num_timesteps
    # An existing file is replaced with the new content.
    model.save(tmp_path / "named.zip")
    assert zipfile.is_zipfile(tmp_path / "named.zip")


def test_a_failing_save_leaves_the_previous_file(model: WPO, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "model.zip"
    model.save(target)
    before = target.read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("stable_baselines3.common.base_class.save_to_zip_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        model.save(target)
    assert target.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def corrupt_files(model: WPO, folder: Path) -> dict[str, Path]:
    good = folder / "good.zip"
    model.save(good)
    data = good.read_bytes()
    files = {
        "truncated": folder / "truncated.zip",
        "bitflip": folder / "bitflip.zip",
        "text": folder / "text.zip",
        "empty": folder / "empty.zip",
        "foreign_zip": folder / "foreign.zip",
        "no_data": folder / "no_data.zip",
        "other_algorithm": folder / "sac.zip",
    }
    files["truncated"].write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    for i in range(len(flipped) // 3, len(flipped) // 3 + 64):
        flipped[i] ^= 0xFF
    files["bitflip"].write_bytes(bytes(flipped))
    files["text"].write_text("this is not a model\n")
    files["empty"].write_bytes(b"")
    with zipfile.ZipFile(files["foreign_zip"], "w") as archive:
        archive.writestr("readme.txt", "hello")
    with zipfile.ZipFile(files["no_data"], "w") as archive:
        archive.writestr("data", "{not json")
    SAC("MlpPolicy", "Pendulum-v1", buffer_size=10, policy_kwargs=dict(net_arch=[8])).save(files["other_algorithm"])
    return files


@pytest.mark.parametrize("kind", ["truncated", "bitflip", "text", "empty", "foreign_zip", "no_data", "other_algorithm"])
def test_loading_a_bad_model_file_names_it(model: WPO, tmp_path: Path, kind: str):
    path = corrupt_files(model, tmp_path)[kind]
    with pytest.raises(LoadError, match=str(path).replace(".", r"\.")) as raised:
        WPO.load(path)
    assert isinstance(raised.value, ValueError)
    assert raised.value.__cause__ is not None


def test_loading_a_missing_model_names_both_paths(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"missing\.zip"):
        WPO.load(tmp_path / "missing")


@pytest.mark.parametrize("kind", ["truncated", "text", "empty", "not_a_buffer", "other_spaces", "missing"])
def test_loading_a_bad_replay_buffer_names_it_and_keeps_the_buffer(model: WPO, tmp_path: Path, kind: str):
    good = tmp_path / "good.pkl"
    model.save_replay_buffer(good)
    path = tmp_path / f"{kind}.pkl"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[:1000])
    elif kind == "text":
        path.write_text("hello")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not_a_buffer":
        path.write_bytes(pickle.dumps({"observations": np.zeros(3)}))
    elif kind == "other_spaces":
        other = WPO("MlpPolicy", "MountainCarContinuous-v0", **TINY)
        other.save_replay_buffer(path)
    buffer = model.replay_buffer
    error = FileNotFoundError if kind == "missing" else LoadError
    with pytest.raises(error, match=str(path).replace(".", r"\.")):
        model.load_replay_buffer(path)
    assert model.replay_buffer is buffer


def test_save_and_load_round_trip_keeps_training_state(model: WPO, tmp_path: Path):
    model.save(tmp_path / "model")
    loaded = WPO.load(tmp_path / "model", device=model.device)
    for name, tensor in model.policy.state_dict().items():
        assert th.equal(tensor, loaded.policy.state_dict()[name]), name
    assert isinstance(loaded, OffPolicyAlgorithm) and loaded.check_finite


def test_save_through_a_symlink_writes_its_target(model: WPO, tmp_path: Path):
    (tmp_path / "runs").mkdir()
    real = tmp_path / "runs" / "model_v1.zip"
    real.write_bytes(b"old")
    (tmp_path / "latest.zip").symlink_to(real)
    model.save(tmp_path / "latest.zip")
    assert (tmp_path / "latest.zip").is_symlink() and zipfile.is_zipfile(real)


def test_save_keeps_the_permissions_of_the_file_it_replaces(model: WPO, tmp_path: Path):
    path = tmp_path / "private.zip"
    model.save(path)
    os.chmod(path, 0o600)  # e.g. a model the user keeps private
    model.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    os.chmod(tmp_path / "buffer.pkl", 0o640)
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    assert (tmp_path / "buffer.pkl").stat().st_mode & 0o777 == 0o640
