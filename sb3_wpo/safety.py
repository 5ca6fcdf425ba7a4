"""Reliability of WPO: the divergence guard (detection and rollback), atomic saves, clear load errors, checkpoint lookup,
and ``GuardedOffPolicyAlgorithm``, the base class that puts these guard rails at the edges of the algorithm.

Divergence guard (``check_finite=True``, the default; ``DivergenceGuard``). A ``train()`` call first copies the
training state (networks and targets, optimizer states, duals) and flags whether that copy is finite: every call
during the first ``SNAPSHOT_INTERVAL`` updates (where a bad setting, such as too high a learning rate, diverges),
then the first call of each ``learn()`` or after ``set_parameters``, and otherwise a call once ``SNAPSHOT_INTERVAL``
updates have passed since the last copy, so that one update per call (``train_freq=1``) does not pay a copy of the
whole state at each step. Each gradient step then flags its replay batch, Q-values and critic targets, ∇a Q, policy
mean and std, duals, KLs, losses and gradient norms (``FINITE_CHECKS``). The flags stay on the device and are read
back once per call, with the logged statistics, so checking costs no synchronization per step. On a NaN or inf the
state is rolled back to the last copy (at most ``SNAPSHOT_INTERVAL`` updates before the failing call), and
``DivergenceError`` names the first update and what went non-finite; training can go on from there (from a clean
replay buffer when the data itself was not finite). ``save()`` refuses non-finite parameters, so checkpoints stay
good. The price: two copies of the training state in memory, and the time measured by
``benchmarks/check_finite_cost.py`` (``benchmarks/results/check_finite_cost.json``).

Atomic saves and clear load errors (``atomic_write``, ``GuardedOffPolicyAlgorithm.load``). ``save()`` and
``save_replay_buffer()`` write a temporary file next to the target, fsync it and rename it into place: a process killed
during a save leaves the previous file intact (``tests/test_atomic_save.py`` kills savers at random moments). A
replaced file keeps its permissions. Loading a missing, truncated, corrupt or foreign file raises ``FileNotFoundError``
or ``LoadError`` naming the file, an override that does not fit a ``ValueError`` naming the override;
``set_parameters`` and ``load_replay_buffer`` are all or nothing. Resuming from the checkpoints of SB3's
``CheckpointCallback``: ``find_latest_checkpoint``.
"""

import contextlib
import copy
import io
import json
import math
import os
import pathlib
import pickle
import re
import stat
import uuid
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NoReturn, Protocol, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.buffers import NStepReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback, ConvertCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.save_util import recursive_getattr
from stable_baselines3.common.type_aliases import (
    DictReplayBufferSamples,
    GymEnv,
    MaybeCallback,
    ReplayBufferSamples,
    TensorDict,
    TrainFrequencyUnit,
)
from torch import nn

from sb3_wpo.validation import check_arguments, check_n_steps_take_effect, check_saved_duals, normalize_numbers, real

# What the divergence guard checks at each gradient step, in the order used to name the first culprit.
FINITE_CHECKS: dict[str, str] = {
    "observations": "observations of the replay batch",
    "next_observations": "next observations of the replay batch",
    "rewards": "rewards of the replay batch",
    "target_q": "critic targets r + γ·V(s')",
    "current_q": "Q-values of the replay actions",
    "q_mean": "Q-values of the sampled actions",
    "dq_da_norm": "action-gradients of Q",
    "pi_mean": "policy mean",
    "pi_std_min": "policy std",
    "pi_std_max": "policy std (max)",
    "alpha_mean": "dual variable alpha_mean",
    "alpha_std": "dual variable alpha_std",
    "kl_mean": "KL of the mean",
    "kl_std": "KL of the std",
    "critic_loss": "critic loss",
    "actor_loss": "actor loss",
    "critic_grad_norm": "critic gradient norm",
    "actor_grad_norm": "actor gradient norm",
    "parameters": "parameters, optimizer states or duals",
}
DATA_CHECKS = ("observations", "next_observations", "rewards")
# Updates between two copies of the training state once training is under way (see the module docstring).
SNAPSHOT_INTERVAL = 64


class DivergenceError(RuntimeError):
    """Training produced NaN or inf. The model was rolled back to the divergence guard's last copy of its state (a
    good one) before this was raised.

    :ivar quantities: names of the non-finite quantities (keys of ``FINITE_CHECKS`` or ``"parameters"``).
    :ivar update: the gradient update (``_n_updates`` count, from 1) at which they were first seen.
    :ivar restored_update: the update count of the restored state.
    """

    def __init__(self, message: str, quantities: Sequence[str] = (), update: int = -1, restored_update: int = -1):
        super().__init__(message)
        self.quantities = tuple(quantities)
        self.update = update
        self.restored_update = restored_update


