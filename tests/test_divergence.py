"""The divergence guard: NaN/inf in the data or the updates stops training with a DivergenceError, after rolling the
model (networks, optimizers, duals, update count) back to the guard's last copy of its state (the start of the failing
train() call during the first SNAPSHOT_INTERVAL updates and after a new learn() or set_parameters, else at most
SNAPSHOT_INTERVAL updates before it); diverged models are never saved."""

import copy
import os
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import CheckpointCallback
from torch import nn

from sb3_wpo import WPO, DivergenceError
from sb3_wpo.safety import SNAPSHOT_INTERVAL
from helpers import assert_same

# Sized with WPO's earlier defaults (one update per 2 steps, one critic, a ReLU MLP): the reference's LayerNorm MLP,
# today's default, does not overflow at the learning rate these tests use to blow the networks up
TINY: dict[str, Any] = dict(
    buffer_size=1_000,
    learning_starts=40,
    batch_size=32,
    num_samples=4,
    train_freq=2,
    policy_delay=1,
    dual_learning_rate=1e-2,
    target_update_interval=5,
    policy_kwargs=dict(net_arch=[16], layer_norm=False, activation_fn=nn.ReLU, n_critics=1),
    seed=0,
)


class ToyEnv(gym.Env):
    """Reward -|a|², 25-step episodes; after ``poison_after`` steps it returns NaN in its reward or observation."""

    def __init__(self, poison: str | None = None, poison_after: int = 30, dict_obs: bool = False):
        box = spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.observation_space = spaces.Dict({"x": box, "y": box}) if dict_obs else box
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.poison, self.poison_after, self.total_steps, self.t = poison, poison_after, 0, 0

    def _obs(self) -> Any:
        obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        if self.poison == "obs" and self.total_steps > self.poison_after:
            obs[1] = np.nan
        return {"x": obs, "y": obs.copy()} if isinstance(self.observation_space, spaces.Dict) else obs

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        self.t += 1
        self.total_steps += 1
        reward = -float(np.sum(np.square(action)))
        if self.poison == "reward" and self.total_steps > self.poison_after:
            reward = np.nan
        return self._obs(), reward, False, self.t >= 25, {}


def training_state(model: WPO) -> dict[str, Any]:
    state = {
        "policy": model.policy.state_dict(),
        "actor.optimizer": model.actor.optimizer.state_dict(),
        "critic.optimizer": model.critic.optimizer.state_dict(),
        "log_alpha_mean": model.log_alpha_mean,
        "log_alpha_std": model.log_alpha_std,
        "n_updates": model._n_updates,
    }
    if model.dual_optimizer is not None:
        state["dual_optimizer"] = model.dual_optimizer.state_dict()
    return copy.deepcopy(state)


def all_parameters_finite(model: WPO) -> bool:
    tensors = [*model.policy.parameters(), model.log_alpha_mean, model.log_alpha_std]
    for optimizer in (model.actor.optimizer, model.critic.optimizer, model.dual_optimizer):
        for param_state in optimizer.state.values() if optimizer is not None else []:
            tensors += [value for value in param_state.values() if isinstance(value, th.Tensor)]
    return all(bool(th.isfinite(tensor).all()) for tensor in tensors)


def record_states_before_train(model: WPO) -> list[dict[str, Any]]:
    """The training state at the start of every train() call (the guard's last good state)."""
    states: list[dict[str, Any]] = []
    train = model.train

    def recording_train(*args: Any, **kwargs: Any) -> None:
        states.append(training_state(model))
        train(*args, **kwargs)

    model.train = recording_train  # type: ignore[method-assign]
    return states


def check_rolled_back(model: WPO, states: list[dict[str, Any]], error: DivergenceError) -> None:
    assert all_parameters_finite(model)
    assert_same(training_state(model), states[-1])
    assert model._n_updates == error.restored_update == states[-1]["n_updates"]
    assert error.update > error.restored_update
    actions, _ = model.predict(np.zeros(3, np.float32), deterministic=True)
    assert np.all(np.isfinite(actions))


@pytest.mark.parametrize("dict_obs", [False, True], ids=["box", "dict"])
def test_nan_rewards(dict_obs: bool):
    policy = "MultiInputPolicy" if dict_obs else "MlpPolicy"
    model = WPO(policy, ToyEnv("reward", dict_obs=dict_obs), **TINY)
    states = record_states_before_train(model)
    with pytest.raises(DivergenceError, match="non-finite rewards of the replay batch") as raised:
        model.learn(300)
    assert raised.value.quantities[0] == "rewards"
    assert "at update" in str(raised.value) and "VecCheckNan" in str(raised.value)
    if dict_obs:
        assert all(th.isfinite(p).all() for p in model.policy.parameters())
        return
    check_rolled_back(model, states, raised.value)


