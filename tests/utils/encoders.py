"""Tiny random encoders in PyTorch (DeBERTa-v3, BERT, RoBERTa, XLM-R, ModernBERT), random batches, transformers'
forward pass on them, and our encoders' training-mode outputs and gradients.

torch is imported inside the functions that need it: the sizes, batches and our encoders' helpers serve the unit
tests, which run without torch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

if TYPE_CHECKING:
    import torch
    import transformers

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

# Odd widths and head sizes, more than one layer; ModernBERT alternates global / local layers with a window far
# shorter than the test rows. Every model type's own position numbering and padding id.
TINY_HF = {
    "deberta-v2": TINY_V3,
    "bert": dict(
        vocab_size=301,
        hidden_size=36,
        num_hidden_layers=3,
        num_attention_heads=3,
        intermediate_size=53,
        max_position_embeddings=128,
        type_vocab_size=2,
    ),
    "roberta": dict(
        vocab_size=299,
        hidden_size=40,
        num_hidden_layers=2,
        num_attention_heads=5,
        intermediate_size=71,
        max_position_embeddings=130,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
    ),
    "xlm-roberta": dict(
        vocab_size=311,
        hidden_size=24,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=258,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
    ),
    "modernbert": dict(
        vocab_size=307,
        hidden_size=48,
        num_hidden_layers=5,
        num_attention_heads=4,
        intermediate_size=56,
        local_attention=16,
        global_attn_every_n_layers=2,
        global_rope_theta=1000.0,
        local_rope_theta=500.0,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        cls_token_id=1,
        sep_token_id=2,
    ),
}

# A label encoder for bi-encoder tests, BERT as knowledgator's (BGE, MiniLM): 48 wide, so that a GLiNER's hidden_size
# picks which of the text and label projections exist (text encoders: DeBERTa 64, ModernBERT 48 wide).
TINY_LABELS_ENCODER = {**TINY_HF["bert"], "model_type": "bert", "hidden_size": 48, "num_hidden_layers": 2}


# Lengths straddle position_buckets (16) and reach far past it, with padding in every row but one.
LENGTHS = [100, 57, 9, 16]

# DeBERTa variants, one per code path: shared keys with both attention terms (v3), each term alone with its own key
# and query projections, absolute positions added, no rel-embedding norm, distances without buckets.
DEBERTA_CONFIGS = {
    "v3": {},
    "c2p_only_unshared": {"pos_att_type": ["c2p"], "share_att_key": False},
    "p2c_only_unshared": {"pos_att_type": ["p2c"], "share_att_key": False},
    "position_biased_input": {"position_biased_input": True},
    "no_rel_norm_string_att_type": {"norm_rel_ebd": "none", "pos_att_type": "c2p|p2c"},
    "no_buckets_max_rel_32": {"position_buckets": -1, "max_relative_positions": 32},
}


# Blockwise attention on every input, in blocks of 16 queries (most test inputs are longer, few are a multiple).
BLOCKWISE = dict(blockwise_above=0, query_block=16)


def make_hf_encoder(model_type: str = "deberta-v2", seed: int = 0, **overrides) -> transformers.PreTrainedModel:
    """A random transformers base model of `model_type` (TINY_HF sizes) in eval mode; every tensor (LayerNorm and
    biases too) is perturbed."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.AutoConfig.for_model(model_type, **{**TINY_HF[model_type], **overrides})
    model = transformers.AutoModel.from_config(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def random_batch(vocab_size: int, lengths: list[int], seed: int = 0, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded int32 ids and mask for sequences of the given lengths; real ids are above `pad_id`."""
    rng = np.random.default_rng(seed)
    width = max(lengths)
    ids = np.full((len(lengths), width), pad_id, np.int32)
    mask = np.zeros((len(lengths), width), np.int32)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(pad_id + 1, vocab_size, n)
        mask[row, :n] = 1
    return ids, mask


def torch_forward(model: transformers.PreTrainedModel, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
    return out.last_hidden_state.numpy()


def relative_error(ours: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """max |difference| over unpadded positions, relative to the reference's largest magnitude there."""
    valid = mask.astype(bool)
    return float(np.abs(ours[valid] - ref[valid]).max() / np.abs(ref[valid]).max())


def assert_packed_row_equals_rows_alone(
    encoder: Any, torch_model: transformers.PreTrainedModel, vocab_size: int, pad_id: int, lengths=(30, 9, 17)
) -> None:
    """Random examples of `lengths` packed into one row (segment ids 1, 2, ..., then padding): each segment's states
    from `encoder` are transformers' states of that example run alone."""
    ids, _ = random_batch(vocab_size, list(lengths), seed=5, pad_id=pad_id)
    packed = np.full((1, sum(lengths) + 7), pad_id, np.int32)
    segments = np.zeros_like(packed)
    start = 0
    for segment, (row, length) in enumerate(zip(ids, lengths, strict=True), 1):
        packed[0, start : start + length] = row[:length]
        segments[0, start : start + length] = segment
        start += length
    ours = np.asarray(encoder(jnp.asarray(packed), jnp.asarray(segments)))[0]
    start = 0
    for row, length in zip(ids, lengths, strict=True):
        alone = torch_forward(torch_model, row[None, :length], np.ones((1, length), np.int32))[0]
        np.testing.assert_allclose(ours[start : start + length], alone, rtol=0, atol=1e-5 * np.abs(alone).max())
        start += length


def assert_same_state_dict(ours: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> None:
    """The same keys and, under each, the same tensor bit for bit."""
    import torch

    assert ours.keys() == reference.keys()
    for key, tensor in reference.items():
        assert torch.equal(ours[key], tensor), key


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


# Dropout rates for training-mode tests: every family's hidden and attention dropout on.
TRAINING_DROPOUT = {
    "deberta-v2": {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.2},
    "bert": {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.2},
    "modernbert": {"embedding_dropout": 0.1, "attention_dropout": 0.2, "mlp_dropout": 0.1},
}


def training_model_and_batch(model_type: str = "deberta-v2") -> tuple[nnx.Module, np.ndarray, np.ndarray, np.ndarray]:
    """A random encoder of `model_type` (TINY_HF sizes, DeBERTa with 2 layers) in train mode with the dropout of
    TRAINING_DROPOUT, ids and segment ids of a full row, a padded row and a row of three packed examples (100 tokens),
    and output weights zero at padding."""
    from gliner_jax.modeling.encoders import ENCODERS

    family = ENCODERS[model_type]
    layers = {"num_hidden_layers": 2} if model_type == "deberta-v2" else {}
    config = family.config_class.from_hf_dict({**TINY_HF[model_type], **layers, **TRAINING_DROPOUT[model_type]})
    model = family.model_class(config, rngs=nnx.Rngs(0))
    model.train()
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 299, (3, 100))
    mask = np.zeros((3, 100), np.int32)
    mask[0], mask[1, :57], mask[2, :30], mask[2, 30:70], mask[2, 70:90] = 1, 1, 1, 2, 3
    weights = rng.normal(size=(3, 100, config.hidden_size)).astype(np.float32) * (mask > 0)[..., None]
    return model, ids, mask, weights


def assert_same_outputs(ours: tuple, reference: tuple, mask: np.ndarray) -> None:
    """`hidden_and_gradients` results equal up to float32 rounding (hidden states where `mask` is set; each gradient
    to 1e-5 of its largest entry, or of a thousandth of the largest gradient anywhere: attention key biases, to
    which softmax is blind, have gradients of pure rounding noise)."""
    np.testing.assert_allclose(ours[0][mask > 0], reference[0][mask > 0], rtol=0, atol=1e-5)
    assert len(reference[1]) >= 8  # every parameter (ModernBERT has no biases: 9)
    largest = max(np.abs(theirs).max() for theirs in reference[1])
    for mine, theirs in zip(ours[1], reference[1], strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5 * max(np.abs(theirs).max(), 1e-3 * largest))
