"""Deprecated module: the offline reference-model builders moved to `gliner_jax.testing.builders`."""

from gliner_jax._deprecation import moved_names

__getattr__ = moved_names(
    __name__,
    dict.fromkeys(
        ["CORPUS", "train_tokenizer", "build_backbone", "build_reference", "quantile_thresholds"],
        "gliner_jax.testing.builders",
    ),
)