@pytest.mark.parametrize("dict_obs", [False, True], ids=["box", "dict"])
def test_nan_observations(dict_obs: bool):
    """The policy refuses to act on a NaN observation (as SAC's distribution does); NaN observations stored in the
    random warm-up are caught in the replay batch, with the model left as it was."""
    policy = "MultiInputPolicy" if dict_obs else "MlpPolicy"
    model = WPO(policy, ToyEnv("obs", dict_obs=dict_obs), **TINY)
    states = record_states_before_train(model)
    with pytest.raises(ValueError, match=r"observation(\['x'\])? contains NaN or inf"):
        model.learn(300)  # poisoned from step 31, the policy acts from step 41
    assert model.num_timesteps == TINY["learning_starts"] and model._n_updates == 0
    with pytest.raises(DivergenceError, match="observations of the replay batch") as raised:
        model.train(gradient_steps=1, batch_size=TINY["batch_size"])
    assert raised.value.quantities[0] in ("observations", "next_observations")
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    assert_same(training_state(model), states[-1])


def test_nan_rewards_with_delayed_policy_updates():
    """policy_delay: the steps of one train() call differ (the delayed ones have no actor metrics); the guard still
    names the first bad update among them and rolls back to the call's start."""
    params = {**TINY, "policy_delay": 2, "train_freq": 3, "gradient_steps": 3}
    model = WPO("MlpPolicy", ToyEnv("reward", poison_after=60), **params)
    states = record_states_before_train(model)
    with pytest.raises(DivergenceError, match="non-finite rewards of the replay batch") as raised:
        model.learn(300)
    assert raised.value.quantities[0] == "rewards"
    check_rolled_back(model, states, raised.value)
    assert raised.value.update <= raised.value.restored_update + params["gradient_steps"]


def test_exploding_learning_rate():
    model = WPO("MlpPolicy", ToyEnv(), **{**TINY, "learning_rate": 1e6})
    states = record_states_before_train(model)
    with pytest.raises(DivergenceError, match=r"WPO diverged: non-finite .* at update \d+") as raised:
        model.learn(2_000)
    assert not set(raised.value.quantities) & {"observations", "next_observations", "rewards"}
    assert "learning_rate" in str(raised.value)
    check_rolled_back(model, states, raised.value)
    assert raised.value.restored_update >= 1, "the optimizer state of the last good update is kept"


def test_divergence_in_the_first_train_call_restores_the_initial_state():
    """The optimizers had no state yet: the rollback drops the state the diverged steps created."""
    model = WPO("MlpPolicy", ToyEnv(), **{**TINY, "learning_rate": 1e6, "gradient_steps": 20})
    initial = training_state(model)
    with pytest.raises(DivergenceError) as raised:
        model.learn(100)
    assert raised.value.restored_update == 0
    assert_same(training_state(model), initial)
    assert not model.actor.optimizer.state and not model.critic.optimizer.state


def test_a_late_divergence_rolls_back_to_the_last_copy_within_the_interval():
    """Past the first SNAPSHOT_INTERVAL updates the guard copies the state once per interval, not at every call: a
    divergence rolls back to the last copy, a state the model had at the start of an earlier call."""
    model = WPO("MlpPolicy", ToyEnv("reward", poison_after=400), **{**TINY, "train_freq": 1})
    states = record_states_before_train(model)
    with pytest.raises(DivergenceError, match="non-finite rewards") as raised:
        model.learn(1_000)
    error = raised.value
    assert error.update > 2 * SNAPSHOT_INTERVAL, "diverges once copies are spaced"
    assert error.restored_update < states[-1]["n_updates"], "not a copy at every call"
    assert error.update - error.restored_update <= SNAPSHOT_INTERVAL
    (restored,) = [state for state in states if state["n_updates"] == error.restored_update]
    assert_same(training_state(model), restored)
    assert model._n_updates == error.restored_update and all_parameters_finite(model)


def test_a_new_learn_call_or_set_parameters_is_copied_before_its_first_update():
    """A change between calls (a learning rate that diverges at once; parameters set by hand) is not undone by a
    rollback to a copy taken before it: learn() and set_parameters() make the next call copy the state."""
    model = WPO("MlpPolicy", ToyEnv(), **{**TINY, "train_freq": 1})
    model.learn(300)
    assert model._n_updates > 2 * SNAPSHOT_INTERVAL
    model.lr_schedule = lambda _: 1e6
    states = record_states_before_train(model)
    with pytest.raises(DivergenceError) as raised:
        model.learn(300, reset_num_timesteps=False)
    assert raised.value.restored_update == states[0]["n_updates"], "rolled back to the start of this learn()"
    networks = ("policy", "log_alpha_mean", "log_alpha_std", "n_updates")  # the optimizers keep the new learning rate
    assert_same({key: training_state(model)[key] for key in networks}, {key: states[0][key] for key in networks})

    parameters = model.get_parameters()
    parameters["policy"]["actor.mu.bias"] = parameters["policy"]["actor.mu.bias"] + 0.5
    model.set_parameters(parameters)
    with pytest.raises(DivergenceError) as raised:
        for _ in range(50):
            model.train(gradient_steps=1, batch_size=TINY["batch_size"])
    assert raised.value.restored_update == states[0]["n_updates"]
    assert th.equal(model.actor.mu.bias, parameters["policy"]["actor.mu.bias"]), "the parameters set, not those before"


