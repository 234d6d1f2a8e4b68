"""DeBERTa-v3, BERT, RoBERTa, XLM-R and ModernBERT encoders against transformers' PyTorch base models (eval mode,
float32): random odd-sized configs with padding, packed rows, task-model checkpoints, legacy tensor names, export,
refusals; DeBERTa's relative position buckets."""

from __future__ import annotations

import json
import logging

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from transformers.models.deberta_v2 import modeling_deberta_v2

from gliner_jax.checkpoint_io import load_hf_encoder, save_hf_encoder
from gliner_jax.modeling.encoders.bert import BertConfig, RobertaConfig, XLMRobertaConfig
from gliner_jax.modeling.encoders.deberta import DebertaConfig, relative_positions
from gliner_jax.modeling.encoders.modernbert import GLOBAL, LOCAL, ModernBertConfig
from tests.utils.encoders import (
    BLOCKWISE,
    DEBERTA_CONFIGS,
    TINY_HF,
    assert_packed_row_equals_rows_alone,
    assert_same_state_dict,
    make_hf_encoder,
    random_batch,
    relative_error,
    torch_forward,
)

# Rows longer than ModernBERT's local window (16 here), padding in every row but one.
LENGTHS = [100, 57, 9, 16]
G, L = GLOBAL, LOCAL

CONFIGS = {
    "bert": ("bert", {}),
    "bert_gelu_new": ("bert", {"hidden_act": "gelu_new"}),
    "bert_gelu_pytorch_tanh": ("bert", {"hidden_act": "gelu_pytorch_tanh"}),
    "bert_relu_one_layer": ("bert", {"hidden_act": "relu", "num_hidden_layers": 1}),
    "bert_silu": ("bert", {"hidden_act": "silu"}),
    "bert_swish_eps_1e-5": ("bert", {"hidden_act": "swish", "layer_norm_eps": 1e-5}),
    "roberta": ("roberta", {}),
    "xlm-roberta": ("xlm-roberta", {}),
    "modernbert": ("modernbert", {}),
    "modernbert_biases": ("modernbert", {"norm_bias": True, "attention_bias": True, "mlp_bias": True}),
    "modernbert_odd_window_every_3": ("modernbert", {"local_attention": 7, "global_attn_every_n_layers": 3}),
    "modernbert_local_first_layer_types": ("modernbert", {"layer_types": [L, G, L, L, G]}),
    "modernbert_gelu_new": ("modernbert", {"hidden_activation": "gelu_new"}),
    **{f"deberta-{name}": ("deberta-v2", overrides) for name, overrides in DEBERTA_CONFIGS.items()},
}


def pad_id(config) -> int:
    """The family's padding id (DeBERTa's configs have none: 0)."""
    return getattr(config, "pad_token_id", 0)


def _parity(torch_model, directory, lengths=LENGTHS, seed=0) -> float:
    encoder, config = load_hf_encoder(directory)
    ids, mask = random_batch(config.vocab_size, lengths, seed=seed, pad_id=pad_id(config))
    ours = np.asarray(encoder(jnp.asarray(ids), jnp.asarray(mask)))
    ref = torch_forward(torch_model, ids, mask)
    assert ours.shape == ref.shape == (len(lengths), max(lengths), config.hidden_size)
    return relative_error(ours, ref, mask)


@pytest.mark.parametrize("name", CONFIGS)
def test_parity_with_transformers(saved_encoder, name):
    model_type, overrides = CONFIGS[name]
    torch_model, directory = saved_encoder(model_type=model_type, **overrides)
    error = _parity(torch_model, directory)
    assert error <= 1e-5, f"{name}: relative error {error:.2e}"


@pytest.mark.parametrize("model_type", ["deberta-v2", "bert", "modernbert"])
def test_bfloat16_compute_close_to_float32(saved_encoder, model_type):
    torch_model, directory = saved_encoder(model_type=model_type)
    encoder, config = load_hf_encoder(directory, dtype=jnp.bfloat16)
    ids, mask = random_batch(config.vocab_size, LENGTHS, pad_id=pad_id(config))
    ours = np.asarray(encoder(jnp.asarray(ids), jnp.asarray(mask)).astype(jnp.float32))
    ref, valid = torch_forward(torch_model, ids, mask), mask.astype(bool)
    assert np.linalg.norm(ours[valid] - ref[valid]) / np.linalg.norm(ref[valid]) <= 2e-2
    kernels = [var for path, var in nnx.to_flat_state(nnx.state(encoder, nnx.Param)) if path[-1] == "kernel"]
    assert kernels and all(var.dtype == jnp.float32 for var in kernels)


