"""Configs of the BERT, RoBERTa, XLM-R and ModernBERT encoders: ModernBERT reads transformers 4's and 5's keys; options
our encoders do not implement are refused by name, never silently changed (DeBERTa's: test_config_refusals.py)."""

from __future__ import annotations

import pytest
import transformers

from gliner_jax.modeling.encoders import encoder_config_from_hf
from gliner_jax.modeling.encoders.bert import BertConfig, RobertaConfig
from gliner_jax.modeling.encoders.modernbert import GLOBAL, LOCAL, ModernBertConfig
from tests.utils.encoders import TINY_HF

G, L = GLOBAL, LOCAL


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
def test_unsupported_option_is_refused(model_type, overrides, name):
    hf = {**TINY_HF[model_type], **overrides, "model_type": model_type}
    with pytest.raises(NotImplementedError, match=name):
        encoder_config_from_hf(hf)


@pytest.mark.parametrize(("config_class", "model_type"), [(RobertaConfig, "bert"), (BertConfig, "xlm-roberta")])
def test_other_model_type_is_refused(config_class, model_type):
    with pytest.raises(NotImplementedError, match=f"model_type='{model_type}'"):
        config_class.from_hf_dict({**TINY_HF["bert"], "model_type": model_type})
