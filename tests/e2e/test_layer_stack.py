"""Encoder layers under each remat policy, in a scan or unrolled: the numbers of the plain scan (forward, gradients,
dropout masks) for DeBERTa, BERT and ModernBERT, with less kept for the backward pass; unknown policies refused."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from gliner_jax.modeling.encoders.deberta import DebertaConfig, DebertaLayerStack
from gliner_jax.modeling.layer_stack import REMAT_POLICIES, run_layers
from gliner_jax.training.config import ModelSection
from tests.utils.encoders import assert_same_outputs, hidden_and_gradients, training_model_and_batch


@pytest.fixture(scope="module")
def plain_scan() -> dict[str, tuple]:
    """Per encoder family: the train-mode test batch's hidden states and gradients, layers in a scan, no remat."""
    references = {}
    for model_type in ("deberta-v2", "bert", "modernbert"):
        model, ids, mask, weights = training_model_and_batch(model_type)
        references[model_type] = hidden_and_gradients(model, ids, mask, weights, remat="none", unroll_layers=False)
    return references


# Each layer loop (scan; unrolled, behind a barrier) and each remat policy once: the policy is an argument of the
# same checkpointed layer in either loop.
@pytest.mark.slow
@pytest.mark.parametrize(("remat", "unroll"), [("dots", False), ("full", True)], ids=["dots-scan", "full-unrolled"])
def test_remat_computes_the_numbers_of_the_plain_scan(plain_scan, remat, unroll):
    """DeBERTa in train mode, dropout on, padded and packed rows; blockwise attention inside the remat too."""
    model, ids, mask, weights = training_model_and_batch()
    ours = hidden_and_gradients(model, ids, mask, weights, remat=remat, unroll_layers=unroll)
    assert_same_outputs(ours, plain_scan["deberta-v2"], mask)
    blockwise = dict(blockwise_above=0, query_block=32)
    ours = hidden_and_gradients(model, ids, mask, weights, remat=remat, unroll_layers=unroll, **blockwise)
    assert_same_outputs(ours, plain_scan["deberta-v2"], mask)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model_type", "remat", "unroll"),
    [("bert", "full", False), ("modernbert", "dots", True)],
    ids=["bert-full-scan", "modernbert-dots-unrolled"],
)
def test_remat_in_other_encoder_families(plain_scan, model_type, remat, unroll):
    """BERT (post-LN) and ModernBERT (pre-LN, global and local layers, rotary) run their layers through the same
    remat: train mode, dropout on, padded and packed rows give the plain scan's hidden states and gradients."""
    model, ids, mask, weights = training_model_and_batch(model_type)
    ours = hidden_and_gradients(model, ids, mask, weights, remat=remat, unroll_layers=unroll)
    assert_same_outputs(ours, plain_scan[model_type], mask)


def lowered_gradient(remat: str, unroll: bool) -> jax.stages.Lowered:
    """The gradient of a 3-layer stack (batch 2 x 128 tokens), lowered."""
    config = DebertaConfig(vocab_size=10, hidden_size=64, num_hidden_layers=3, num_attention_heads=4)
    stack = DebertaLayerStack(config, jnp.float32, nnx.Rngs(0))
    stack.set_attributes(remat=remat, unroll_layers=unroll)
    graphdef, params, rest = nnx.split(stack, nnx.Param, ...)

    def loss(params: nnx.State, hidden: jax.Array, mask: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, params, jax.tree.map(jnp.asarray, rest))(hidden, mask).sum()

    hidden, mask = jax.ShapeDtypeStruct((2, 128, 64), jnp.float32), jax.ShapeDtypeStruct((2, 128), jnp.int32)
    return jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, hidden, mask)


@pytest.mark.slow
def test_remat_keeps_less_for_the_backward_pass():
    """In the scan, none > dots > full in the compiled gradient's scratch memory: the policies take effect."""
    temps = [lowered_gradient(remat, False).compile().memory_analysis().temp_size_in_bytes for remat in REMAT_POLICIES]
    assert temps[0] > temps[1] > temps[2], temps


def test_unrolled_recomputation_is_fenced():
    """Unrolled, the layers' recomputation sits behind an optimization barrier (which keeps XLA from merging it with
    the forward pass; GPU and TPU compilers honour it until scheduling, XLA:CPU drops it early, so the memory saving
    of unrolled remat shows on accelerators only)."""
    for remat in REMAT_POLICIES:
        fenced = "stablehlo.optimization_barrier" in lowered_gradient(remat, True).as_text()
        assert fenced == (remat != "none"), remat


def test_unknown_remat_policy_is_refused():
    with pytest.raises(ValueError, match="remat"):
        ModelSection(encoder={}, tokenizer="tok", remat="everything")
    with pytest.raises(ValueError, match="'some'"):
        run_layers(lambda layer, h: h, None, jnp.zeros(3), unroll=False, remat="some")
    assert set(REMAT_POLICIES) == {"none", "dots", "full"}
