"""Wasserstein Policy Optimization (Pfau et al., ICML 2025) for Stable-Baselines3."""

from sb3_wpo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_wpo.safety import DivergenceError, LoadError, find_latest_checkpoint
from sb3_wpo.version import __version__
from sb3_wpo.wpo import WPO

__all__ = [
    "WPO",
    "CnnPolicy",
    "DivergenceError",
    "LoadError",
    "MlpPolicy",
    "MultiInputPolicy",
    "__version__",
    "find_latest_checkpoint",
]
