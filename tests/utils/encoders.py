"""Tiny random encoders in PyTorch (DeBERTa-v3, BERT, RoBERTa, XLM-R, ModernBERT), random batches, and transformers'
forward pass on them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
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


def make_hf_encoder(model_type: str = "deberta-v2", seed: int = 0, **overrides) -> transformers.PreTrainedModel:
    """A random transformers base model of `model_type` (TINY_HF sizes) in eval mode; every tensor (LayerNorm and
    biases too) is perturbed."""
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
    assert ours.keys() == reference.keys()
    for key, tensor in reference.items():
        assert torch.equal(ours[key], tensor), key
