"""Config options our encoder does not implement are refused by name, never silently changed."""

from __future__ import annotations

import pytest
import transformers

from gliner_jax.checkpoint_io import load_hf_encoder
from gliner_jax.config import GLiNERConfig
from gliner_jax.label_generation import GenerationOptions
from gliner_jax.modeling.encoders.deberta import DebertaConfig
from tests.utils.encoders import TINY_V3


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"conv_kernel_size": 3}, "conv_kernel_size"),
        ({"attention_head_size": 8}, "attention_head_size"),
        ({"embedding_size": 32}, "embedding_size"),
        ({"type_vocab_size": 2}, "type_vocab_size"),
        ({"relative_attention": False}, "relative_attention"),
        ({"hidden_act": "relu"}, "hidden_act"),
        ({"hidden_act": "gelu_new"}, "hidden_act"),
        ({"pos_att_type": ["c2p", "p2p"]}, "pos_att_type"),
        ({"norm_rel_ebd": "layer_norm|batch_norm"}, "norm_rel_ebd"),
    ],
)
def test_unsupported_option_is_refused(overrides, name):
    hf = transformers.DebertaV2Config(**{**TINY_V3, **overrides}).to_dict()
    with pytest.raises(NotImplementedError, match=name):
        DebertaConfig.from_hf_dict(hf)


def test_other_model_type_is_refused():
    with pytest.raises(NotImplementedError, match="model_type='bert'"):
        DebertaConfig.from_hf_dict({**TINY_V3, "model_type": "bert"})


def test_absent_keys_follow_transformers_defaults():
    """A config.json without relative_attention means none, as in transformers: refused, not assumed."""
    minimal = {
        k: TINY_V3[k]
        for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    }
    with pytest.raises(NotImplementedError, match="relative_attention"):
        DebertaConfig.from_hf_dict(minimal)
    config = DebertaConfig.from_hf_dict({**minimal, "relative_attention": True})
    assert config.position_biased_input is True
    assert config.share_att_key is False
    assert config.pos_att_type == ()
    assert config.position_buckets == -1


def test_load_refuses_directory_with_unsupported_config(tmp_path):
    transformers.DebertaV2Config(**{**TINY_V3, "conv_kernel_size": 3}).save_pretrained(tmp_path)
    with pytest.raises(NotImplementedError, match="conv_kernel_size"):
        load_hf_encoder(tmp_path)


@pytest.mark.parametrize(
    ("fields", "error", "match"),
    [
        ({"relations_layer": "graph"}, ValueError, "relations_layer='graph'; known: .*'dot'"),
        ({"relations_layer": "dot", "triples_layer": "RotatE"}, ValueError, "triples_layer='RotatE'; known:"),
        ({"relations_layer": "none", "triples_layer": "ConvE"}, NotImplementedError, "cannot build it either"),
        ({"relations_layer": "dot", "triples_layer": "TransH"}, ValueError, "TransH.*needs hidden_size 768, got 32"),
        ({"relations_layer": "dot", "triples_layer": "QuatE", "hidden_size": 30}, ValueError, "multiple of 4"),
        ({"relations_layer": "gat", "hidden_size": 36}, ValueError, "divisible by its 8 attention heads, got 36"),
    ],
)
def test_relation_model_options_are_refused_by_name(fields, error, match):
    """Relation extraction options gliner does not know, those not implemented here and those gliner fails on."""
    with pytest.raises(error, match=match):
        GLiNERConfig(**{"hidden_size": 32, **fields})


def test_relation_model_options_are_accepted():
    config = GLiNERConfig(hidden_size=32, relations_layer="attention", triples_layer="ComplEx")
    assert config.is_relex and config.to_dict()["triples_layer"] == "ComplEx"
    assert not GLiNERConfig().is_relex
    # gliner's relation model ignores labels_encoder (its class choice: relations_layer first): not a bi-encoder,
    # no labels_encoder_config needed, both written back as read
    data = {
        **GLiNERConfig(hidden_size=32, relations_layer="dot", labels_encoder="x").to_dict(),
        "labels_encoder_config": {"a": 1},
    }
    ignored = GLiNERConfig.from_dict(data)
    assert ignored.is_relex and not ignored.is_bi_encoder and ignored.to_dict() == data


@pytest.mark.parametrize(
    ("encoder", "match"),
    [
        ({"model_type": "gru"}, "span_encoder_config model_type='gru'; known: .*'rnn'"),
        ("rnn", "span_encoder_config='rnn': expected a JSON object"),
        ({"model_type": "rnn", "rnn_type": "gru"}, "rnn_type='gru': only 'lstm'"),
        ({"model_type": "rnn", "hidden_size": 7}, "hidden_size=7: must be positive, and even when bidirectional"),
        ({"model_type": "rnn", "dropout": 1.0}, r"dropout=1.0: must be in \[0, 1\)"),
        ({"model_type": "deberta-v2", "num_attention_heads": 5}, "not a multiple of num_attention_heads"),
    ],
)
def test_span_encoder_config_faults_are_named(encoder, match):
    """gliner refuses these span context encoders too (ValueError), each by its field."""
    with pytest.raises(ValueError, match=match):
        GLiNERConfig(hidden_size=48, span_encoder_config=encoder)