class LoadError(ValueError):
    """A file could not be loaded as a WPO model or replay buffer (missing, corrupt, truncated or foreign)."""


def all_finite(values: th.Tensor | dict[str, th.Tensor]) -> th.Tensor:
    """A 0-dim bool tensor on the values' device, True if no element is NaN or inf; no device sync."""
    if isinstance(values, dict):
        return th.stack([all_finite(value) for value in values.values()]).all()
    if not values.is_floating_point():
        return th.ones((), dtype=th.bool, device=values.device)
    return th.isfinite(values).all()


def describe_non_finite(names: Sequence[str]) -> str:
    return ", ".join(FINITE_CHECKS.get(name, name) for name in names)


def divergence_hint(names: Sequence[str]) -> str:
    if any(name in DATA_CHECKS for name in names):
        return (
            "The replay buffer holds NaN/inf data from the environment: fix the environment (wrap it in "
            "stable_baselines3.common.vec_env.VecCheckNan to find the step) and restart from a clean buffer."
        )
    return (
        "Try a lower learning_rate, a smaller max_grad_norm, scaled rewards (e.g. VecNormalize) or layer_norm=True; "
        "training can go on from the restored model."
    )


def _foreach_copy(destinations: list[th.Tensor], sources: list[th.Tensor]) -> None:
    with th.no_grad():
        try:
            th._foreach_copy_(destinations, sources)
        except RuntimeError:  # e.g. tensors spread over devices in a way the fused kernel refuses
            for destination, source in zip(destinations, sources, strict=True):
                destination.copy_(source)


class _Slot:
    """One copy of the training state: flat buffers (one per dtype and device) and a view per state tensor."""

    def __init__(self) -> None:
        self.flats: list[th.Tensor] = []
        self.views: list[th.Tensor] = []
        self.signature: list[tuple] | None = None
        self.optimizer_values: list[dict[int, dict[str, Any]]] = []
        self.n_updates = -1

    def allocate(self, tensors: list[th.Tensor], signature: list[tuple]) -> None:
        groups: dict[tuple[th.dtype, th.device], list[int]] = {}
        for index, tensor in enumerate(tensors):
            groups.setdefault((tensor.dtype, tensor.device), []).append(index)
        self.flats, views = [], [th.empty(0)] * len(tensors)
        for (dtype, device), indices in groups.items():
            flat = th.empty(sum(tensors[i].numel() for i in indices), dtype=dtype, device=device)
            offset = 0
            for i in indices:
                views[i] = flat[offset : offset + tensors[i].numel()].view(tensors[i].shape)
                offset += tensors[i].numel()
            self.flats.append(flat)
        self.views, self.signature = views, signature

    def all_finite(self) -> th.Tensor:
        """A lazy (device) flag: no NaN or inf in the copy.

        One summation pass per buffer (a NaN or inf makes the sum non-finite), several times cheaper than
        ``isfinite(...).all()``; it would also flag a state whose sum overflows (|values| ~ 1e32), diverged anyway."""
        device = self.flats[0].device if self.flats else None  # the model's: its parameters come first
        # On a GPU some optimizer state stays on the CPU (Adam's step counts): each buffer's sum joins the flag there
        sums = [flat.sum().to(device) for flat in self.flats if flat.is_floating_point()]
        return th.isfinite(th.stack(sums)).all() if sums else th.ones((), dtype=th.bool, device=device)


