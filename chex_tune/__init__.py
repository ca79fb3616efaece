"""chex_tune: CHEX channel prune-and-regrow for timm CNNs, and its multi-objective tuning.

    from chex_tune import ChannelExplorer, save_compact, load_compact
"""

from chex_tune import _torchvision_fix  # noqa: F401  (first: makes `import timm` work everywhere)
from chex_tune.config import ChexConfig
from chex_tune.core import builders as _builders  # noqa: F401  (registers the "package.module:function" builder)
from chex_tune.core.compact import load_compact, save_compact
from chex_tune.core.explorer import ChannelExplorer
from chex_tune.train import models as _models  # noqa: F401  (registers the small-stem builder for load_compact)

__version__ = "0.1.0"
__all__ = ["ChannelExplorer", "ChexConfig", "__version__", "load_compact", "save_compact"]