def test_check_finite_off_lets_nan_through():
    model = WPO("MlpPolicy", ToyEnv("reward"), **TINY, check_finite=False)
    model.learn(120)  # no error: the guard is off
    assert not all(th.isfinite(p).all() for p in model.critic.parameters())


def test_a_model_with_non_finite_parameters_is_not_saved(tmp_path):
    model = WPO("MlpPolicy", ToyEnv(), **TINY)
    path = tmp_path / "model.zip"
    model.save(path)
    before = path.read_bytes()
    with th.no_grad():
        next(model.critic.parameters())[0, 0] = np.inf
    with pytest.raises(DivergenceError, match=r"model\.zip"):
        model.save(path)
    assert path.read_bytes() == before
    model.check_finite = False
    model.save(tmp_path / "diverged")  # explicitly allowed with the guard off
    assert (tmp_path / "diverged.zip").is_file()


def test_checkpoints_stay_loadable_and_finite(tmp_path):
    model = WPO("MlpPolicy", ToyEnv(), **{**TINY, "learning_rate": 1e6})
    checkpoint = CheckpointCallback(save_freq=1, save_path=str(tmp_path), save_replay_buffer=True)
    with pytest.raises(DivergenceError):
        model.learn(2_000, callback=checkpoint)
    checkpoints = sorted(tmp_path.glob("rl_model_*_steps.zip"), key=os.path.getmtime)
    assert checkpoints
    for path in checkpoints[-3:]:
        loaded = WPO.load(path)
        assert all_parameters_finite(loaded)
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"
    # The last checkpoint holds the last good state: the model was rolled back to the update it was saved at.
    last = WPO.load(checkpoints[-1])
    assert last._n_updates == model._n_updates
    assert_same(last.policy.state_dict(), model.policy.state_dict())


def test_parameters_overflowing_at_the_last_step_of_a_call_are_caught():
    """Finite losses and gradients, but an optimizer step that overflows the parameters: the end-of-call parameter
    check catches it, before the next call would snapshot the broken state."""
    model = WPO("MlpPolicy", ToyEnv(), **TINY)
    initial = training_state(model)
    step = model.critic.optimizer.step

    def overflowing_step(*args: Any, **kwargs: Any) -> Any:
        result = step(*args, **kwargs)
        with th.no_grad():
            next(model.critic.parameters()).mul_(1e38).mul_(1e38)  # float32 overflow to ±inf
        return result

    model.critic.optimizer.step = overflowing_step  # type: ignore[method-assign]
    with pytest.raises(DivergenceError, match=r"non-finite parameters, optimizer states or duals at update 1 ") as raised:
        model.learn(100)
    assert raised.value.quantities == ("parameters",) and raised.value.restored_update == 0
    assert_same(training_state(model), initial)


def test_a_model_non_finite_before_training_is_reported():
    model = WPO("MlpPolicy", ToyEnv(), **TINY)
    with th.no_grad():
        next(model.actor.parameters())[0, 0] = np.nan
    with pytest.raises(DivergenceError, match="already non-finite when training started") as raised:
        model.learn(100)
    assert raised.value.quantities == ("parameters",)


def test_a_checkpoint_of_an_overflowed_model_is_refused_and_the_model_rolled_back(tmp_path):
    """The last update of a train() call overflows; the CheckpointCallback's next save is refused (DivergenceError
    out of learn), the model is rolled back, and every checkpoint on disk is finite."""
    model = WPO("MlpPolicy", ToyEnv(), **TINY)
    step = model.critic.optimizer.step
    calls = {"n": 0}

    def overflowing_step(*args: Any, **kwargs: Any) -> Any:
        result = step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            with th.no_grad():
                next(model.critic.parameters()).mul_(1e38).mul_(1e38)
        return result

    model.critic.optimizer.step = overflowing_step  # type: ignore[method-assign]
    states = record_states_before_train(model)
    checkpoint = CheckpointCallback(save_freq=1, save_path=str(tmp_path))
    with pytest.raises(DivergenceError, match=r"Refusing to save .* rolled back") as raised:
        model.learn(200, callback=checkpoint)
    assert raised.value.update == 3 and raised.value.restored_update == 2
    assert_same(training_state(model), states[-1])
    for path in tmp_path.glob("*.zip"):
        assert all_parameters_finite(WPO.load(path))