class StateSnapshot:
    """In-memory copies of the training state (module parameters and buffers, optimizer states, extra tensors).

    Two copies alternate: ``take()`` refreshes the older one in place (one fused copy into preallocated flat
    buffers, no allocation) and returns a lazy flag saying whether the state it copied is finite, which the caller
    reads back later with its other statistics. The other copy is the snapshot before, kept in case the new one
    turns out non-finite.
    """

    def __init__(self, state: Callable[[], tuple[Sequence[nn.Module], Sequence[th.optim.Optimizer], Sequence[th.Tensor]]]):
        self._state = state
        self._slots = (_Slot(), _Slot())
        self._current: int | None = None  # the slot of the latest snapshot
        self._previous: int | None = None  # the slot of the snapshot before it

    def _collect(self) -> tuple[list[th.Tensor], list[tuple], list[dict[int, dict[str, Any]]]]:
        modules, optimizers, extra = self._state()
        tensors: list[th.Tensor] = []
        for module in modules:
            tensors += [*module.parameters(), *module.buffers()]
        tensors += list(extra)
        signature: list[tuple] = [(tuple(t.shape), t.dtype, t.device) for t in tensors]
        optimizer_values: list[dict[int, dict[str, Any]]] = []
        for opt_index, optimizer in enumerate(optimizers):
            values: dict[int, dict[str, Any]] = {}
            params = [param for group in optimizer.param_groups for param in group["params"]]
            for param_index, param in enumerate(params):
                param_state = optimizer.state.get(param)
                if not param_state:
                    continue
                values[param_index] = {}
                for key in sorted(param_state, key=str):
                    value = param_state[key]
                    if isinstance(value, th.Tensor):
                        tensors.append(value)
                        signature.append((opt_index, param_index, key, tuple(value.shape), value.dtype, value.device))
                    else:
                        values[param_index][key] = value
            optimizer_values.append(values)
        return tensors, signature, optimizer_values

    def take(self, n_updates: int) -> th.Tensor:
        """Copy the current state (after ``n_updates`` updates); return a lazy flag: is it finite?"""
        index = 1 if self._current == 0 else 0
        slot = self._slots[index]
        tensors, signature, optimizer_values = self._collect()
        if signature != slot.signature:
            slot.allocate(tensors, signature)
        _foreach_copy(slot.views, tensors)
        slot.optimizer_values, slot.n_updates = optimizer_values, n_updates
        self._previous, self._current = self._current, index
        return slot.all_finite()

    @property
    def has_current(self) -> bool:
        return self._current is not None

    @property
    def n_updates(self) -> int | None:
        """The update count of the latest snapshot (None: none taken)."""
        return None if self._current is None else self._slots[self._current].n_updates

    @property
    def has_previous(self) -> bool:
        return self._previous is not None

    def restore(self, previous: bool = False) -> int:
        """Put the latest snapshot (or the one before it, which then becomes the latest) back in place.

        :return: the update count of the restored state.
        """
        index = self._previous if previous else self._current
        if index is None:
            raise RuntimeError("No snapshot to restore")
        slot = self._slots[index]
        _, optimizers, _ = self._state()
        # Optimizer states created after the snapshot (e.g. Adam's moments at the first step) are dropped.
        for optimizer, saved in zip(optimizers, slot.optimizer_values, strict=False):
            params = [param for group in optimizer.param_groups for param in group["params"]]
            for param_index, param in enumerate(params):
                if param_index not in saved:
                    optimizer.state.pop(param, None)
                else:
                    optimizer.state[param].update(saved[param_index])
        tensors, signature, _ = self._collect()
        if signature != slot.signature:
            raise RuntimeError("The training state changed shape since the snapshot; it cannot be restored")
        _foreach_copy(tensors, slot.views)
        if previous:  # the newer copy is not finite: the next snapshot overwrites it
            self._current, self._previous = index, None
        return slot.n_updates

    def nbytes(self) -> int:
        return sum(flat.numel() * flat.element_size() for slot in self._slots for flat in slot.flats)


class GuardedAlgorithm(Protocol):
    """What the divergence guard uses of the algorithm it guards."""

    check_finite: bool
    num_timesteps: int
    _n_updates: int

    def _training_state(self) -> tuple[Sequence[nn.Module], Sequence[th.optim.Optimizer], Sequence[th.Tensor]]: ...


