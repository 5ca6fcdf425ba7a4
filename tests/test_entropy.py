"""``ent_coef``: an entropy bonus in the WPO update, the Wasserstein gradient flow of E[Q] + α·H(π), whose velocity at
each sample is ∇a Q − α·∇a log π(a); fixed, or learned as SAC's so that the entropy tracks ``target_entropy``; with
``entropy_in_target``, in the critic's target too (SAC's soft backup). Off (0, the reference) it changes nothing
(``tests/test_refactor_identity.py``); here: the velocity is the density's gradient, it spreads the policy where
nothing else acts, SAC's learned weight moves the right way, the soft target subtracts α·log π̄ from V̄(s'), and
save / load and the divergence guard keep it."""

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from torch import distributions as thd

from sb3_wpo import WPO
from sb3_wpo.losses import action_log_prob, entropy_velocity

ENV_ID = "Pendulum-v1"


@pytest.mark.parametrize("tanh_actions", [False, True])
def test_the_velocity_is_minus_the_gradient_of_the_actions_log_density(tanh_actions: bool):
    generator = th.Generator().manual_seed(0)
    mean, std = th.randn(5, 3, generator=generator, dtype=th.float64), th.rand(5, 3, generator=generator, dtype=th.float64)
    std = std + 0.2
    samples = (mean + std * th.randn(4, 5, 3, generator=generator, dtype=th.float64)).requires_grad_(True)
    log_prob = action_log_prob(samples, mean, std, tanh_actions)
    assert log_prob.shape == (4, 5)
    (gradient,) = th.autograd.grad(log_prob.sum(), samples)
    th.testing.assert_close(entropy_velocity(samples, mean, std, tanh_actions), -gradient)
    if tanh_actions:  # the change of variables a = tanh(u), as torch.distributions writes it
        squashed = thd.TransformedDistribution(thd.Normal(mean, std), [thd.TanhTransform()])
        th.testing.assert_close(log_prob, squashed.log_prob(th.tanh(samples)).sum(dim=-1))


def make_model(policy_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> WPO:
    # No KL penalty (α ≈ 1e-8), so that only ∇a Q and the entropy move the policy; 8 samples at learning rate 1e-3
    # (the sizes these tests were made with: the std's growth in 50 steps scales with the learning rate)
    arguments: dict[str, Any] = dict(
        learning_starts=0,
        batch_size=64,
        init_log_alpha_mean=-18.0,
        init_log_alpha_std=-18.0,
        learning_rate=1e-3,
        num_samples=8,
        seed=0,
        device="cpu",
    )
    arguments.update(kwargs)
    policy_kwargs = dict(net_arch=[32, 32], tanh_actions=True, **(policy_kwargs or {}))
    return WPO("MlpPolicy", ENV_ID, policy_kwargs=policy_kwargs, **arguments)


def actor_steps(model: WPO, steps: int) -> None:
    """``steps`` updates of the actor alone on random states, with a critic that is flat in the action (∇a Q = 0)."""
    model.observation_space.seed(0)
    obs = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(64)]), dtype=th.float32)

    def flat_critic(obs: th.Tensor, samples: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        return th.zeros(samples.shape[:-1]), th.zeros_like(samples)

    model._q_and_action_gradients = flat_critic  # type: ignore[method-assign,assignment]
    for _ in range(steps):
        loss, _ = model._actor_loss(obs)
        model.actor.optimizer.zero_grad()
        loss.backward()
        model.actor.optimizer.step()


def policy_stds(model: WPO) -> th.Tensor:
    model.observation_space.seed(1)
    obs = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(64)]), dtype=th.float32)
    with th.no_grad():
        return model.actor.distribution_params(obs)[1]


def mean_std(model: WPO) -> float:
    return float(policy_stds(model).mean())


def test_the_entropy_spreads_the_policy_where_the_critic_is_flat():
    without, with_entropy = make_model(), make_model(ent_coef=0.1)
    initial = mean_std(without)
    actor_steps(without, 50)
    actor_steps(with_entropy, 50)
    assert mean_std(without) == pytest.approx(initial, rel=1e-3)  # nothing moves it
    assert mean_std(with_entropy) > 1.3 * initial  # 0.5 to about 0.77 in 50 steps


def test_max_std_bounds_the_std_the_entropy_spreads():
    """``max_std`` (SAC bounds its log-std too): the policy starts at init_std as without it, and the entropy's push
    takes the std towards the bound but not past it, where the unbounded std grows on."""
    bounded, unbounded = make_model(ent_coef=0.1, policy_kwargs=dict(max_std=0.6)), make_model(ent_coef=0.1)
    assert mean_std(bounded) == pytest.approx(0.5, rel=1e-2) and mean_std(unbounded) == pytest.approx(0.5, rel=1e-2)
    actor_steps(bounded, 200)
    actor_steps(unbounded, 200)
    stds = policy_stds(bounded)
    assert float(stds.max()) <= 0.6 and float(stds.mean()) > 0.55
    assert mean_std(unbounded) > 0.8


