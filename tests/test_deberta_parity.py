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
    TINY_V3,
    assert_packed_row_equals_rows_alone,
    random_batch,
    relative_error,
    torch_forward,
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


@pytest.mark.parametrize("name", ["v3", "position_biased_input"])
def test_packed_segments_equal_each_segment_alone(saved_encoder, name):
    """Segment ids in attention_mask (1, 2, 3 for examples packed into one row, 0 padding): each segment's states are
    transformers' states of that example run alone (relative distances and absolute positions restart inside it)."""
    torch_model, directory = saved_encoder(**CONFIGS[name])
    encoder, config = load_hf_encoder(directory)
    assert_packed_row_equals_rows_alone(encoder, torch_model, config.vocab_size, pad_id=0)
