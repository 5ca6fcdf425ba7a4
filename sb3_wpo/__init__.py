"""Wasserstein Policy Optimization (Pfau et al., ICML 2025) for Stable-Baselines3."""

from sb3_wpo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_wpo.version import __version__
from sb3_wpo.wpo import WPO

__all__ = ["WPO", "CnnPolicy", "MlpPolicy", "MultiInputPolicy", "__version__"]
