"""Wasserstein Policy Optimization as a Stable-Baselines3 off-policy algorithm."""

import warnings
from collections.abc import Callable
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import (
    DictReplayBufferSamples,
    GymEnv,
    MaybeCallback,
    PyTorchObs,
    ReplayBufferSamples,
)
from stable_baselines3.common.utils import get_parameters_by_name, polyak_update
from stable_baselines3.common.vec_env import VecEnv

from sb3_wpo.allocator import keep_freed_memory
from sb3_wpo.losses import MIN_LOG_ALPHA, action_log_prob, entropy_velocity, squash_q_grads, wpo_loss
from sb3_wpo.policies import Actor, CnnPolicy, Critic, MlpPolicy, MultiInputPolicy, WPOPolicy
from sb3_wpo.safety import GuardedOffPolicyAlgorithm
from sb3_wpo.validation import (
    FLOAT_ARGUMENTS,
    INTEGER_ARGUMENTS,
    check_arguments,
    check_env,
    check_policy_and_device,
    normalize_numbers,
)

SelfWPO = TypeVar("SelfWPO", bound="WPO")

DEFAULT_EPSILON_MEAN, DEFAULT_EPSILON_STD = 0.01, 1e-6
# What train() logs of the step metrics; the divergence guard checks them all
LOGGED_METRICS = (
    "actor_loss",
    "critic_loss",
    "kl_mean",
    "kl_std",
    "alpha_mean",
    "alpha_std",
    "pi_std_min",
    "pi_std_max",
    "q_mean",
    "dq_da_norm",
    "ent_coef",
    "entropy",
)