@pytest.mark.parametrize("target_entropy, direction", [(5.0, 1), (-5.0, -1)])
def test_a_learned_weight_follows_the_target_entropy(target_entropy: float, direction: int):
    """SAC's rule: the weight grows while the entropy is below the target and shrinks while it is above (the initial
    policy's entropy is about 0.5 on Pendulum-v1)."""
    model = make_model(ent_coef="auto_0.5", target_entropy=target_entropy, init_log_alpha_std=10_000.0)
    model.learn(200)
    model.train(gradient_steps=20, batch_size=64)
    assert model.log_ent_coef is not None
    weight = float(model.log_ent_coef.detach().exp())
    assert (weight - 0.5) * direction > 0.005
    assert model.logger.name_to_value["train/ent_coef"] == pytest.approx(weight, rel=0.05)
    assert model.logger.name_to_value["train/entropy"] == pytest.approx(0.5, abs=0.2)


@pytest.mark.parametrize("target_aggregation", ["mean", "max"])
def test_the_soft_target_subtracts_the_weighted_log_density_of_the_target_policys_actions(target_aggregation: str):
    """V̄(s') = agg_n [min Q̄(s', a'_n) − α·log π̄(a'_n|s')], against the same target without the entropy: with fixed
    samples (the target policy's mean plus 0.3 σ, then 1.1 σ), the two targets differ by what the formula says."""
    model = make_model(ent_coef=0.3, num_samples=2, learning_starts=10, target_aggregation=target_aggregation)
    model.learn(100)
    assert model.replay_buffer is not None
    data = model.replay_buffer.sample(64)
    noise = th.tensor([0.3, 1.1]).view(2, 1, 1)
    model._sample_actions = lambda mean, std: (mean + noise * std).detach()  # type: ignore[method-assign]

    def target(entropy_in_target: bool) -> th.Tensor:
        model.entropy_in_target = entropy_in_target
        return model._sgd_step(data, update_actor=False)["target_q"]  # the targets' mean over the batch

    plain, soft = target(False), target(True)
    with th.no_grad():
        mean, std = model.actor_target.distribution_params(data.next_observations)
        samples = mean + noise * std
        next_q = model.critic_target(data.next_observations, model.actor_target.to_action(samples)).min(dim=-1).values
        soft_q = next_q - 0.3 * action_log_prob(samples, mean, std, tanh_actions=True)
        aggregate = (lambda q: q.mean(dim=0)) if target_aggregation == "mean" else (lambda q: q.max(dim=0).values)
        not_done = 1 - data.dones.squeeze(-1)
        expected = (model.gamma * not_done * (aggregate(soft_q) - aggregate(next_q))).mean()
    assert float(expected.abs()) > 0.01  # the entropy term is not negligible here
    th.testing.assert_close(soft - plain, expected, rtol=1e-4, atol=1e-5)


def test_the_defaults_have_no_entropy_term():
    model = make_model(learning_starts=10)
    assert model.ent_coef == 0.0 and model.log_ent_coef is None and model.ent_coef_tensor is None
    model.learn(100)
    assert "train/actor_loss" in model.logger.name_to_value
    assert not {"train/ent_coef", "train/entropy"} & model.logger.name_to_value.keys()


def test_save_and_load_keep_the_learned_weight_and_its_optimizer(tmp_path: Path):
    model = make_model(ent_coef="auto", learning_starts=10)
    model.learn(100)
    assert model.log_ent_coef is not None and model.ent_coef_optimizer is not None
    model.save(tmp_path / "wpo")
    loaded = WPO.load(tmp_path / "wpo", env=gym.make(ENV_ID), device="cpu")
    assert loaded.log_ent_coef is not None and loaded.ent_coef_optimizer is not None
    th.testing.assert_close(loaded.log_ent_coef, model.log_ent_coef)
    saved_state, loaded_state = model.ent_coef_optimizer.state_dict(), loaded.ent_coef_optimizer.state_dict()
    th.testing.assert_close(loaded_state["state"][0]["exp_avg"], saved_state["state"][0]["exp_avg"])
    assert loaded.target_entropy == model.target_entropy == -1.0
    # The divergence guard rolls the weight back with the rest of the training state
    assert any(tensor is loaded.log_ent_coef for tensor in loaded._training_state()[2])


def test_load_can_change_a_fixed_weight(tmp_path: Path):
    make_model(ent_coef=0.1).save(tmp_path / "wpo")
    loaded = WPO.load(tmp_path / "wpo", env=gym.make(ENV_ID), device="cpu", ent_coef=0.3)
    assert loaded.ent_coef_tensor is not None and float(loaded.ent_coef_tensor) == pytest.approx(0.3)
    off = WPO.load(tmp_path / "wpo", env=gym.make(ENV_ID), device="cpu", ent_coef=0.0)
    assert off.ent_coef_tensor is None
