"""Networks for WPO: a diagonal Gaussian actor (its samples clipped to the action bounds, or squashed by tanh), Q-critics,
and the policy that holds them and their targets."""

import itertools
import math
from contextlib import nullcontext
from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BaseModel, BasePolicy
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    NatureCNN,
    create_mlp,
    get_actor_critic_arch,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn
from torch.nn import functional as F

from sb3_wpo.safety import check_finite_observation
from sb3_wpo.validation import Rule, boolean, check_all, check_net_arch, instance_of, integer, optional, real, subclass_of

SOFTPLUS_ZERO = math.log(2.0)  # softplus(0)
MAX_STD = 1e18  # σ² must be a finite float32 (< 3.4e38)

# Types and ranges of the policy arguments (``policy_kwargs``), checked when the networks are built.
POLICY_RULES: dict[str, Rule] = {
    "net_arch": check_net_arch,
    "activation_fn": subclass_of(nn.Module, "a torch.nn.Module subclass (e.g. nn.ReLU)"),
    "layer_norm": boolean(),
    "tanh_actions": boolean(),
    # σ² enters the loss: it must be a finite float32
    "init_std": real(0.0, MAX_STD, low_open=True),
    "min_std": real(0.0, MAX_STD),
    "max_std": optional(real(0.0, MAX_STD, low_open=True)),
    "features_extractor_class": subclass_of(BaseFeaturesExtractor),
    "features_extractor_kwargs": optional(instance_of(dict, "a dict or None")),
    "normalize_images": boolean(),
    "optimizer_class": subclass_of(th.optim.Optimizer, "a torch.optim.Optimizer subclass (e.g. th.optim.Adam)"),
    "optimizer_kwargs": optional(instance_of(dict, "a dict or None")),
    "n_critics": integer(1),
    "share_features_extractor": boolean(),
}


def check_std_bounds(init_std: float, min_std: float, max_std: float | None) -> None:
    """With a ``max_std``, the initial std must lie strictly inside (min_std, max_std)."""
    if max_std is not None and not min_std < init_std < max_std:
        raise ValueError(
            f"policy_kwargs: max_std must be above init_std, and init_std above min_std; got min_std={min_std}, "
            f"init_std={init_std}, max_std={max_std}"
        )


def make_mlp(input_dim: int, net_arch: list[int], activation_fn: type[nn.Module], layer_norm: bool) -> nn.Sequential:
    """Hidden layers of an MLP (no output layer).

    ``layer_norm=True`` builds the reference's "LayerNorm MLP": the first Linear is followed by LayerNorm and
    tanh, which keeps the input scale in check; the other layers are Linear + ``activation_fn``."""
    if not layer_norm or not net_arch:
        return nn.Sequential(*create_mlp(input_dim, -1, net_arch, activation_fn))
    layers: list[nn.Module] = [nn.Linear(input_dim, net_arch[0]), nn.LayerNorm(net_arch[0]), nn.Tanh()]
    for in_size, out_size in itertools.pairwise(net_arch):
        layers += [nn.Linear(in_size, out_size), activation_fn()]
    return nn.Sequential(*layers)


