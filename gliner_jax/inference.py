"""Deprecated module: `GLiNER` moved to `gliner_jax.model` (import it as `gliner_jax.GLiNER`), the window helpers to
`gliner_jax.windows`."""

from gliner_jax._deprecation import moved_names

__getattr__ = moved_names(
    __name__,
    {
        "GLiNER": "gliner_jax.model",
        "model_inputs": "gliner_jax.model",
        "window_starts": "gliner_jax.windows",
        "word_windows": "gliner_jax.windows",
        "token_windows": "gliner_jax.windows",
    },
)
