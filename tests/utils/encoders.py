"""Tiny DeBERTa-v3 encoders in PyTorch, random batches, transformers' forward pass on them, and our encoder's
training-mode outputs and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from flax import nnx

# deberta-v3 layout at toy size: relative attention over log buckets, shared keys, normalised rel embeddings.
TINY_V3 = dict(
    vocab_size=300,
    hidden_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=128,
    relative_attention=True,
    position_buckets=16,
    max_relative_positions=-1,
    pos_att_type=["p2c", "c2p"],
    share_att_key=True,
    norm_rel_ebd="layer_norm",
    position_biased_input=False,
    type_vocab_size=0,
    layer_norm_eps=1e-7,
    hidden_act="gelu",
)


# Lengths straddle position_buckets (16) and reach far past it, with padding in every row but one.
LENGTHS = [100, 57, 9, 16]

CONFIGS = {
    "v3": {},
    "share_att_key_false": {"share_att_key": False},
    "c2p_only": {"pos_att_type": ["c2p"]},
    "c2p_only_unshared": {"pos_att_type": ["c2p"], "share_att_key": False},
    "p2c_only_unshared": {"pos_att_type": ["p2c"], "share_att_key": False},
    "position_biased_input": {"position_biased_input": True},
    "no_rel_norm_string_att_type": {"norm_rel_ebd": "none", "pos_att_type": "c2p|p2c"},
    "no_buckets_max_rel_32": {"position_buckets": -1, "max_relative_positions": 32},
    "eps_1e-5_one_layer": {"layer_norm_eps": 1e-5, "num_hidden_layers": 1},
    "v3_bucket_sizes": {"position_buckets": 32, "max_position_embeddings": 512, "hidden_size": 32},
}


# Blockwise attention on every input, in blocks of 16 queries (most test inputs are longer, few are a multiple).
BLOCKWISE = dict(blockwise_above=0, query_block=16)


def relative_error(ours: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """max |difference| over unpadded positions, relative to the reference's largest magnitude there."""
    valid = mask.astype(bool)
    return float(np.abs(ours[valid] - ref[valid]).max() / np.abs(ref[valid]).max())


def make_torch_encoder(seed: int = 0, **overrides) -> transformers.DebertaV2Model:
    """A random `DebertaV2Model` in eval mode; every tensor (LayerNorm and biases too) is perturbed."""
    torch.manual_seed(seed)
    model = transformers.DebertaV2Model(transformers.DebertaV2Config(**{**TINY_V3, **overrides})).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def random_batch(vocab_size: int, lengths: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded int32 ids (pad id 0) and mask for sequences of the given lengths."""
    rng = np.random.default_rng(seed)
    width = max(lengths)
    ids = np.zeros((len(lengths), width), np.int32)
    mask = np.zeros((len(lengths), width), np.int32)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(1, vocab_size, n)
        mask[row, :n] = 1
    return ids, mask


def torch_forward(model: transformers.DebertaV2Model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
    return out.last_hidden_state.numpy()


def hidden_and_gradients(model: nnx.Module, ids: np.ndarray, mask: np.ndarray, weights: np.ndarray, **attributes):
    """Hidden states and parameter gradients of sum(hidden * weights) in train mode, dropout drawn from key 3."""
    model.set_attributes(**attributes)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def total(params: nnx.State) -> tuple[jax.Array, jax.Array]:
        network = nnx.merge(graphdef, params, jax.tree.map(jnp.asarray, rest))
        nnx.reseed(network, dropout=jax.random.key(3), policy="match_shape")
        hidden = network(jnp.asarray(ids), jnp.asarray(mask))
        return (hidden * weights).sum(), hidden

    (_, hidden), grads = jax.jit(jax.value_and_grad(total, has_aux=True))(params)
    return np.asarray(hidden), [np.asarray(g) for g in jax.tree.leaves(grads)]


def training_model_and_batch() -> tuple[nnx.Module, np.ndarray, np.ndarray, np.ndarray]:
    """A random 2-layer DeBERTa-v3 in train mode (hidden dropout 0.1, attention dropout 0.2), ids and segment ids of
    a full row, a padded row and a row of three packed examples (100 tokens), and output weights zero at padding."""
    from gliner_jax.modeling.encoders.deberta import DebertaConfig, DebertaModel

    overrides = {"num_hidden_layers": 2, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.2}
    config = DebertaConfig.from_hf_dict({**TINY_V3, **overrides})
    model = DebertaModel(config, rngs=nnx.Rngs(0))
    model.train()
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 300, (3, 100))
    mask = np.zeros((3, 100), np.int32)
    mask[0], mask[1, :57], mask[2, :30], mask[2, 30:70], mask[2, 70:90] = 1, 1, 1, 2, 3
    weights = rng.normal(size=(3, 100, 64)).astype(np.float32) * (mask > 0)[..., None]
    return model, ids, mask, weights


def assert_same_outputs(ours: tuple, reference: tuple, mask: np.ndarray) -> None:
    """`hidden_and_gradients` results equal up to float32 rounding (hidden states where `mask` is set)."""
    np.testing.assert_allclose(ours[0][mask > 0], reference[0][mask > 0], rtol=0, atol=1e-5)
    assert len(reference[1]) > 10
    for mine, theirs in zip(ours[1], reference[1], strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5 * np.abs(theirs).max())
