"""Causal decoder configs (GPT-2, Llama, Qwen2): read from transformers' dicts (both rotary formats), written back,
options not implemented refused by name; gliner's label trie as arrays, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from gliner_jax.modeling.decoders import decoder_config_from_hf
from gliner_jax.modeling.decoders.generation import trie_table
from gliner_jax.modeling.decoders.gpt2 import Gpt2Config, Gpt2LMHeadModel
from gliner_jax.modeling.decoders.llama import Qwen2Config


def test_configs_read_both_rotary_formats_and_round_trip():
    old = decoder_config_from_hf({"model_type": "llama", "rope_theta": 500.0, "num_key_value_heads": 4})
    new = decoder_config_from_hf(
        {"model_type": "llama", "rope_parameters": {"rope_type": "default", "rope_theta": 500.0}}
    )
    assert old.rope_theta == new.rope_theta == 500.0
    assert (old.num_key_value_heads, new.num_key_value_heads, new.head_dim) == (4, 32, 128)
    gpt2 = decoder_config_from_hf(
        {"n_embd": 24, "n_head": 3, "n_layer": 2, "vocab_size": 50, "tie_word_embeddings": False}
    )
    assert type(gpt2) is Gpt2Config and (gpt2.hidden_size, gpt2.intermediate_size) == (24, 96)  # gliner's default type
    qwen2 = decoder_config_from_hf({"model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4})
    assert type(qwen2) is Qwen2Config and qwen2.qkv_bias and not qwen2.o_bias
    for config in (old, gpt2, qwen2):
        assert decoder_config_from_hf(config.to_hf_dict()) == config


@pytest.mark.parametrize(
    "hf, error, named",
    [
        ({"model_type": "mistral"}, NotImplementedError, "model_type='mistral'"),
        ({"model_type": "gpt2", "add_cross_attention": True}, NotImplementedError, "add_cross_attention=True"),
        ({"model_type": "gpt2", "activation_function": "tanh"}, NotImplementedError, "activation_function='tanh'"),
        ({"model_type": "gpt2", "n_embd": "big"}, ValueError, "n_embd='big'"),
        ({"model_type": "qwen2", "use_sliding_window": True}, NotImplementedError, "use_sliding_window=True"),
        (
            {"model_type": "llama", "rope_parameters": {"rope_type": "linear", "factor": 2.0}},
            NotImplementedError,
            "rope_type='linear'",
        ),
        (
            {"model_type": "llama", "num_attention_heads": 6, "num_key_value_heads": 4},
            ValueError,
            "num_key_value_heads",
        ),
    ],
    ids=["unknown-type", "cross-attention", "activation", "wrong-type", "sliding-window", "rope-scaling", "kv-heads"],
)
def test_decoder_config_refusals_name_the_field(hf, error, named):
    with pytest.raises(error, match=named.replace("(", r"\(").replace("[", r"\[")):
        decoder_config_from_hf(hf)


def test_gpt2_refuses_positions_beyond_its_table():
    config = Gpt2Config(n_positions=16, n_embd=8, n_head=2, n_layer=1, vocab_size=11)
    model = nnx.eval_shape(lambda: Gpt2LMHeadModel(config, rngs=nnx.Rngs(0)))
    assert model.init_cache(2, 16).keys.shape == (1, 2, 16, 2, 4)
    with pytest.raises(ValueError, match="17 decoder positions exceed the n_positions=16"):
        model.init_cache(2, 17)


def test_trie_table_by_hand():
    # Labels 5 7 <eos=2>, 5 9 <eos>, 13 <eos>: the root allows 5 and 13; after 5, 7 and 9; after 5 7, eos only.
    table = trie_table([[5, 7, 2], [5, 9, 2], [13, 2]])
    nodes, dead = table.tokens.shape[0], table.tokens.shape[0] - 1
    assert nodes == 9 and (table.tokens[dead] == -1).all()  # the root, 7 token nodes, the dead end

    def allowed(node):
        return sorted(int(t) for t in table.tokens[node] if t >= 0)

    def child(node, token):
        hits = np.flatnonzero(table.tokens[node] == token)
        return int(table.children[node, hits[0]]) if len(hits) else dead

    assert allowed(0) == [5, 13]
    after_5 = child(0, 5)
    assert allowed(after_5) == [7, 9]
    assert allowed(child(after_5, 7)) == [2] and allowed(child(child(after_5, 7), 2)) == []
    assert child(0, 7) == dead and allowed(dead) == []
