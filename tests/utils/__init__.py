"""Helpers used by the tests only (the package's own test support, shared with the benchmarks, is
`gliner_jax.testing`)."""
