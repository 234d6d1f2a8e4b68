"""Encoder configs: options our encoders do not implement are refused by name, never silently changed (DeBERTa,
BERT, RoBERTa, XLM-R, ModernBERT); ModernBERT reads transformers 4's and 5's config keys."""

from __future__ import annotations

import pytest
import transformers

from gliner_jax.checkpoint_io import load_hf_encoder
from gliner_jax.config import DebertaConfig
from gliner_jax.modeling.encoders import encoder_config_from_hf
from gliner_jax.modeling.encoders.bert import BertConfig, RobertaConfig
from gliner_jax.modeling.encoders.modernbert import GLOBAL, LOCAL, ModernBertConfig
from tests.utils.encoders import TINY_HF, TINY_V3

G, L = GLOBAL, LOCAL


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


def test_modernbert_reads_both_config_formats():
    """transformers 4's keys (global_attn_every_n_layers, global / local_rope_theta) and 5's (layer_types,
    rope_parameters) give one config; a legacy `local_rope_theta: null` means the global base."""
    legacy = {"model_type": "modernbert", "num_hidden_layers": 4, "global_attn_every_n_layers": 2}
    legacy |= {"global_rope_theta": 1000.0, "local_rope_theta": 500.0, "local_attention": 8}
    current = transformers.ModernBertConfig(**legacy).to_dict()
    assert "rope_parameters" in current and "layer_types" in current
    ours = ModernBertConfig.from_hf_dict(legacy)
    assert ours == ModernBertConfig.from_hf_dict(current)
    assert ours.layer_types == (G, L, G, L)
    assert (ours.full_rope_theta, ours.sliding_rope_theta, ours.window) == (1000.0, 500.0, 4)
    assert ModernBertConfig.from_hf_dict({**legacy, "local_rope_theta": None}).sliding_rope_theta == 1000.0
    assert ModernBertConfig.from_hf_dict({"model_type": "modernbert"}).layer_types == (G, L, L) * 7 + (G,)
    # Written back, both versions read the same values: the legacy keys stay beside the new ones.
    written = ours.to_hf_dict()
    assert written["global_rope_theta"] == 1000.0
    assert transformers.ModernBertConfig(**written).rope_parameters == current["rope_parameters"]
    assert current == {**current, **ModernBertConfig.from_hf_dict(current).to_hf_dict()}


@pytest.mark.parametrize(
    ("model_type", "overrides", "name"),
    [
        ("bert", {"position_embedding_type": "relative_key"}, "position_embedding_type"),
        ("bert", {"is_decoder": True}, "is_decoder"),
        ("bert", {"add_cross_attention": True}, "add_cross_attention"),
        ("bert", {"hidden_act": "gelu_10"}, "hidden_act"),
        ("roberta", {"hidden_act": "quick_gelu"}, "hidden_act"),
        ("bert", {"type_vocab_size": 0}, "type_vocab_size"),
        ("roberta", {"pad_token_id": None}, "pad_token_id"),
        ("modernbert", {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling"),
        ("modernbert", {"rope_parameters": {G: {"rope_type": "yarn", "rope_theta": 1e4}}}, "rope_parameters"),
        ("modernbert", {"head_dim": 16}, "head_dim"),
        ("modernbert", {"layer_types": [G, "chunked_attention", L, G, L]}, "layer_types"),
        ("modernbert", {"layer_types": [G, L]}, "layer_types"),
        ("modernbert", {"hidden_activation": "mish"}, "hidden_activation"),
    ],
)
def test_unsupported_family_option_is_refused(model_type, overrides, name):
    hf = {**TINY_HF[model_type], **overrides, "model_type": model_type}
    with pytest.raises(NotImplementedError, match=name):
        encoder_config_from_hf(hf)


@pytest.mark.parametrize(("config_class", "model_type"), [(RobertaConfig, "bert"), (BertConfig, "xlm-roberta")])
def test_other_family_model_type_is_refused(config_class, model_type):
    with pytest.raises(NotImplementedError, match=f"model_type='{model_type}'"):
        config_class.from_hf_dict({**TINY_HF["bert"], "model_type": model_type})