class DivergenceGuard:
    """Stops training at the first NaN or inf, with the model rolled back to its last copy of the training state.

    The algorithm calls it around the gradient steps of each ``train()``: ``start()`` copies the training state when a
    copy is due (with a lazy flag: is it finite?), ``check()`` keeps lazy finiteness flags of each step, and
    ``finish()`` reads them back with the step metrics in one device transfer, so that checking costs no
    synchronization per step. When a flag is down, ``finish()`` restores the copy and raises ``DivergenceError``
    naming the first update and the quantities that went non-finite. It does nothing while the algorithm's
    ``check_finite`` is False.
    """

    def __init__(self, algorithm: GuardedAlgorithm):
        self.algorithm = algorithm
        self.snapshot = StateSnapshot(algorithm._training_state)
        self._checking = False  # whether this train() call is checked
        self._start_finite: th.Tensor | None = None  # the flag of the copy this call took (None: it took none)
        self._step_finite: list[th.Tensor] = []
        self._step_names: list[list[str]] = []
        self._copy_due = True

    def refresh(self) -> None:
        """Make the next call copy the state: it may have been changed from outside (a new ``learn()``, loaded
        parameters), which a rollback to an older copy would undo."""
        self._copy_due = True

    def _snapshot_due(self) -> bool:
        n_updates, last = self.algorithm._n_updates, self.snapshot.n_updates
        if self._copy_due or last is None or n_updates < SNAPSHOT_INTERVAL:
            return True
        return not 0 <= n_updates - last < SNAPSHOT_INTERVAL

    def start(self) -> None:
        """Before the gradient steps: copy the state to roll back to, when a copy is due."""
        self._step_finite, self._step_names = [], []
        self._checking, self._start_finite = self.algorithm.check_finite, None
        if self._checking and self._snapshot_due():
            self._start_finite = self.snapshot.take(self.algorithm._n_updates)
            self._copy_due = False

    def check(self, replay_data: ReplayBufferSamples | DictReplayBufferSamples, values: dict[str, th.Tensor]) -> None:
        """After a gradient step: flag its replay batch and ``values`` (0-dim tensors, by name) if not finite."""
        if not self._checking:
            return
        data = dict(
            observations=replay_data.observations,
            next_observations=replay_data.next_observations,
            rewards=replay_data.rewards,
        )
        self._step_names.append([*data, *values])  # the steps of a call may differ (policy_delay: no actor metrics)
        data_finite = th.stack([all_finite(tensor) for tensor in data.values()])
        self._step_finite.append(th.cat([data_finite, th.isfinite(th.stack(list(values.values())))]))

    def finish(self, means: th.Tensor) -> np.ndarray:
        """After the gradient steps: ``means`` (of the step metrics) as NumPy, read back with the flags."""
        if not self._checking:
            return means.cpu().numpy()
        with th.no_grad():
            flags = th.cat(self._step_finite)  # the steps' checks, one after the other
            start_flag = th.ones((), dtype=th.bool, device=means.device) if self._start_finite is None else self._start_finite
            packed = th.cat([means, start_flag.to(means.dtype).reshape(1), flags.to(means.dtype)])
            packed_np = packed.cpu().numpy()
        start_finite = packed_np[means.numel()] > 0.5
        all_flags = packed_np[means.numel() + 1 :] > 0.5
        if start_finite and all_flags.all():
            return packed_np[: means.numel()]

        start_update = self.algorithm._n_updates - len(self._step_names)
        if not start_finite:  # the last step of the previous call overflowed, or the state was set non-finite since
            if not self.snapshot.has_previous:
                raise DivergenceError(
                    f"WPO's parameters, optimizer states or duals were already non-finite when training started "
                    f"(update {start_update}, timestep {self.algorithm.num_timesteps}), e.g. a model loaded with NaN; "
                    "there is no finite state to roll back to.",
                    quantities=["parameters"],
                    update=start_update,
                )
            # The snapshot just taken holds that state: restore the one before it
            self._roll_back_and_raise(["parameters"], start_update, previous=True)
        step_finite = np.split(all_flags, np.cumsum([len(names) for names in self._step_names])[:-1])
        first_bad = next(step for step, finite in enumerate(step_finite) if not finite.all())
        bad = {self._step_names[first_bad][i] for i in np.flatnonzero(~step_finite[first_bad])}
        quantities = [name for name in FINITE_CHECKS if name in bad] + sorted(bad - FINITE_CHECKS.keys())
        self._roll_back_and_raise(quantities, start_update + 1 + first_bad)

    def _roll_back(self, previous: bool = False) -> int:
        self.algorithm._n_updates = self.snapshot.restore(previous)
        return self.algorithm._n_updates

    def _roll_back_and_raise(self, quantities: list[str], update: int, previous: bool = False) -> NoReturn:
        restored_update = self._roll_back(previous)
        raise DivergenceError(
            f"WPO diverged: non-finite {describe_non_finite(quantities)} at update {update} "
            f"(timestep {self.algorithm.num_timesteps}). The policy, critics, optimizers and duals were rolled back to "
            f"their state after update {restored_update}, the guard's last copy of it. {divergence_hint(quantities)}",
            quantities=quantities,
            update=update,
            restored_update=restored_update,
        )

    def check_before_save(self, path: Any) -> None:
        """Refuse to save non-finite parameters or duals, rolling back to the last snapshot when there is one."""
        if not self.algorithm.check_finite:
            return
        modules, _, extra = self.algorithm._training_state()
        parameters = [*(param for module in modules for param in module.parameters()), *extra]
        if th.isfinite(th.nn.utils.get_total_norm(parameters, norm_type=math.inf)):
            return
        rollback, update, restored_update = "", self.algorithm._n_updates, -1
        if self.snapshot.has_current:  # e.g. the last update of the last train() call overflowed
            restored_update = self._roll_back()
            rollback = f" The model was rolled back to the guard's last copy of its state (after update {restored_update})."
        raise DivergenceError(
            f"Refusing to save a model with non-finite parameters to {describe_file(path)} "
            f"(check_finite=True); the file was left as it was.{rollback}",
            quantities=["parameters"],
            update=update,
            restored_update=restored_update,
        )