class WPO(GuardedOffPolicyAlgorithm):
    """
    Wasserstein Policy Optimization (Pfau et al., ICML 2025, https://arxiv.org/abs/2505.00663).

    The policy follows the action-gradient of the critic: for ``num_samples`` actions drawn from the policy at
    each replay state, the actor minimizes −Σ ∇a log π(a|s) · ∇a Q(s, a), with a diagonal natural gradient
    (variance rescaling) and decoupled KL penalties on the mean and the std against a target policy.
    The loss is ``sb3_wpo.losses.wpo_loss``, equal to the reference (Acme) loss to float64 precision.

    The defaults are the settings tuned on Gymnasium's MuJoCo tasks (``hyperparams/wpo.yml``'s ``mujoco`` entry but
    its warm-up; SAC's defaults are its MuJoCo settings too): 1 sampled action per state, one
    update per environment step, the policy at every second (``policy_delay=2``), two critics (V(s') from their
    min), the reference's LayerNorm MLP [256, 256] with ELU, at learning rate 1e-3 (the reference's is 3e-4; 1e-3
    learned faster in the tuning screen and SB3's short identity tasks need it: ``benchmarks/notes/tuning.md``,
    stages 13-14). They keep the reference's loss and its ε_mean=0.01, ε_std=1e-6, fixed α_mean≈0.69 and α_std≈1e4,
    expected-SARSA target, hard target copy every 100 updates and initial std 0.5; clip the gradient norm at 40 (the
    value of the reference's config field, which its agent does not apply); and take SAC's ``learning_starts=100``
    (reference 1,000 transitions). The reference's runnable example has 20 samples, 0.25 updates per step, 5-step
    returns and one critic with three hidden layers. With the defaults, ``WPO("MlpPolicy",
    "Pendulum-v1").learn(20_000)`` solves the task (``benchmarks/results/defaults``). Returns are 1-step, as SAC's:
    with one update per step they did better than the reference's 5-step returns in the tuning screen
    (``benchmarks/notes/tuning.md``), and SB3 has no n-step buffer for Dict observations.

    :param policy: the policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy)
    :param env: the environment to learn from (if registered in Gym, can be str)
    :param learning_rate: learning rate of the actor and critic optimizers, constant or a schedule of the
        remaining progress (1 to 0)
    :param buffer_size: size of the replay buffer
    :param learning_starts: how many steps to collect transitions for before learning starts
    :param batch_size: number of replay states per gradient step (B)
    :param tau: target network update coefficient: 1 is a hard copy (the reference), < 1 a Polyak average
    :param gamma: the discount factor
    :param train_freq: update the model every ``train_freq`` steps, or a tuple like ``(5, "step")``
    :param gradient_steps: gradient steps after each rollout (-1: as many as environment steps)
    :param action_noise: extra exploration noise (rarely useful: the policy is stochastic)
    :param replay_buffer_class: replay buffer class (e.g. ``HerReplayBuffer``); None selects one
    :param replay_buffer_kwargs: keyword arguments of the replay buffer
    :param optimize_memory_usage: memory-efficient replay buffer variant
    :param n_steps: n-step returns (the reference uses 5) through SB3's ``NStepReplayBuffer``
    :param num_samples: actions sampled from the policy per replay state (N), for the policy loss and for
        the critic's target value
    :param epsilon_mean: KL bound of the mean part of the policy update; acts only through learned duals
        (``dual_learning_rate > 0``): with a fixed α the penalty is α·KL and ε plays no role
    :param epsilon_std: KL bound of the std part of the policy update (same caveat)
    :param init_log_alpha_mean: initial log-dual of the mean KL (α = softplus(log α) + 1e-8)
    :param init_log_alpha_std: initial log-dual of the std KL; the reference's 10000 makes the std move slowly
    :param dual_learning_rate: Adam learning rate of the duals; 0 keeps α fixed (a soft KL penalty, the
        reference's choice); > 0 adapts α so the measured KL tracks ε (a hard constraint)
    :param per_dim_constraining: constrain the KL of each action dimension separately, or their sum
    :param squashing: transform of ∇a Q in the policy loss: "identity" or "cube_root"
    :param natural_gradient: variance rescaling of the policy gradient (the paper finds it necessary)
    :param target_aggregation: how V(s') aggregates the target critic over ``num_samples`` target-policy
        actions: "mean" (expected SARSA, the reference) or "max" (an option of ours)
    :param target_update_interval: update the target networks every this many gradient steps
    :param policy_delay: update the policy (and the duals, and a learned ``ent_coef``) at one gradient step in this
        many, the critic at every one, as TD3's delayed policy updates: the policy's share of the update's cost falls,
        the critic's rate stays (1: the reference)
    :param ent_coef: weight α of an entropy bonus in the policy update (SAC's name; off by default, the reference has
        none): the Wasserstein gradient flow of E[Q] + α·H(π), whose velocity ∇a Q − α·∇a log π spreads the samples
        against the critic's pull. A number (0: off), or "auto" / "auto_<initial α>" to learn α as SAC does, so that
        the policy's entropy tracks ``target_entropy``. It moves the std only as far as the std's KL penalty lets it
        (``init_log_alpha_std``: the reference's 10000 keeps σ near ``init_std``)
    :param target_entropy: the entropy that a learned ``ent_coef`` aims at; "auto": −dim(A), as SAC's
    :param entropy_in_target: with ``ent_coef``, put the entropy in the critic's target too, as SAC's soft Bellman
        backup: V̄(s') aggregates Q̄(s', a') − α·log π̄(a'|s') over the target policy's actions, so that Q values the
        entropy to come (maximum-entropy RL) and not only the present state's; off by default: the bonus then acts
        in the policy update alone
    :param max_grad_norm: gradient-norm clip of the actor and of the critic (the reference applies none; a large
        value turns it off)
    :param check_finite: detect NaN/inf in the replay batch, Q-values, losses, gradients and parameters at every
        update (read back once per ``train()`` call), roll the model back to the last copy of its state (taken at
        most 64 updates before the failing ``train()`` call; ``sb3_wpo/safety.py``) and raise
        ``sb3_wpo.DivergenceError``; also refuses to save a model with non-finite parameters
    :param stats_window_size: window size for the rollout logging
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: arguments of the policy (``net_arch``, ``layer_norm``, ``init_std``, ``n_critics``,
        ``tanh_actions``, ...: ``sb3_wpo.policies.WPOPolicy``)
    :param verbose: verbosity level: 0 no output, 1 info, 2 debug
    :param seed: seed for the pseudo random generators
    :param device: device (cpu, cuda, ...) on which the code should be run
    :param _init_setup_model: whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: WPOPolicy
    actor: Actor
    actor_target: Actor
    critic: Critic
    critic_target: Critic

    def __init__(
        self,
        policy: str | type[WPOPolicy],
        env: GymEnv | str,
        learning_rate: float | Callable = 1e-3,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 256,
        tau: float = 1.0,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        num_samples: int = 1,
        epsilon_mean: float = DEFAULT_EPSILON_MEAN,
        epsilon_std: float = DEFAULT_EPSILON_STD,
        init_log_alpha_mean: float = 0.0,
        init_log_alpha_std: float = 10_000.0,
        dual_learning_rate: float = 0.0,
        per_dim_constraining: bool = True,
        squashing: Literal["identity", "cube_root"] = "identity",
        natural_gradient: bool = True,
        target_aggregation: Literal["mean", "max"] = "mean",
        target_update_interval: int = 100,
        policy_delay: int = 2,
        ent_coef: float | str = 0.0,
        target_entropy: float | str = "auto",
        entropy_in_target: bool = False,
        max_grad_norm: float = 40.0,
        check_finite: bool = True,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        # SB3's constructor would fail unclearly on these; the environment's spaces are checked when SB3 wraps it.
        check_policy_and_device(policy, device, verbose, self.policy_aliases, WPOPolicy)
        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size,
            learning_starts,
            batch_size,
            tau,
            gamma,
            train_freq,
            gradient_steps,
            action_noise=action_noise,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            sde_support=False,
            supported_action_spaces=(spaces.Box,),
            support_multi_env=True,
        )
        self.num_samples = num_samples
        self.epsilon_mean = epsilon_mean
        self.epsilon_std = epsilon_std
        self.init_log_alpha_mean = init_log_alpha_mean
        self.init_log_alpha_std = init_log_alpha_std
        self.dual_learning_rate = dual_learning_rate
        self.per_dim_constraining = per_dim_constraining
        self.squashing = squashing
        self.natural_gradient = natural_gradient
        self.target_aggregation = target_aggregation
        self.target_update_interval = target_update_interval
        self.policy_delay = policy_delay
        self.ent_coef = ent_coef
        self.target_entropy = target_entropy
        self.entropy_in_target = entropy_in_target
        self.max_grad_norm = max_grad_norm
        self.check_finite = check_finite
        self.dual_optimizer: th.optim.Optimizer | None = None
        self.log_ent_coef: th.Tensor | None = None  # learned ent_coef
        self.ent_coef_tensor: th.Tensor | None = None  # fixed ent_coef > 0
        self.ent_coef_optimizer: th.optim.Optimizer | None = None
        names = (*INTEGER_ARGUMENTS, *FLOAT_ARGUMENTS, "train_freq")
        self.__dict__.update(normalize_numbers({name: getattr(self, name) for name in names}))
        check_arguments(self)
        if dual_learning_rate == 0 and (epsilon_mean, epsilon_std) != (DEFAULT_EPSILON_MEAN, DEFAULT_EPSILON_STD):
            warnings.warn(
                f"epsilon_mean={epsilon_mean} / epsilon_std={epsilon_std} have no effect with dual_learning_rate=0 "
                "(a fixed-α soft KL penalty, the default): set dual_learning_rate > 0 (e.g. 0.1) to constrain the KL "
                "to ε, or init_log_alpha_mean to change the penalty's weight",
                UserWarning,
                stacklevel=2,
            )
        if _init_setup_model:
            self._setup_model()

    @staticmethod
    def _wrap_env(env: GymEnv, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        # SB3 made the environment (from its id) and wraps it here, before any reset or step: refuse spaces WPO
        # cannot learn on now, rather than with an assertion or at the first update.
        check_env(env)
        return OffPolicyAlgorithm._wrap_env(env, verbose, monitor_wrapper)

    def _setup_model(self) -> None:
        super()._setup_model()
        self._create_aliases()
        # Running mean and variance of batch norm layers, copied to the targets with the weights
        self.batch_norm_stats = get_parameters_by_name(self.critic, ["running_"]) + get_parameters_by_name(
            self.actor, ["running_"]
        )
        self.batch_norm_stats_target = get_parameters_by_name(self.critic_target, ["running_"]) + get_parameters_by_name(
            self.actor_target, ["running_"]
        )
        # Log-duals of the KL constraints, one per action dimension or one in all, learned when dual_learning_rate > 0
        n_duals = int(np.prod(self.action_space.shape)) if self.per_dim_constraining else 1  # type: ignore[arg-type]
        self.log_alpha_mean = th.full((n_duals,), float(self.init_log_alpha_mean), device=self.device)
        self.log_alpha_std = th.full((n_duals,), float(self.init_log_alpha_std), device=self.device)
        if self.dual_learning_rate > 0:
            self.log_alpha_mean.requires_grad_(True)
            self.log_alpha_std.requires_grad_(True)
            self.dual_optimizer = th.optim.Adam([self.log_alpha_mean, self.log_alpha_std], lr=self.dual_learning_rate)
        # The entropy bonus's weight: fixed, or learned as SAC's (from "auto_<initial value>", 1 by default)
        if self.target_entropy == "auto":
            self.target_entropy = -float(np.prod(self.action_space.shape))  # type: ignore[arg-type]
        self.target_entropy = float(self.target_entropy)
        if isinstance(self.ent_coef, str):
            initial = float(self.ent_coef.split("_")[1]) if "_" in self.ent_coef else 1.0
            self.log_ent_coef = th.log(th.full((1,), initial, device=self.device)).requires_grad_(True)
            self.ent_coef_optimizer = th.optim.Adam([self.log_ent_coef], lr=self.lr_schedule(1))
        elif self.ent_coef > 0:
            self.ent_coef_tensor = th.tensor(float(self.ent_coef), device=self.device)
        # The update's [N·B, hidden] activations: keep glibc from giving them back to the kernel after every update
        if self.device.type == "cpu":
            keep_freed_memory()

    def _create_aliases(self) -> None:
        self.actor = self.policy.actor
        self.actor_target = self.policy.actor_target
        self.critic = self.policy.critic
        self.critic_target = self.policy.critic_target

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update the learning rate of the actor and the critic (the duals' is constant)
        self._update_learning_rate([self.actor.optimizer, self.critic.optimizer])
        # Copy the training state, to roll back to if an update produces NaN or inf (check_finite)
        self._divergence_guard.start()

        step_metrics = []
        for _ in range(gradient_steps):
            # Sample replay buffer
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            metrics = self._sgd_step(replay_data, update_actor=self._n_updates % self.policy_delay == 0)
            self._divergence_guard.check(replay_data, metrics)
            step_metrics.append(metrics)

            # Update target networks
            self._n_updates += 1
            if self._n_updates % self.target_update_interval == 0:
                self._update_targets()

        if not step_metrics:
            return
        # Mean of each metric over the steps that have it (the actor's: those that updated it, see policy_delay), read
        # back with the guard's flags in one device transfer: on NaN or inf the guard rolls the model back and raises
        # DivergenceError.
        logged = [name for name in LOGGED_METRICS if any(name in m for m in step_metrics)]
        means = self._divergence_guard.finish(
            th.stack([th.stack([m[name] for m in step_metrics if name in m]).mean() for name in logged])
        )
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for name, value in zip(logged, means, strict=True):
            self.logger.record(f"train/{name}", float(value))

    def _sgd_step(
        self, replay_data: ReplayBufferSamples | DictReplayBufferSamples, update_actor: bool = True
    ) -> dict[str, th.Tensor]:
        """One gradient step of the critic, and of the actor and the duals when ``update_actor``, on a replay batch.

        :return: the step's metrics by name (``LOGGED_METRICS``, the actor's only when it was updated, and more for the
            divergence guard to check): 0-dim tensors left on the device, so that a step never waits for the device
        """
        obs, next_obs = replay_data.observations, replay_data.next_observations
        # For n-step replay, the discount is gamma**n_steps (when no early termination)
        discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma

        with th.no_grad():
            # V̄(s'): the target critic (min over critics) at N actions of the target policy, their mean or max
            next_mean, next_std = self.actor_target.distribution_params(next_obs)
            next_samples = self._sample_actions(next_mean, next_std)
            next_q = self.critic_target(next_obs, self.actor_target.to_action(next_samples)).min(dim=-1).values  # [N, B]
            ent_coef = self._entropy_weight()
            if self.entropy_in_target and ent_coef is not None:  # SAC's soft value: the entropy to come joins Q
                next_q = next_q - ent_coef * action_log_prob(next_samples, next_mean, next_std, self.actor.tanh_actions)
            next_v = next_q.mean(dim=0) if self.target_aggregation == "mean" else next_q.max(dim=0).values
            target_q = replay_data.rewards + (1 - replay_data.dones) * discounts * next_v.unsqueeze(-1)  # [B, 1]
        # Critic loss: regress each critic's Q(s, a) on r + γⁿ·V̄(s')
        current_q = self.critic(obs, replay_data.actions)  # [B, n_critics]
        critic_loss = 0.5 * ((current_q - target_q) ** 2).mean(dim=0).sum()

        # Actor loss, from the critic before its step (both losses of one set of parameters, as the reference's)
        if update_actor:
            actor_loss, actor_metrics = self._actor_loss(obs)

        # Optimize the critic
        self.critic.optimizer.zero_grad()
        critic_loss.backward()
        critic_grad_norm = th.nn.utils.clip_grad_norm_(self.critic.parameters(), self.max_grad_norm)
        self.critic.optimizer.step()
        metrics = {
            "critic_loss": critic_loss.detach(),
            "target_q": target_q.mean(),
            "current_q": current_q.detach().mean(),
            "critic_grad_norm": critic_grad_norm,
        }
        if not update_actor:
            return metrics

        # Optimize the actor, and the duals and the entropy's weight when they are learned
        learned_weights = [optimizer for optimizer in (self.dual_optimizer, self.ent_coef_optimizer) if optimizer is not None]
        self.actor.optimizer.zero_grad()
        for optimizer in learned_weights:
            optimizer.zero_grad()
        actor_loss.backward()
        actor_grad_norm = th.nn.utils.clip_grad_norm_(self.actor.parameters(), self.max_grad_norm)
        self.actor.optimizer.step()
        for optimizer in learned_weights:
            optimizer.step()
        if self.dual_optimizer is not None:
            with th.no_grad():
                self.log_alpha_mean.clamp_(min=MIN_LOG_ALPHA)
                self.log_alpha_std.clamp_(min=MIN_LOG_ALPHA)
        return {"actor_loss": actor_loss.detach(), **metrics, **actor_metrics, "actor_grad_norm": actor_grad_norm}

    def _actor_loss(self, obs: PyTorchObs) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        """The Wasserstein policy gradient's loss, from ∇a Q of the online critic (mean over critics) at N actions
        sampled from the policy (through tanh with tanh_actions), plus the entropy's velocity when ``ent_coef`` is set,
        with KL penalties towards the target policy (and the losses of the duals and of a learned ``ent_coef``); and
        its metrics."""
        mean, std = self.actor.distribution_params(obs)
        with th.no_grad():
            target_mean, target_std = self.actor_target.distribution_params(obs)
        samples = self._sample_actions(mean, std)  # [N, B, D], points u of the Gaussian (the actions to_action makes)
        q_values, q_grads = self._q_and_action_gradients(obs, samples)
        # The velocity of each sample: the (squashed) ∇a Q, and the entropy's, which the squashing leaves as it is
        velocity = squash_q_grads(q_grads, self.squashing)
        entropy_metrics, ent_coef_loss = {}, None
        ent_coef = self._entropy_weight()
        if ent_coef is not None:
            tanh_actions = self.actor.tanh_actions
            velocity = velocity + ent_coef * entropy_velocity(samples, mean.detach(), std.detach(), tanh_actions)
            log_prob = action_log_prob(samples, mean.detach(), std.detach(), tanh_actions)  # [N, B]
            if self.log_ent_coef is not None:  # SAC's loss of its entropy coefficient
                ent_coef_loss = -(self.log_ent_coef * (log_prob + float(self.target_entropy)).detach()).mean()
            entropy_metrics = {"ent_coef": ent_coef.squeeze(), "entropy": -log_prob.mean()}
        actor_loss, stats = wpo_loss(
            mean,
            std,
            target_mean,
            target_std,
            samples,
            velocity,
            self.log_alpha_mean,
            self.log_alpha_std,
            epsilon_mean=self.epsilon_mean,
            epsilon_std=self.epsilon_std,
            per_dim_constraining=self.per_dim_constraining,
            squashing="identity",  # applied to ∇a Q above
            natural_gradient=self.natural_gradient,
        )
        if ent_coef_loss is not None:
            actor_loss = actor_loss + ent_coef_loss
        return actor_loss, {
            **{name: stats[name] for name in ("kl_mean", "kl_std", "alpha_mean", "alpha_std", "pi_std_min", "pi_std_max")},
            "q_mean": q_values.mean(),
            "dq_da_norm": q_grads.norm(dim=-1).mean(),
            "pi_mean": mean.detach().mean(),
            **entropy_metrics,
        }

    def _entropy_weight(self) -> th.Tensor | None:
        """α of the entropy bonus, a constant of the update (learned or fixed), or None when there is no bonus."""
        return self.log_ent_coef.detach().exp() if self.log_ent_coef is not None else self.ent_coef_tensor

    def _q_and_action_gradients(self, obs: PyTorchObs, samples: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Q of the online critic (mean over critics) at the actions of Gaussian samples u [N, B, D] (``to_action``),
        [N, B], and its gradient with respect to u, [N, B, D]: ∇a Q where u is inside the bounds and 0 where clipped,
        or ∇a Q · (1 − tanh²u) with ``tanh_actions``; both detached."""
        samples = samples.detach().requires_grad_(True)
        q_values = self.critic(obs, self.actor.to_action(samples)).mean(dim=-1)
        (q_grads,) = th.autograd.grad(q_values.sum(), samples)
        return q_values.detach(), q_grads

    def _sample_actions(self, mean: th.Tensor, std: th.Tensor) -> th.Tensor:
        """``num_samples`` actions per state, [N, B, D], drawn without reparameterization."""
        noise = th.randn((self.num_samples, *mean.shape), device=mean.device, dtype=mean.dtype)
        return (mean + std * noise).detach()

    def _update_targets(self) -> None:
        # A features extractor shared by actor and critic is updated once, with the actor (else its τ would be 2τ−τ²).
        def own_parameters(critic: Critic) -> list[th.nn.Parameter]:
            shared = critic.share_features_extractor
            return [
                param for name, param in critic.named_parameters() if not (shared and name.startswith("features_extractor."))
            ]

        polyak_update(own_parameters(self.critic), own_parameters(self.critic_target), self.tau)
        polyak_update(self.actor.parameters(), self.actor_target.parameters(), self.tau)
        polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)

    def learn(
        self: SelfWPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "WPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfWPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _excluded_save_params(self) -> list[str]:
        # A fixed ent_coef's tensor is made from ent_coef again, so that load(..., ent_coef=x) takes effect
        return [*super()._excluded_save_params(), "actor", "actor_target", "critic", "critic_target", "ent_coef_tensor"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, tensors = ["policy", "actor.optimizer", "critic.optimizer"], ["log_alpha_mean", "log_alpha_std"]
        if self.dual_optimizer is not None:
            state_dicts.append("dual_optimizer")
        if self.ent_coef_optimizer is not None:
            state_dicts.append("ent_coef_optimizer")
            tensors.append("log_ent_coef")
        return state_dicts, tensors
