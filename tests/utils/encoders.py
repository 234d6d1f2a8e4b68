"""Tiny DeBERTa-v3 encoders in PyTorch, random batches, and transformers' forward pass on them."""

from __future__ import annotations

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

# A label encoder for bi-encoder tests: narrower than TINY_V3 (so gliner adds labels_projection) and with absolute
# positions (so the label tokens' positions count).
TINY_LABELS_ENCODER = {**TINY_V3, "hidden_size": 48, "num_hidden_layers": 2, "position_biased_input": True}


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
