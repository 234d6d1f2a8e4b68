"""Our encoder against transformers' PyTorch DebertaV2Model (eval mode, float32)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.models.deberta_v2 import modeling_deberta_v2

from gliner_jax.checkpoint_io import load_hf_encoder
from gliner_jax.modeling.encoders.deberta import relative_positions
from tests.utils.encoders import (
    BLOCKWISE,
    CONFIGS,
    LENGTHS,
    TINY_V3,
    assert_packed_row_equals_rows_alone,
    random_batch,
    relative_error,
    torch_forward,
)


@pytest.mark.parametrize("name", CONFIGS)
def test_parity_with_transformers(saved_encoder, name):
    torch_model, directory = saved_encoder(**CONFIGS[name])
    encoder, config = load_hf_encoder(directory)
    ids, mask = random_batch(config.vocab_size, LENGTHS)
    ours = np.asarray(encoder(jnp.asarray(ids), jnp.asarray(mask)))
    ref = torch_forward(torch_model, ids, mask)
    assert ours.shape == ref.shape == (len(LENGTHS), max(LENGTHS), config.hidden_size)
    error = relative_error(ours, ref, mask)
    assert error <= 1e-5, f"{name}: relative error {error:.2e}"


def test_parity_from_pytorch_bin_of_masked_lm(tmp_path):
    """A task checkpoint (deberta. prefix + MLM head) in pytorch_model.bin loads its encoder."""
    import transformers

    torch.manual_seed(1)
    mlm = transformers.DebertaV2ForMaskedLM(transformers.DebertaV2Config(**TINY_V3)).eval()
    # transformers 5 writes only safetensors; old hub checkpoints are pickles like this one.
    mlm.config.save_pretrained(tmp_path)
    torch.save(mlm.state_dict(), tmp_path / "pytorch_model.bin")
    encoder, config = load_hf_encoder(tmp_path)
    ids, mask = random_batch(config.vocab_size, [40, 23], seed=3)
    ours = np.asarray(encoder(jnp.asarray(ids), jnp.asarray(mask)))
    assert relative_error(ours, torch_forward(mlm.deberta, ids, mask), mask) <= 1e-5


def test_bfloat16_compute_close_to_float32(saved_encoder):
    torch_model, directory = saved_encoder()
    encoder, config = load_hf_encoder(directory, dtype=jnp.bfloat16)
    ids, mask = random_batch(config.vocab_size, LENGTHS)
    ours = np.asarray(encoder(jnp.asarray(ids), jnp.asarray(mask)).astype(jnp.float32))
    ref = torch_forward(torch_model, ids, mask)
    valid = mask.astype(bool)
    rel = np.linalg.norm(ours[valid] - ref[valid]) / np.linalg.norm(ref[valid])
    assert rel <= 2e-2
    assert encoder.encoder.layer.output.dense.kernel.dtype == jnp.float32


@pytest.mark.parametrize(
    ("buckets", "max_position", "length"),
    [(256, 512, 1500), (16, 128, 300), (64, 1024, 900), (32, 64, 200), (-1, 512, 50)],
)
def test_relative_positions_match_reference(buckets, max_position, length):
    probe = torch.zeros(length, 1)
    ref = modeling_deberta_v2.build_relative_position(probe, probe, bucket_size=buckets, max_position=max_position)
    np.testing.assert_array_equal(relative_positions(length, buckets, max_position), ref[0].numpy())


@pytest.mark.parametrize(
    ("name", "attributes"),
    [("v3", {}), ("position_biased_input", {}), ("v3", BLOCKWISE)],
    ids=["v3", "position_biased_input", "v3_blockwise"],
)
def test_packed_segments_equal_each_segment_alone(saved_encoder, name, attributes):
    """Segment ids in attention_mask (1, 2, 3 for examples packed into one row, 0 padding): each segment's states are
    transformers' states of that example run alone (relative distances and absolute positions restart inside it),
    also with the queries in blocks of 16 that the segments (30, 9 and 17 tokens) straddle."""
    torch_model, directory = saved_encoder(**CONFIGS[name])
    encoder, config = load_hf_encoder(directory)
    encoder.set_attributes(**attributes)
    assert_packed_row_equals_rows_alone(encoder, torch_model, config.vocab_size, pad_id=0)
