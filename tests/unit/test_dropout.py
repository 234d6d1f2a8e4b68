"""The 16-bit dropout: the hash is JAX's Threefry-2x32 bit for bit, and the masks have the right statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.extend.random import threefry_2x32

from gliner_jax.modeling.dropout import MASK_BITS, Dropout, keep_mask, threefry2x32


def test_threefry_matches_jax():
    """Our unrolled hash == `jax.extend.random.threefry_2x32` (which hashes the two halves of its counts)."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        key = rng.integers(0, 2**32, 2, dtype=np.uint32)
        counts = rng.integers(0, 2**32, (2, 999), dtype=np.uint32)
        reference = np.asarray(threefry_2x32(jnp.asarray(key), jnp.asarray(counts.reshape(-1))))
        ours = jax.jit(threefry2x32)(tuple(jnp.asarray(key)), *map(jnp.asarray, counts))
        np.testing.assert_array_equal(np.concatenate(ours), reference)


@pytest.mark.parametrize("rate", [0.1, 0.4, 0.9])
def test_mask_rate_and_independence(rate):
    """Each of the 4 lanes of a hash drops elements at threshold / 2^16, and neighbours are uncorrelated."""
    threshold = round(rate * 2**MASK_BITS)
    keep = np.asarray(keep_mask(jax.random.key(3), (16, 64, 1024), threshold)).astype(np.float64)
    p = 1 - threshold / 2**MASK_BITS
    tolerance = 5 * np.sqrt(p * (1 - p) / (keep.size / 4))  # 5 sigma on each lane's mean
    lanes = keep.reshape(-1, 4)
    np.testing.assert_allclose(lanes.mean(0), p, atol=tolerance)
    for a, b in [(0, 1), (1, 2), (2, 3)]:
        assert abs(np.corrcoef(lanes[:, a], lanes[:, b])[0, 1]) < 0.01
    rows = keep.reshape(-1, 1024)
    assert abs(np.corrcoef(rows[:-1].ravel(), rows[1:].ravel())[0, 1]) < 0.01  # adjacent rows differ


def test_masks_depend_on_key_and_position():
    """Same key, same mask; another key or another shape position, another mask."""
    shape, threshold = (8, 256), 2**15
    first = np.asarray(keep_mask(jax.random.key(0), shape, threshold))
    np.testing.assert_array_equal(first, np.asarray(keep_mask(jax.random.key(0), shape, threshold)))
    assert (first != np.asarray(keep_mask(jax.random.key(1), shape, threshold))).mean() > 0.4
    assert (first[0] != first[1]).mean() > 0.4
    assert (first[:, :128] != first[:, 128:]).mean() > 0.4


def layer(rate: float) -> Dropout:
    dropout = Dropout(rate, rngs=nnx.Rngs(dropout=0))
    dropout.train()
    return dropout


def test_dropout_scales_kept_values_and_draws_fresh_masks():
    x = jnp.asarray(np.random.default_rng(0).uniform(1, 2, (4, 32, 512)), jnp.float32)
    dropout = layer(0.4)
    first, second = np.asarray(dropout(x)), np.asarray(dropout(x))
    keep_prob = 1 - round(0.4 * 2**MASK_BITS) / 2**MASK_BITS
    kept = first != 0
    np.testing.assert_allclose(first[kept], (np.asarray(x) / keep_prob)[kept], rtol=1e-6)
    assert abs(kept.mean() - keep_prob) < 0.01
    assert ((second != 0) != kept).mean() > 0.3  # the stream advances: a new mask on each call


def test_gradient_flows_through_kept_elements_only():
    x = jnp.ones((2, 64))
    y = layer(0.5)(x)  # a fresh layer (same seed) inside grad draws the same mask
    grad = jax.grad(lambda x: layer(0.5)(x).sum())(x)
    np.testing.assert_array_equal(np.asarray(grad), np.where(np.asarray(y) != 0, 2.0, 0.0))


@pytest.mark.parametrize(
    ("rate", "shape"),
    [(0.3, (4, 7)), (0.3, (3, 10)), (1e-6, (4, 8)), (1.0, (4, 8))],
    ids=["odd-axis", "axis-not-multiple-of-4", "rate-rounds-to-0", "rate-1"],
)
def test_fallback_to_nnx_dropout(rate, shape):
    """Shapes or rates the 16-bit mask cannot serve give exactly `nnx.Dropout`'s output."""
    x = jnp.ones(shape)
    reference = nnx.Dropout(rate, rngs=nnx.Rngs(dropout=0))
    np.testing.assert_array_equal(np.asarray(layer(rate)(x)), np.asarray(reference(x)))


def test_eval_mode_is_identity():
    dropout = layer(0.4)
    dropout.eval()
    x = jnp.arange(64.0).reshape(4, 16)
    np.testing.assert_array_equal(np.asarray(dropout(x)), np.asarray(x))


def test_call_keywords_of_nnx_dropout():
    """`deterministic=` overrides the train / eval switch both ways; `rngs=` draws `nnx.Dropout`'s mask."""
    x = jnp.arange(1.0, 65.0).reshape(4, 16)
    np.testing.assert_array_equal(np.asarray(layer(0.4)(x, deterministic=True)), np.asarray(x))
    evaluating = layer(0.4)
    evaluating.eval()
    np.testing.assert_array_equal(np.asarray(evaluating(x, deterministic=False)), np.asarray(layer(0.4)(x)))
    reference = nnx.Dropout(0.4, rngs=nnx.Rngs(dropout=0))(x, rngs=jax.random.key(5))
    np.testing.assert_array_equal(np.asarray(layer(0.4)(x, rngs=jax.random.key(5))), np.asarray(reference))


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_windows_drop_what_the_whole_array_drops(rate):
    """Blocks of rows through `Dropout.window`, with the draw a fresh layer makes, equal the rows of the whole array
    through `Dropout.__call__` (the same mask element by element); eval mode is the identity."""
    x = jnp.asarray(np.random.default_rng(0).uniform(1, 2, (2, 3, 40, 64)), jnp.float32)
    whole = np.asarray(layer(rate)(x))
    key, drop = layer(rate).window(x.shape)
    for start in (0, 8, 24):
        block = jax.jit(drop)(key, x[:, :, start : start + 16], (0, 0, jnp.int32(start), 0))
        np.testing.assert_array_equal(np.asarray(block), whole[:, :, start : start + 16])
    evaluating = layer(rate)
    evaluating.eval()
    key, drop = evaluating.window(x.shape)
    assert key is None
    np.testing.assert_array_equal(np.asarray(drop(key, x, (0, 0, 0, 0))), np.asarray(x))
