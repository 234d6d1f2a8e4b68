"""How many programs gliner-jax's inference forward pass has compiled (one per distinct input shape)."""

from __future__ import annotations

from gliner_jax import model


def compiled_programs() -> int:
    """The size of the jitted forward pass's compilation cache (a private JAX counter, fine for tests)."""
    return model._forward._cache_size()