# ---------------------------------------------------------------------------------------------------------------
# Atomic saves and clear load errors


def resolve_save_path(path: str | os.PathLike, suffix: str) -> pathlib.Path:
    """The file SB3 writes for ``path``: ``suffix`` added when the path has none, ``_2`` appended to a folder."""
    target = pathlib.Path(path)
    if target.suffix == "":
        target = pathlib.Path(f"{target}.{suffix}")
    if target.is_dir():
        warnings.warn(f"Path '{target}' is a folder. Will save instead to {target}_2")
        target = pathlib.Path(f"{target}_2")
    if target.is_symlink():  # write where the link points, as SB3's open() would, rather than replace the link
        target = target.resolve()
    return target


def _fsync_directory(directory: pathlib.Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform / file system
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(target: pathlib.Path) -> Iterator[io.BufferedWriter]:
    """Write to a temporary file next to ``target``, fsync it, then ``os.replace`` it onto ``target``.

    A process killed at any moment leaves ``target`` either as it was or complete, never half-written; at worst
    a stray ``.<name>.*.tmp`` file stays in the folder. A file that is replaced keeps its permission bits (a new
    file gets the umask's, as with ``open()``); being a new file, it is no longer hard-linked to other names."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
    try:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(fd, stat.S_IMODE(os.stat(target).st_mode))
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(target.parent)


@contextlib.contextmanager
def atomic_save_target(path: Any, suffix: str) -> Iterator[Any]:
    """What SB3 should save ``path`` to: for a path, a temporary file renamed over the file SB3 would write once
    complete (see ``atomic_write``); a file object as it is."""
    if not isinstance(path, str | os.PathLike):
        yield path
        return
    with atomic_write(resolve_save_path(path, suffix)) as file:
        yield file


def describe_file(path: Any) -> str:
    if isinstance(path, str | os.PathLike):
        return f"'{os.fspath(path)}'"
    name = getattr(path, "name", None)
    return f"file object {name!r}" if isinstance(name, str) else f"file object {path!r}"


def existing_path(path: Any, suffix: str) -> Any:
    """The file SB3 reads for ``path``: ``path`` itself or ``path.<suffix>``; ``FileNotFoundError`` names both when
    neither exists. File objects are returned as they are."""
    if not isinstance(path, str | os.PathLike):
        return path
    candidates = [pathlib.Path(path), pathlib.Path(f"{os.fspath(path)}.{suffix}")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"No such file: '{candidates[0]}' (nor '{candidates[1]}')")


# Errors of reading a file that is not (or no longer) what it should be: truncated, corrupt, foreign.
FILE_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    pickle.UnpicklingError,
    json.JSONDecodeError,
    UnicodeDecodeError,
    KeyError,
    AssertionError,
    AttributeError,
    ModuleNotFoundError,
    RuntimeError,
    OSError,
)


def _load_error_hint(error: BaseException) -> str:
    if isinstance(error, RuntimeError) and "Error(s) in loading state_dict" in str(error):
        return (
            ". The saved networks are not those its policy_kwargs build. A model saved when WPO's default networks were"
            " a ReLU MLP with one critic loads with custom_objects={'policy_kwargs': {'layer_norm': False,"
            " 'activation_fn': torch.nn.ReLU, 'n_critics': 1, **its policy_kwargs}}."
        )
    if isinstance(error, FILE_ERRORS) or "zip-file" in str(error):
        return ". The file is corrupt or truncated, or not what was expected (an SB3 model zip / a replay buffer pickle)."
    if isinstance(error, TypeError) and "policy must be" in str(error):
        return ". It is the model of another algorithm."
    return ""


def load_error(what: str, path: Any, error: Exception, blamed_overrides: Sequence[str] = ()) -> ValueError:
    """The error to raise when loading ``what`` (e.g. "WPO model") from ``path`` failed with ``error``: a
    ``ValueError`` naming the overrides without which the file loads, else a ``LoadError`` naming the file."""
    if blamed_overrides:
        hint = " (learned duals cannot be switched on or off by loading)" if "dual_learning_rate" in blamed_overrides else ""
        return ValueError(
            f"The {what} in {describe_file(path)} loads, but not with the overrides "
            f"{', '.join(blamed_overrides)}{hint}: {type(error).__name__}: {error}"
        )
    return LoadError(
        f"Could not load a {what} from {describe_file(path)}: {type(error).__name__}: {error}{_load_error_hint(error)}"
    )


def loads(load: Callable[..., Any], path: Any, env: Any, custom_objects: dict[str, Any] | None) -> bool:
    """Whether ``load(path, env, custom_objects=...)`` succeeds (a HerReplayBuffer model needs its env); a file object
    is rewound first (False if it cannot be)."""
    if isinstance(path, io.IOBase):
        if not path.seekable():
            return False
        path.seek(0)
    try:
        load(path, env, custom_objects=custom_objects)
    except Exception:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


def _finite_vecnormalize(path: pathlib.Path) -> bool:
    """Whether a pickled ``VecNormalize`` loads and holds finite running statistics."""
    try:
        with path.open("rb") as file:
            vecnormalize = pickle.load(file)
    except Exception:
        return False
    running_stats = [getattr(vecnormalize, "ret_rms", None)]
    obs_rms = getattr(vecnormalize, "obs_rms", None)
    running_stats += list(obs_rms.values()) if isinstance(obs_rms, dict) else [obs_rms]
    arrays = [getattr(rms, name) for rms in running_stats if rms is not None for name in ("mean", "var")]
    return all(np.all(np.isfinite(array)) for array in arrays)


def find_latest_checkpoint(
    save_path: str | os.PathLike, name_prefix: str = "rl_model"
) -> tuple[pathlib.Path, pathlib.Path | None, pathlib.Path | None]:
    """The newest complete checkpoint written by SB3's ``CheckpointCallback(save_path, name_prefix=...)``.

    The callback saves the model, then the replay buffer (``save_replay_buffer=True``), then the ``VecNormalize``
    statistics (``save_vecnormalize=True``): a run killed between these saves leaves an incomplete step. When any
    step has a replay buffer (or statistics), only steps that have one count, and statistics must load and be
    finite: resuming with missing or NaN statistics would silently give a different, or NaN, policy. So a kill
    between two saves, or statistics gone NaN, make it fall back to the step before.

    To resume: ``WPO.load(model, env=...)`` brings back the networks, optimizers, duals and timestep count,
    ``load_replay_buffer(replay_buffer)`` the transitions, ``VecNormalize.load(vecnormalize, venv)`` the statistics;
    then ``learn(remaining, reset_num_timesteps=False)`` goes on where the run stopped.

    :return: ``(model, replay_buffer, vecnormalize)`` paths; the replay buffer and VecNormalize paths are None
        when the run saved none.
    """
    folder = pathlib.Path(save_path)
    pattern = re.compile(rf"^{re.escape(name_prefix)}_(\d+)_steps\.zip$")
    files = list(folder.iterdir()) if folder.is_dir() else []
    steps = sorted((int(match.group(1)) for file in files if (match := pattern.match(file.name))), reverse=True)
    if not steps:
        raise FileNotFoundError(f"No checkpoint '{name_prefix}_<steps>_steps.zip' in '{folder}'")

    def replay_buffer_path(step: int) -> pathlib.Path:
        return folder / f"{name_prefix}_replay_buffer_{step}_steps.pkl"

    def vecnormalize_path(step: int) -> pathlib.Path:
        return folder / f"{name_prefix}_vecnormalize_{step}_steps.pkl"

    with_buffer = any(replay_buffer_path(step).is_file() for step in steps)
    with_vecnormalize = any(vecnormalize_path(step).is_file() for step in steps)
    for step in steps:
        if with_buffer and not replay_buffer_path(step).is_file():
            continue
        if with_vecnormalize and not (vecnormalize_path(step).is_file() and _finite_vecnormalize(vecnormalize_path(step))):
            continue
        return (
            folder / f"{name_prefix}_{step}_steps.zip",
            replay_buffer_path(step) if with_buffer else None,
            vecnormalize_path(step) if with_vecnormalize else None,
        )
    raise FileNotFoundError(
        f"No complete checkpoint in '{folder}': every step lacks its replay buffer or has missing or non-finite "
        "VecNormalize statistics"
    )


# ---------------------------------------------------------------------------------------------------------------
# Guards of the data collection


class EndlessEpisodeGuard(BaseCallback):
    """With ``train_freq`` in episodes, SB3 collects until an episode ends: on an environment whose episodes never
    end, ``learn()`` would hang. Raise once a single rollout has outrun the whole ``learn()`` budget (and 10,000
    steps) without an episode ending."""

    def __init__(self, budget: int):
        super().__init__()
        self.budget = budget
        self.limit = max(budget, 10_000)

    def _on_step(self) -> bool:
        if self.locals.get("num_collected_episodes", 1) == 0 and self.locals.get("num_collected_steps", 0) > self.limit:
            raise RuntimeError(
                f"train_freq={self.locals.get('train_freq')} waits for the end of an episode, and none has ended in "
                f"{self.limit} steps (this learn() call's budget is {self.budget}): the environment may never end its "
                "episodes. Wrap it "
                "in gymnasium.wrappers.TimeLimit, or give train_freq in steps"
            )
        return True


def check_finite_observation(observation: np.ndarray | dict[str, np.ndarray]) -> None:
    """Refuse to act on NaN or inf observations (an environment or wrapper bug): the policy would return NaN actions,
    and the environment would be stepped with them."""
    items = observation.items() if isinstance(observation, dict) else [(None, observation)]
    for key, array in items:
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            where = f"observation[{key!r}]" if key is not None else "observation"
            raise ValueError(f"{where} contains NaN or inf: {array!r}; WPO cannot act on it")


# ---------------------------------------------------------------------------------------------------------------
# The guard rails around the algorithm

SelfGuardedOffPolicyAlgorithm = TypeVar("SelfGuardedOffPolicyAlgorithm", bound="GuardedOffPolicyAlgorithm")


class GuardedOffPolicyAlgorithm(OffPolicyAlgorithm):
    """SB3's off-policy algorithm with guard rails at its edges, as SB3 keeps ``VecCheckNan`` apart from the algorithms:
    the divergence guard (``self._divergence_guard``, which the algorithm's ``train()`` calls around its gradient
    steps), atomic saves that refuse non-finite parameters, loads with errors that name the file or the override,
    all-or-nothing ``set_parameters`` and ``load_replay_buffer``, and guards of ``learn()``'s input.

    The subclass (WPO) lists its state in ``_get_torch_save_params``, as for SB3's ``save``: a rollback restores that.
    """

    check_finite: bool  # the divergence guard's switch, an argument of the subclass
    _divergence_guard: DivergenceGuard
    # Whether SB3 picked the n-step buffer for n_steps > 1 (replay_buffer_class=None): a load may pick again
    _n_step_buffer_picked: bool = False

    def _setup_model(self) -> None:
        if self._n_step_buffer_picked:
            # A loaded model carries the buffer SB3 picked for its n_steps and gamma: let SB3 pick again for the
            # current ones (overrides in load), instead of warning that n_steps is ignored.
            self.replay_buffer_class = None
            self.replay_buffer_kwargs = {k: v for k, v in self.replay_buffer_kwargs.items() if k not in ("n_steps", "gamma")}
        picked = self.replay_buffer_class is None
        super()._setup_model()
        self._n_step_buffer_picked = picked and self.replay_buffer_class is NStepReplayBuffer
        self._divergence_guard = DivergenceGuard(self)

    def _training_state(self) -> tuple[list[nn.Module], list[th.optim.Optimizer], list[th.Tensor]]:
        """What a divergence rollback restores: what ``save`` stores as PyTorch state (networks with their targets,
        optimizers, extra tensors such as WPO's duals)."""
        state_dicts, tensors = self._get_torch_save_params()
        objects = [recursive_getattr(self, name) for name in state_dicts]
        modules = [obj for obj in objects if isinstance(obj, nn.Module)]
        optimizers = [obj for obj in objects if isinstance(obj, th.optim.Optimizer)]
        return modules, optimizers, [recursive_getattr(self, name) for name in tensors]

    def learn(
        self: SelfGuardedOffPolicyAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "run",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfGuardedOffPolicyAlgorithm:
        real(0.0)("total_timesteps", total_timesteps)
        if self._n_updates > 0 and self.replay_buffer is not None and self.replay_buffer.size() == 0:
            warnings.warn(
                f"This model has made {self._n_updates} updates but its replay buffer is empty (SB3 saves the buffer "
                "apart from the model): training goes on from new transitions only. Load the saved buffer with "
                "model.load_replay_buffer(path); the RL Zoo's -i loads replay_buffer.pkl from the agent's folder, "
                "written by --save-replay-buffer",
                UserWarning,
                stacklevel=3,  # the caller of the algorithm's learn()
            )
        self._divergence_guard.refresh()  # the state may have been changed since the last call: copy it again
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _init_callback(self, callback: MaybeCallback, progress_bar: bool = False) -> BaseCallback:
        if self.train_freq.unit == TrainFrequencyUnit.EPISODE:  # type: ignore[union-attr]
            if callback is not None and not isinstance(callback, list | BaseCallback):
                callback = ConvertCallback(callback)
            callbacks = callback if isinstance(callback, list) else [] if callback is None else [callback]
            callback = [*callbacks, EndlessEpisodeGuard(self._total_timesteps - self.num_timesteps)]
        return super()._init_callback(callback, progress_bar)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_divergence_guard"]

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """Save the model to a zip file, atomically: written to a temporary file in the same folder, synced, then
        renamed over ``path`` (``.zip`` is appended when ``path`` has no suffix, as in SB3). A process killed during
        the save leaves the previous file intact. With ``check_finite``, a model with non-finite parameters is not
        saved (``DivergenceError``)."""
        if hasattr(self, "_divergence_guard"):
            self._divergence_guard.check_before_save(path)
        with atomic_save_target(path, "zip") as target:
            super().save(target, exclude=exclude, include=include)

    def save_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        """Save the replay buffer as a pickle file, atomically (see ``save``); ``.pkl`` is appended when ``path``
        has no suffix."""
        with atomic_save_target(path, "pkl") as target:
            super().save_replay_buffer(target)

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfGuardedOffPolicyAlgorithm],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfGuardedOffPolicyAlgorithm:
        """SB3's ``load``, with errors that name the file: ``FileNotFoundError`` when neither ``path`` nor
        ``path.zip`` exists, ``sb3_wpo.LoadError`` (a ``ValueError``) when it is corrupt, truncated, not an SB3
        model, or the model of another algorithm; a ``ValueError`` naming the overrides (``kwargs``, ``device``)
        when the file loads without them but not with them. Overrides apply as in SB3, the replay buffer's n-step
        returns and discount included; an ``n_steps`` the replay buffer cannot compute (Dict observations, a
        ``replay_buffer_class`` such as ``HerReplayBuffer``) is refused, as at construction; ``per_dim_constraining``
        cannot change (the saved duals have its shape)."""
        path = existing_path(path, "zip")
        kwargs = normalize_numbers(kwargs)
        try:
            model = super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)
            # The saved values, with the overrides in kwargs; custom_objects replace saved values unchecked, as in SB3
            # (the RL Zoo's enjoy/record_video load agents with custom_objects={"learning_rate": 0.0, ...}).
            check_arguments(model, unchecked=custom_objects or {})
            if "n_steps" in kwargs:
                check_n_steps_take_effect(model)
        except Exception as error:
            overrides = sorted(kwargs) + (["device"] if device != "auto" else [])
            blamed = overrides if overrides and loads(super().load, path, env, custom_objects) else []
            raise load_error(f"{cls.__name__} model", path, error, blamed) from error
        check_saved_duals(model)
        return model

    def set_parameters(
        self,
        load_path_or_dict: str | TensorDict,
        exact_match: bool = True,
        device: th.device | str = "auto",
    ) -> None:
        """SB3's ``set_parameters``, all or nothing: when one tensor does not fit, the model is left as it was."""
        names, _ = self._get_torch_save_params()
        saved = {name: copy.deepcopy(recursive_getattr(self, name).state_dict()) for name in names}
        try:
            super().set_parameters(load_path_or_dict, exact_match, device)
        except Exception:
            for name, state_dict in saved.items():
                recursive_getattr(self, name).load_state_dict(state_dict)
            raise
        self._divergence_guard.refresh()  # a rollback must not bring the parameters of before back

    def load_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase, truncate_last_traj: bool = True) -> None:
        """SB3's ``load_replay_buffer``, with errors that name the file (see ``load``); the current buffer is kept
        when loading fails, and a buffer whose spaces differ from the model's is refused."""
        path = existing_path(path, "pkl")
        previous = self.replay_buffer
        try:
            super().load_replay_buffer(path, truncate_last_traj)
            buffer = self.replay_buffer
            assert buffer is not None
            if buffer.observation_space != self.observation_space or buffer.action_space != self.action_space:
                raise ValueError(
                    f"its spaces ({buffer.observation_space}, {buffer.action_space}) differ from the model's "
                    f"({self.observation_space}, {self.action_space})"
                )
        except Exception as error:
            self.replay_buffer = previous
            raise load_error("replay buffer", path, error) from error
