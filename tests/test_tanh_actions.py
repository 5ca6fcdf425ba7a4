"""``policy_kwargs=dict(tanh_actions=True)``: actions are tanh(u) for u ~ N(μ, σ), the WPO update of the Gaussian takes
the critic's action-gradient through tanh (∇u Q = ∇a Q · (1 − tanh²u)), the critic's target uses the same actions, and
the option is saved and loaded. Off (the reference), u is clipped to the bounds and ∇u Q is 0 beyond them."""

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from sb3_wpo import WPO

ENV_ID = "Pendulum-v1"


def make_model(tanh_actions: bool, init_std: float = 2.0, **kwargs) -> WPO:
    policy_kwargs = dict(net_arch=[32, 32], init_std=init_std, tanh_actions=tanh_actions)
    return WPO("MlpPolicy", ENV_ID, policy_kwargs=policy_kwargs, seed=0, device="cpu", **kwargs)


def observations(model: WPO, n: int = 256) -> th.Tensor:
    model.observation_space.seed(0)
    return th.as_tensor(np.stack([model.observation_space.sample() for _ in range(n)]), dtype=th.float32)


def test_predict_is_tanh_of_the_gaussian_inside_the_bounds():
    model = make_model(tanh_actions=True)
    obs = observations(model)
    low, high = model.action_space.low, model.action_space.high  # type: ignore[union-attr]
    actions, _ = model.predict(obs.numpy())
    # σ = 2: the clipped policy would put about 60% of the actions on a bound
    assert np.all(actions > low) and np.all(actions < high)
    assert np.mean(np.abs(actions) > 0.9 * high) > 0.2  # but tanh still reaches near them
    with th.no_grad():
        model.actor.mu.bias.fill_(0.8)
        mean, _ = model.actor.distribution_params(obs)
    deterministic, _ = model.predict(obs.numpy(), deterministic=True)
    expected = low + (np.tanh(mean.numpy()) + 1.0) * 0.5 * (high - low)
    np.testing.assert_allclose(deterministic, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("tanh_actions", [False, True])
def test_the_update_takes_the_critics_gradient_through_the_action_map(tanh_actions: bool):
    model = make_model(tanh_actions)
    obs = observations(model)
    with th.no_grad():
        samples = model._sample_actions(*model.actor.distribution_params(obs))  # [N, B, D]
    q_values, q_grads = model._q_and_action_gradients(obs, samples)

    actions = (th.tanh(samples) if tanh_actions else samples.clamp(-1.0, 1.0)).requires_grad_(True)
    expected_q = model.critic(obs, actions).mean(dim=-1)
    (dq_da,) = th.autograd.grad(expected_q.sum(), actions)
    th.testing.assert_close(q_values, expected_q.detach())
    if tanh_actions:
        th.testing.assert_close(q_grads, dq_da * (1.0 - th.tanh(samples) ** 2))
        assert bool((q_grads[samples.abs() > 1.0] != 0).all())  # no dead zone beyond the bounds
    else:
        outside = samples.abs() > 1.0
        assert bool(outside.any()) and bool((q_grads[outside] == 0).all())
        th.testing.assert_close(q_grads[~outside], dq_da[~outside])


@pytest.mark.parametrize("tanh_actions", [False, True])
def test_the_critics_target_sees_the_policys_actions(tanh_actions: bool):
    model = make_model(tanh_actions, learning_starts=0, batch_size=64)
    model.learn(64)
    seen: list[th.Tensor] = []
    forward = model.critic_target.forward

    def recording_forward(obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        seen.append(actions.detach().clone())
        return forward(obs, actions)

    model.critic_target.forward = recording_forward  # type: ignore[method-assign,assignment]
    model.train(gradient_steps=1, batch_size=64)
    (next_actions,) = seen
    assert next_actions.shape == (model.num_samples, 64, 1)
    at_bounds = float((next_actions.abs() == 1.0).float().mean())
    # σ = 2: about 60% of the clipped samples sit on a bound, none of the tanh ones
    assert at_bounds == 0.0 if tanh_actions else at_bounds > 0.4


def test_tanh_actions_are_saved_and_loaded(tmp_path: Path):
    model = make_model(tanh_actions=True, learning_starts=0)
    model.learn(50)
    model.save(tmp_path / "wpo.zip")
    loaded = WPO.load(tmp_path / "wpo.zip", env=gym.make(ENV_ID), device="cpu")
    assert loaded.actor.tanh_actions and loaded.actor_target.tanh_actions and loaded.policy.tanh_actions
    obs = observations(model).numpy()
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])


def test_tanh_actions_are_off_by_default():
    model = WPO("MlpPolicy", ENV_ID, device="cpu")
    assert not model.actor.tanh_actions and not model.actor_target.tanh_actions
