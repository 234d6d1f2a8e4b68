"""How many programs gliner-jax's inference has compiled (one per distinct input shape)."""

from __future__ import annotations

from gliner_jax import model


def compiled_programs() -> int:
    """The programs of every jitted inference entry point, counted by the size of its compilation cache (a private
    JAX counter, fine for tests): the forward pass, uni- and bi-encoder alike, and a bi-encoder's label encoder."""
    return model._forward._cache_size() + model._encode_labels._cache_size()
