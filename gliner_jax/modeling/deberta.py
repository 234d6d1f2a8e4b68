"""Deprecated module: the DeBERTa encoder moved to `gliner_jax.modeling.encoders.deberta`, the shared layer helpers
to `gliner_jax.modeling.layers`."""

from gliner_jax._deprecation import moved_names

_ENCODER = "gliner_jax.modeling.encoders.deberta"
_LAYERS = "gliner_jax.modeling.layers"

__getattr__ = moved_names(
    __name__,
    {
        **dict.fromkeys(
            ["DebertaModel", "DebertaConfig", "bucket_distances", "relative_positions", "relative_scores"], _ENCODER
        ),
        **dict.fromkeys(["logical_axes", "rows_matmul", "rows_dot_general", "linear"], _LAYERS),
    },
)
