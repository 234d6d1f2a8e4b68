"""gliner-jax: GLiNER in JAX / Flax NNX."""

from gliner_jax.config import GLiNERConfig
from gliner_jax.model import GLiNER

__version__ = "0.1.0"

__all__ = ["GLiNER", "GLiNERConfig", "__version__"]
