"""Causal label decoders (GPT-2, Llama, Qwen2) against transformers' PyTorch models through gliner's `Decoder`
(float32, eval mode): final hidden states and logits with padded rows, the key table both ways, and greedy
generation and beam search (gliner's `num_gen_sequences`) with the key / value cache (with and without gliner's
label trie) token for token."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from gliner.decoding.trie import LabelsTrie

from gliner_jax.checkpoint_io import decoder_table, state_to_torch
from gliner_jax.modeling.decoders import decoder_family_of_config
from gliner_jax.modeling.decoders.generation import beam_generate, greedy_generate, trie_table
from tests.utils.decoders import EOS_ID, gliner_decoder, hf_decoder_config, our_decoder, random_embeds

# The label trie is the same host-built table for every family: checked once, on GPT-2 (gliner's default).
CASES = {
    "gpt2_untied_inverse_layer_scaling_trie": (
        "gpt2",
        {"scale_attn_by_inverse_layer_idx": True, "tie_word_embeddings": False},
    ),
    "llama_gqa_biases": ("llama", {"attention_bias": True, "mlp_bias": True}),
    "qwen2_one_kv_head_tied": ("qwen2", {}),
}
generate = nnx.jit(greedy_generate, static_argnames=("max_new_tokens", "eos_id", "pad_id"))
beams = nnx.jit(beam_generate, static_argnames=("num_beams", "max_new_tokens", "eos_id", "pad_id"))


def assert_same_beams(ours: jnp.ndarray, expected: torch.Tensor, pad_id: int) -> None:
    """Our beams [B, N, L] are transformers' sequences [B * N, L' <= L], then padding."""
    tokens = np.asarray(ours).reshape(-1, ours.shape[-1])
    np.testing.assert_array_equal(tokens[:, : expected.shape[1]], expected.numpy())
    assert (tokens[:, expected.shape[1] :] == pad_id).all()


@pytest.mark.parametrize("name", CASES)
def test_decoder_matches_transformers(name):
    model_type, overrides = CASES[name]
    reference = gliner_decoder(hf_decoder_config(model_type, **overrides))
    lm = reference.decoder_layer.model
    ours = our_decoder(lm)
    config = ours.config

    # Strict keys both ways: every tensor of the state dict but the ones transformers ties or derives.
    exported = state_to_torch(ours, decoder_table(config))
    ignored = set(decoder_family_of_config(config).hf_ignored(config))
    state = {k: v.numpy() for k, v in lm.state_dict().items() if k not in ignored}
    assert exported.keys() == state.keys()
    assert all(np.array_equal(exported[k], state[k]) for k in state)

    # Whole-sequence forward with left and right padding (gliner's teacher-forced decoder inputs).
    embeds = random_embeds(3, 9, config.hidden_size)
    mask = np.ones((3, 9), np.int64)
    mask[1, :3] = 0
    mask[2, 6:] = 0
    with torch.no_grad():
        out = lm(inputs_embeds=torch.tensor(embeds), attention_mask=torch.tensor(mask), output_hidden_states=True)
    hidden, _ = ours(jnp.asarray(embeds), jnp.asarray(mask, bool), ours.init_cache(3, 9), 0)
    real = mask.astype(bool)
    ref_hidden = out.hidden_states[-1].numpy()
    assert np.abs(np.asarray(hidden) - ref_hidden)[real].max() <= 1e-5 * np.abs(ref_hidden).max()
    np.testing.assert_allclose(np.asarray(ours.logits(hidden))[real], out.logits.numpy()[real], atol=2e-5, rtol=1e-5)

    # Greedy generation (gliner's generate_labels path: transformers' generate on the prefix embeddings).
    prefix = torch.tensor(embeds[:, :5])
    expected = reference.generate_from_embeds(prefix, max_new_tokens=8, eos_token_id=EOS_ID, pad_token_id=7)
    tokens = np.asarray(generate(ours, jnp.asarray(embeds[:, :5]), max_new_tokens=8, eos_id=EOS_ID, pad_id=7))
    np.testing.assert_array_equal(tokens[:, : expected.shape[1]], expected.numpy())
    assert (tokens[:, expected.shape[1] :] == 7).all()

    # Beam search of 3 beams (gliner's num_gen_sequences=3 with do_sample=False).
    options = dict(max_new_tokens=8, eos_token_id=EOS_ID, pad_token_id=7)
    expected = reference.generate_from_embeds(prefix, num_return_sequences=3, **options)
    assert_same_beams(
        beams(ours, jnp.asarray(embeds[:, :5]), num_beams=3, max_new_tokens=8, eos_id=EOS_ID, pad_id=7), expected, 7
    )

    if not name.endswith("_trie"):
        return
    # Constrained by a trie of labels: one that follows the free choice, others that branch from it.
    first = int(expected[0, 0])
    labels = [[first, 11, EOS_ID], [first, 13, 17, EOS_ID], [19, EOS_ID], [first, EOS_ID]]
    expected = reference.generate_from_embeds(
        prefix, max_new_tokens=8, eos_token_id=EOS_ID, pad_token_id=7, labels_trie=LabelsTrie(labels)
    )
    trie = trie_table(labels)
    tokens = np.asarray(
        generate(ours, jnp.asarray(embeds[:, :5]), max_new_tokens=8, eos_id=EOS_ID, pad_id=7, trie=trie)
    )
    np.testing.assert_array_equal(tokens[:, : expected.shape[1]], expected.numpy())

    # Beams within the trie: labels end at different lengths, the early stop of rows that cannot improve.
    expected = reference.generate_from_embeds(prefix, num_return_sequences=3, labels_trie=LabelsTrie(labels), **options)
    found = beams(ours, jnp.asarray(embeds[:, :5]), num_beams=3, max_new_tokens=8, eos_id=EOS_ID, pad_id=7, trie=trie)
    assert_same_beams(found, expected, 7)
