"""Blockwise disentangled attention (queries in blocks): the whole-sequence path's numbers (forward, gradients and
dropout masks), and no [T, T] table in the compiled program. Against transformers (also packed rows read blockwise):
`tests/parity/test_encoder_families_vs_transformers.py`; the length above which it is chosen:
`tests/unit/test_encoder_structure.py`."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gliner_jax.modeling.encoders.deberta import DebertaConfig, DebertaLayerStack
from tests.utils.encoders import assert_same_outputs, hidden_and_gradients, training_model_and_batch


@pytest.mark.slow
def test_blockwise_training_equals_the_whole_sequence():
    """Train mode with hidden and attention dropout: the same hidden states and gradients (same dropout masks), with
    packed and padded rows."""
    model, ids, mask, weights = training_model_and_batch()
    whole = hidden_and_gradients(model, ids, mask, weights, blockwise_above=None)
    blocks = hidden_and_gradients(model, ids, mask, weights, blockwise_above=0, query_block=32)
    assert_same_outputs(blocks, whole, mask)


def largest_buffer(length: int, **attributes) -> int:
    """Elements of the largest array in the compiled gradient of one tiny layer (4 heads) at batch 1."""
    config = DebertaConfig(
        vocab_size=10, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64
    )
    stack = DebertaLayerStack(config, jnp.float32, nnx.Rngs(0))
    stack.set_attributes(**attributes)
    graphdef, params, rest = nnx.split(stack, nnx.Param, ...)

    def loss(params: nnx.State, hidden: jax.Array, mask: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, params, jax.tree.map(jnp.asarray, rest))(hidden, mask).sum()

    hidden = jax.ShapeDtypeStruct((1, length, 32), jnp.float32)
    mask = jax.ShapeDtypeStruct((1, length), jnp.int32)
    text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, hidden, mask).compile().as_text()
    return max(int(np.prod([int(d) for d in dims.split(",")])) for dims in re.findall(r"\[(\d+(?:,\d+)+)\]", text))


@pytest.mark.slow
def test_no_table_of_the_whole_sequence_exists_forward_or_backward():
    """The gradient's program (forward and backward, train mode) holds no array of heads x T x T elements or more
    when the queries go in blocks of 64 (the whole-sequence path holds several)."""
    length, heads = 512, 4
    assert largest_buffer(length, blockwise_above=None) >= heads * length * length
    assert largest_buffer(length, blockwise_above=0, query_block=64) < heads * length * length // 2