class Actor(BasePolicy):
    """Diagonal Gaussian N(μ, σ) over u, with actions in SB3's normalized action space [-1, 1]^D made by ``to_action``.

    std = softplus(head) · init_std / softplus(0) + min_std, with a near-zero head initialization so that the
    initial std is ``init_std`` in every state (as in the reference). With ``max_std``, a smooth bound instead:
    std = min_std + (max_std − min_std) · sigmoid(head + b), b such that the initial std is ``init_std``. The losses
    use the Gaussian over u.

    :param init_std: initial standard deviation of the policy, in normalized action units.
    :param min_std: floor added to the standard deviation.
    :param max_std: upper bound of the standard deviation (None: unbounded, as in the reference); SAC bounds its
        log-std for the same reason, a std that an entropy bonus can otherwise grow until tanh saturates.
    :param layer_norm: use the reference's LayerNorm MLP.
    :param tanh_actions: actions are tanh(u), as SAC's; False (the reference) clips u to the bounds, where the
        critic's action-gradient reaching u is 0, so a mean beyond a bound gets no gradient back from it.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ELU,
        layer_norm: bool = True,
        init_std: float = 0.5,
        min_std: float = 1e-6,
        tanh_actions: bool = False,
        normalize_images: bool = True,
        max_std: float | None = None,
    ):
        stds = dict(init_std=init_std, min_std=min_std, max_std=max_std)
        check_all(POLICY_RULES, dict(net_arch=net_arch, layer_norm=layer_norm, tanh_actions=tanh_actions, **stds))
        check_std_bounds(init_std, min_std, max_std)
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
            squash_output=True,
        )
        self.net_arch = net_arch
        self.features_dim = features_dim
        self.activation_fn = activation_fn
        self.layer_norm = layer_norm
        self.init_std = init_std
        self.min_std = min_std
        self.max_std = max_std
        if max_std is not None:  # sigmoid(b) puts init_std at the same place between min_std and max_std
            fraction = (init_std - min_std) / (max_std - min_std)
            self.std_offset = math.log(fraction / (1.0 - fraction))
        self.tanh_actions = tanh_actions
        action_dim = get_action_dim(self.action_space)
        self.latent_pi = make_mlp(features_dim, net_arch, activation_fn, layer_norm)
        last_layer_dim = net_arch[-1] if len(net_arch) > 0 else features_dim
        self.mu = nn.Linear(last_layer_dim, action_dim)
        self.std = nn.Linear(last_layer_dim, action_dim)
        # Small heads: the initial policy is N(≈0, init_std) everywhere, whatever the observation scale.
        for head in (self.mu, self.std):
            nn.init.normal_(head.weight, std=1e-2 / math.sqrt(last_layer_dim))
            nn.init.zeros_(head.bias)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                features_dim=self.features_dim,
                activation_fn=self.activation_fn,
                layer_norm=self.layer_norm,
                init_std=self.init_std,
                min_std=self.min_std,
                max_std=self.max_std,
                tanh_actions=self.tanh_actions,
                features_extractor=self.features_extractor,
            )
        )
        return data

    def distribution_params(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """Mean and standard deviation of the policy, each [B, D]."""
        features = self.extract_features(obs, self.features_extractor)
        latent_pi = self.latent_pi(features)
        head = self.std(latent_pi)
        if self.max_std is None:
            std = F.softplus(head) * (self.init_std / SOFTPLUS_ZERO) + self.min_std
        else:
            std = self.min_std + (self.max_std - self.min_std) * th.sigmoid(head + self.std_offset)
        return self.mu(latent_pi), std

    def to_action(self, u: th.Tensor) -> th.Tensor:
        """Actions in [-1, 1] from points u of the Gaussian (any shape): tanh(u), or u clipped to the bounds."""
        return th.tanh(u) if self.tanh_actions else u.clamp(-1.0, 1.0)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        mean, std = self.distribution_params(obs)
        return self.to_action(mean if deterministic else mean + std * th.randn_like(mean))

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self(observation, deterministic)


class Critic(BaseModel):
    """``n_critics`` Q-networks that evaluate one or many actions per state.

    ``forward(obs [B, ...], actions [B, D] or [N, B, D])`` returns Q of shape [B, n_critics] or
    [N, B, n_critics]. For N actions per state, the features are extracted once per state, and with at
    least ``split_first_layer_from`` features so is the first layer's feature half (W_s·s + b): only W_a·a
    is per sample. Below that, the extra op costs more than it saves (``benchmarks/speed.py``: +4% per
    update with Pendulum's 3 features, −25% with Humanoid's 348).
    """

    features_extractor: BaseFeaturesExtractor
    split_first_layer_from: ClassVar[int] = 64

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ELU,
        layer_norm: bool = True,
        normalize_images: bool = True,
        n_critics: int = 2,
        share_features_extractor: bool = False,
    ):
        check_all(POLICY_RULES, dict(net_arch=net_arch, n_critics=n_critics, layer_norm=layer_norm))
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        action_dim = get_action_dim(self.action_space)
        self.share_features_extractor = share_features_extractor
        self.n_critics = n_critics
        self.q_networks = nn.ModuleList()
        last_layer_dim = net_arch[-1] if len(net_arch) > 0 else features_dim + action_dim
        for _ in range(n_critics):
            hidden = make_mlp(features_dim + action_dim, net_arch, activation_fn, layer_norm)
            self.q_networks.append(nn.Sequential(*hidden, nn.Linear(last_layer_dim, 1)))

    def forward(self, obs: PyTorchObs, actions: th.Tensor) -> th.Tensor:
        # With a shared features extractor, only the actor's loss trains it.
        with th.no_grad() if self.share_features_extractor else nullcontext():
            features = self.extract_features(obs, self.features_extractor)
        if actions.dim() == 3:
            if features.shape[-1] >= self.split_first_layer_from:
                return th.cat([self._q_of_samples(q_net, features, actions) for q_net in self.q_networks], dim=-1)
            features = features.expand(actions.shape[0], *features.shape)
        qvalue_input = th.cat([features, actions], dim=-1)
        return th.cat([q_net(qvalue_input) for q_net in self.q_networks], dim=-1)

    @staticmethod
    def _q_of_samples(q_net: nn.Module, features: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """Q of [N, B, D] actions: the same function as ``q_net(cat([features, actions]))``, split at the first layer."""
        assert isinstance(q_net, nn.Sequential)
        first_layer = q_net[0]
        assert isinstance(first_layer, nn.Linear)
        features_dim = features.shape[-1]
        state_part = F.linear(features, first_layer.weight[:, :features_dim], first_layer.bias)  # [B, H]
        action_part = F.linear(actions, first_layer.weight[:, features_dim:])  # [N, B, H]
        return q_net[1:](action_part + state_part)


class WPOPolicy(BasePolicy):
    """Actor, critics, and their target networks for WPO.

    :param net_arch: hidden layers, a list for both networks or ``dict(pi=[...], qf=[...])``.
        Default: [256, 256] for both.
    :param activation_fn: activation of the hidden layers (ELU, the reference's; SAC's networks use ReLU).
    :param layer_norm: use the reference's LayerNorm MLP (LayerNorm + tanh after the first layer); False builds
        SB3's plain MLP.
    :param init_std: initial policy standard deviation (normalized action units).
    :param min_std: floor of the policy standard deviation.
    :param max_std: smooth upper bound of the policy standard deviation (None: unbounded, the reference).
    :param tanh_actions: actions are tanh(u) for u ~ N(μ, σ), as SAC's, and the WPO update of the Gaussian takes
        ∇u Q = ∇a Q · (1 − tanh²u); False (the reference) clips u to the action bounds.
    :param n_critics: number of Q-networks (2, as SAC's; the reference has 1); the critic's target takes their minimum,
        the policy follows their mean.
    :param share_features_extractor: share the features extractor of actor and critic (trained by the actor).
    Other parameters as in SB3's ``SACPolicy``.
    """

    actor: Actor
    actor_target: Actor
    critic: Critic
    critic_target: Critic

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ELU,
        layer_norm: bool = True,
        init_std: float = 0.5,
        min_std: float = 1e-6,
        tanh_actions: bool = False,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = False,
        max_std: float | None = None,
    ):
        arguments = dict(
            net_arch=net_arch,
            activation_fn=activation_fn,
            layer_norm=layer_norm,
            init_std=init_std,
            min_std=min_std,
            max_std=max_std,
            tanh_actions=tanh_actions,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            n_critics=n_critics,
            share_features_extractor=share_features_extractor,
        )
        check_all(POLICY_RULES, arguments)
        check_std_bounds(init_std, min_std, max_std)
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            squash_output=True,
            normalize_images=normalize_images,
        )
        if net_arch is None:
            net_arch = [256, 256]
        actor_arch, critic_arch = get_actor_critic_arch(net_arch)
        self.net_arch = net_arch
        self.activation_fn = activation_fn
        self.layer_norm = layer_norm
        self.init_std = init_std
        self.min_std = min_std
        self.max_std = max_std
        self.tanh_actions = tanh_actions
        self.n_critics = n_critics
        self.share_features_extractor = share_features_extractor
        common_kwargs = {
            "observation_space": self.observation_space,
            "action_space": self.action_space,
            "activation_fn": activation_fn,
            "layer_norm": layer_norm,
            "normalize_images": normalize_images,
        }
        self.actor_kwargs = {
            **common_kwargs,
            "net_arch": actor_arch,
            "init_std": init_std,
            "min_std": min_std,
            "max_std": max_std,
            "tanh_actions": tanh_actions,
        }
        self.critic_kwargs = {
            **common_kwargs,
            "net_arch": critic_arch,
            "n_critics": n_critics,
            "share_features_extractor": share_features_extractor,
        }
        self._build(lr_schedule)

    def _build(self, lr_schedule: Schedule) -> None:
        self.actor = self.make_actor()
        self.actor_target = self.make_actor()
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.actor.optimizer = self.optimizer_class(
            self.actor.parameters(),
            lr=lr_schedule(1),
            **self.optimizer_kwargs,  # type: ignore[call-arg]
        )
        if self.share_features_extractor:
            self.critic = self.make_critic(features_extractor=self.actor.features_extractor)
            self.critic_target = self.make_critic(features_extractor=self.actor_target.features_extractor)
            critic_parameters = [param for name, param in self.critic.named_parameters() if "features_extractor" not in name]
        else:
            self.critic = self.make_critic()
            self.critic_target = self.make_critic()
            critic_parameters = list(self.critic.parameters())
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic.optimizer = self.optimizer_class(
            critic_parameters,
            lr=lr_schedule(1),
            **self.optimizer_kwargs,  # type: ignore[call-arg]
        )
        # Target networks are never trained and always in eval mode.
        for target in (self.actor_target, self.critic_target):
            target.set_training_mode(False)
            target.requires_grad_(False)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                activation_fn=self.activation_fn,
                layer_norm=self.layer_norm,
                init_std=self.init_std,
                min_std=self.min_std,
                max_std=self.max_std,
                tanh_actions=self.tanh_actions,
                n_critics=self.n_critics,
                lr_schedule=self._dummy_schedule,
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
                share_features_extractor=self.share_features_extractor,
            )
        )
        return data

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> Actor:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return Actor(**actor_kwargs).to(self.device)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> Critic:
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return Critic(**critic_kwargs).to(self.device)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self.actor(observation, deterministic)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        check_finite_observation(observation)
        return super().predict(observation, state, episode_start, deterministic)

    def set_training_mode(self, mode: bool) -> None:
        self.actor.set_training_mode(mode)
        self.critic.set_training_mode(mode)
        self.training = mode


MlpPolicy = WPOPolicy


class CnnPolicy(WPOPolicy):
    """WPO policy for image observations (NatureCNN features extractor)."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Box, lr_schedule: Schedule, **kwargs: Any):
        kwargs.setdefault("features_extractor_class", NatureCNN)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


class MultiInputPolicy(WPOPolicy):
    """WPO policy for Dict observations (CombinedExtractor)."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Box, lr_schedule: Schedule, **kwargs: Any):
        kwargs.setdefault("features_extractor_class", CombinedExtractor)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)
