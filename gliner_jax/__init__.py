"""gliner-jax: GLiNER in JAX / Flax NNX."""

__version__ = "0.1.0"