def test_config_classes_follow_model_type(saved_encoder):
    expected = {"bert": BertConfig, "roberta": RobertaConfig, "xlm-roberta": XLMRobertaConfig}
    expected |= {"modernbert": ModernBertConfig, "deberta-v2": DebertaConfig}
    for model_type, config_class in expected.items():
        _, directory = saved_encoder(model_type=model_type)
        assert type(load_hf_encoder(directory)[1]) is config_class


@pytest.mark.parametrize("model_type", ["roberta", "xlm-roberta"])
def test_roberta_positions_skip_padding_ids(saved_encoder, model_type):
    """A pad id inside a row keeps position pad_token_id and the count goes on after it (transformers' numbering)."""
    torch_model, directory = saved_encoder(model_type=model_type)
    encoder, config = load_hf_encoder(directory)
    pad = config.pad_token_id
    ids, mask = random_batch(config.vocab_size, [40, 23], seed=2, pad_id=pad)
    ids[0, [5, 6, 30]] = pad  # attended padding ids in the middle of the row
    ours = np.asarray(encoder(jnp.asarray(ids), jnp.asarray(mask)))
    assert relative_error(ours, torch_forward(torch_model, ids, mask), mask) <= 1e-5


@pytest.mark.parametrize(
    ("name", "attributes"),
    [
        ("bert", {}),
        ("roberta", {}),
        ("modernbert", {}),
        ("deberta-v3", {}),
        ("deberta-position_biased_input", {}),
        ("deberta-v3", BLOCKWISE),
    ],
    ids=["bert", "roberta", "modernbert", "deberta-v3", "deberta-position_biased_input", "deberta-v3_blockwise"],
)
def test_packed_segments_equal_each_segment_alone(saved_encoder, name, attributes):
    """Segment ids in attention_mask (1, 2, 3 for examples packed into one row, 0 padding): each packed example's
    states are transformers' states of it run alone (BERT positions, RoBERTa's padding-offset positions, ModernBERT's
    rotary positions and local window restart, DeBERTa's relative distances and absolute positions), also with
    DeBERTa's queries in blocks of 16 that the segments (30, 9 and 17 tokens) straddle."""
    model_type, overrides = CONFIGS[name]
    torch_model, directory = saved_encoder(model_type=model_type, **overrides)
    encoder, config = load_hf_encoder(directory)
    encoder.set_attributes(**attributes)
    assert_packed_row_equals_rows_alone(encoder, torch_model, config.vocab_size, pad_id(config))


def test_pooled_output_is_transformers_pooler_output(saved_encoder):
    torch_model, directory = saved_encoder(model_type="bert")
    encoder, config = load_hf_encoder(directory)
    ids, mask = random_batch(config.vocab_size, [20, 7], seed=1)
    ours = np.asarray(encoder.pooled_output(encoder(jnp.asarray(ids), jnp.asarray(mask))))
    with torch.no_grad():
        ref = torch_model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
    np.testing.assert_allclose(ours, ref.pooler_output.numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("model_type", "task_class", "base"),
    [
        ("bert", "BertForMaskedLM", "bert"),
        ("roberta", "RobertaForMaskedLM", "roberta"),
        ("xlm-roberta", "XLMRobertaForMaskedLM", "roberta"),
        ("modernbert", "ModernBertForMaskedLM", "model"),
        ("deberta-v2", "DebertaV2ForMaskedLM", "deberta"),
    ],
)
def test_masked_lm_checkpoint_loads_its_encoder(tmp_path, caplog, model_type, task_class, base):
    """A task model's checkpoint (base-model prefix, MLM head, for BERT models no pooler) loads its encoder; the
    missing pooler is initialised at random with a warning, as transformers does. DeBERTa's is a pickle in
    pytorch_model.bin, as old hub checkpoints are (transformers 5 writes only safetensors)."""
    torch.manual_seed(1)
    config = transformers.AutoConfig.for_model(model_type, **TINY_HF[model_type])
    mlm = getattr(transformers, task_class)(config).eval()
    if model_type == "deberta-v2":
        mlm.config.save_pretrained(tmp_path)
        torch.save(mlm.state_dict(), tmp_path / "pytorch_model.bin")
    else:
        mlm.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="gliner_jax.checkpoint_io"):
        error = _parity(getattr(mlm, base), tmp_path, [40, 23], seed=3)
    assert error <= 1e-5
    assert ("pooler.dense.weight" in caplog.text) == (model_type in ("bert", "roberta", "xlm-roberta"))