def test_span_encoder_config_takes_gliners_defaults_and_round_trips():
    """A bare span_encoder_config gets gliner's defaults (hand-checked against its normalize_context_encoder_config):
    the head's width and dropout, one layer; DeBERTa: max(1, width // 64) heads, 4x feed-forward, relative
    attention over 512 positions, both attention terms; an unshared position key, no position buckets, no norm of
    the relative embeddings (transformers' defaults when absent). Written and read back unchanged."""
    config = GLiNERConfig(hidden_size=48, dropout=0.3, span_encoder_config={"model_type": "deberta-v2"})
    deberta = config.span_encoder_config
    assert (deberta.hidden_size, deberta.num_hidden_layers, deberta.num_attention_heads) == (48, 1, 1)
    assert (deberta.intermediate_size, deberta.hidden_dropout_prob, deberta.attention_probs_dropout_prob) == (
        192,
        0.3,
        0.3,
    )
    assert (deberta.max_relative_positions, set(deberta.pos_att_type)) == (512, {"c2p", "p2c"})
    assert (deberta.share_att_key, deberta.position_buckets, deberta.norm_rel_ebd) == (False, -1, "none")
    assert GLiNERConfig.from_dict(config.to_dict()) == config
    rnn = GLiNERConfig(hidden_size=48, dropout=0.3, span_encoder_config={"model_type": "rnn"}).span_encoder_config
    assert (rnn.hidden_size, rnn.num_hidden_layers, rnn.dropout, rnn.bidirectional) == (48, 1, 0.3, True)
    assert GLiNERConfig().to_dict()["span_encoder_config"] is None  # gliner writes null too


GPT2 = {"model_type": "gpt2", "n_embd": 24, "n_layer": 1, "n_head": 3, "vocab_size": 50}


@pytest.mark.parametrize(
    ("fields", "error", "match"),
    [
        ({"decoder_mode": "prompt"}, NotImplementedError, "decoder_mode='prompt'.*fails in its own inference"),
        ({"decoder_mode": "spans"}, ValueError, "decoder_mode='spans'; known"),
        ({"labels_decoder_config": None}, ValueError, "lacks labels_decoder_config"),
        ({"labels_decoder_config": {"model_type": "t5"}}, NotImplementedError, "decoder model_type='t5'"),
    ],
)
def test_decoder_model_options_are_refused_by_name(fields, error, match):
    """Decoder model (labels_decoder) options gliner does not know, and those not implemented here."""
    with pytest.raises(error, match=match):
        GLiNERConfig(**{"hidden_size": 32, "labels_decoder": "gpt2-dir", "labels_decoder_config": GPT2, **fields})


def test_relation_model_keeps_the_decoder_fields_it_ignores():
    """gliner builds a relation model, without decoder, from a config with relations_layer and labels_decoder: the
    decoder fields are kept as they were read and written back, and no decoder config is needed."""
    data = GLiNERConfig(relations_layer="dot", hidden_size=32).to_dict()
    data |= {"labels_decoder": "gpt2-dir", "decoder_mode": "span", "decoder_loss_coef": 0.3}
    config = GLiNERConfig.from_dict(data)
    assert config.is_relex and not config.is_decoder and config.labels_decoder is None
    assert config.to_dict() == data
    direct = GLiNERConfig(relations_layer="dot", labels_decoder="gpt2-dir", labels_decoder_config=GPT2)
    assert not direct.is_decoder and direct.to_dict()["labels_decoder_config"] == GPT2


def test_decoder_fields_are_written_for_decoder_models_only():
    data = GLiNERConfig(labels_decoder="gpt2-dir", decoder_mode="span", labels_decoder_config=GPT2).to_dict()
    assert data["decoder_mode"] == "span" and data["labels_decoder_config"]["n_embd"] == 24
    assert GLiNERConfig.from_dict(data).labels_decoder_config.n_embd == 24
    assert "decoder_mode" not in GLiNERConfig().to_dict()


def test_generation_options_are_refused_by_name():
    with pytest.raises(ValueError, match="num_gen_sequences must be >= 1, got 0"):
        GenerationOptions(num_gen_sequences=0)
    with pytest.raises(ValueError, match="num_gen_sequences=3 is more than the 2 gen_constraints labels"):
        GenerationOptions(["person", "city", "person"], num_gen_sequences=3)
    with pytest.raises(ValueError, match="gen_constraints must be a list of non-empty labels, got 'person'"):
        GenerationOptions(gen_constraints="person")