def test_legacy_names_and_buffers_load_as_in_transformers(tmp_path):
    """An old BERT pickle: `bert.` prefix, TensorFlow-era LayerNorm gamma / beta, the position_ids and
    token_type_ids buffers. We load what transformers loads from the same file."""
    torch_model = make_hf_encoder("bert", seed=4)
    state = {}
    for key, tensor in torch_model.state_dict().items():
        key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        state[f"bert.{key}"] = tensor
    state["bert.embeddings.position_ids"] = torch.arange(128)[None]
    state["bert.embeddings.token_type_ids"] = torch.zeros(1, 128, dtype=torch.long)
    torch_model.config.save_pretrained(tmp_path)
    torch.save(state, tmp_path / "pytorch_model.bin")
    reference = transformers.BertModel.from_pretrained(tmp_path).eval()
    assert _parity(reference, tmp_path) <= 1e-5
    assert _parity(torch_model, tmp_path) <= 1e-5  # and transformers read every tensor


@pytest.mark.parametrize("name", ["bert", "roberta", "xlm-roberta", "modernbert", "modernbert_biases"])
def test_round_trip_loads_strictly_in_transformers(saved_encoder, tmp_path, name):
    """torch -> jax -> torch: every tensor bit for bit (the pooler included, ModernBERT's layer 0 without an
    attention norm), and the config reads back the same."""
    model_type, overrides = CONFIGS[name]
    torch_model, directory = saved_encoder(model_type=model_type, **overrides)
    encoder, config = load_hf_encoder(directory)
    save_hf_encoder(encoder, config, tmp_path / "out")
    reloaded, info = transformers.AutoModel.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert type(reloaded) is type(torch_model)
    assert_same_state_dict(reloaded.state_dict(), torch_model.state_dict())
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    source = json.loads((directory / "config.json").read_text())
    assert {k: v for k, v in written.items() if k != "architectures"} == {
        k: v for k, v in source.items() if k != "architectures"
    }


def test_roberta_rows_are_bounded_by_their_positions(saved_encoder):
    """RoBERTa's first pad_token_id + 1 position rows are never a real token's: a 130-row table holds 128 tokens."""
    _, directory = saved_encoder(model_type="roberta")
    encoder, config = load_hf_encoder(directory)
    assert config.max_tokens == 128
    ids, mask = random_batch(config.vocab_size, [129], pad_id=1)
    with pytest.raises(ValueError, match="sequence length 129 exceeds the 128 positions"):
        encoder(jnp.asarray(ids), jnp.asarray(mask))


@pytest.mark.parametrize(
    ("buckets", "max_position", "length"),
    [(256, 512, 1500), (16, 128, 300), (64, 1024, 900), (32, 64, 200), (-1, 512, 50)],
)
def test_deberta_relative_positions_match_reference(buckets, max_position, length):
    probe = torch.zeros(length, 1)
    ref = modeling_deberta_v2.build_relative_position(probe, probe, bucket_size=buckets, max_position=max_position)
    np.testing.assert_array_equal(relative_positions(length, buckets, max_position), ref[0].numpy())


@pytest.mark.parametrize("name", ["v3", "c2p_only_unshared", "p2c_only_unshared", "no_buckets_max_rel_32"])
def test_blockwise_matches_transformers_and_the_whole_sequence(saved_encoder, name):
    torch_model, directory = saved_encoder(**DEBERTA_CONFIGS[name])
    encoder, config = load_hf_encoder(directory)
    ids, mask = random_batch(config.vocab_size, LENGTHS)
    whole = np.asarray(encoder(jnp.asarray(ids), jnp.asarray(mask)))
    encoder.set_attributes(**BLOCKWISE)  # 100 tokens: 7 blocks, the last one padded
    blocks = np.asarray(encoder(jnp.asarray(ids), jnp.asarray(mask)))
    assert relative_error(blocks, torch_forward(torch_model, ids, mask), mask) <= 1e-5
    assert relative_error(blocks, whole, mask) <= 1e-6
