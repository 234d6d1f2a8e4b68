"""GLiNER on BERT, RoBERTa, XLM-R and ModernBERT backbones (gliner builds them with AutoModel): our input pipeline
against gliner's collated batch for each kind of tokenizer, and the entities gliner predicts.

gliner loads the backbone's tokenizer as it is and calls it with `is_split_into_words=True`: a byte-level BPE
without `add_prefix_space` (RoBERTa's, ModernBERT's) then encodes every word as if it began the text (no `Ġ`), and a
sentencepiece-style tokenizer gives every word its own `▁`. We load the tokenizer the same way, so the ids agree.
"""

from __future__ import annotations

import numpy as np
import pytest

from gliner_jax import GLiNER
from gliner_jax.testing.builders import build_reference, quantile_thresholds
from tests.utils.entities import assert_same_entities

TEXTS = [
    "Marie Curie won the Nobel Prize in Physics in 1903, and again in 1911!",
    "Zürich, São Paulo & Kraków: Müller-Lüdenscheidt_GmbH paid $1,200.50 on 3/14/2015.",
    "",
    "Dr. Smith-Jones (WHO) met Angela Merkel in Geneva at 10:30am on Tuesday with 3 colleagues from the UN.",
]
LABELS = ["person", "award", "city name", "organization", "date"]
# One threshold, low enough for many overlapping candidates: higher ones run the same decoding on fewer.
QUANTILES = (0.9,)


@pytest.fixture(scope="module", params=["bert", "roberta", "xlm-roberta", "modernbert"])
def models(request, family_backbone, tmp_path_factory):
    """(reference gliner span model on the backbone, our GLiNER of its directory, thresholds at QUANTILES)."""
    directory = tmp_path_factory.mktemp(f"gliner-{request.param}")
    backbone = family_backbone(request.param)
    reference = build_reference(backbone, directory, logit_scale=4.0, span_mode="markerV0", hidden_size=48, max_width=4)
    return reference, GLiNER.from_pretrained(directory), quantile_thresholds(reference, TEXTS, LABELS, QUANTILES)


def test_batch_equals_gliner_collated_batch(models):
    """Token ids (special tokens, added <<ENT>> / <<SEP>>, subwords), mask, first-subword words_mask and spans."""
    reference, ours, _ = models
    texts = [text for text in TEXTS if text]
    prepared = reference.prepare_batch(texts, LABELS)
    expected = reference.collate_batch(prepared["input_x"], prepared["entity_types"])
    batch = ours.processor.prepare(texts, LABELS, bucket=False)
    for name in ("input_ids", "attention_mask", "words_mask", "span_idx", "span_mask"):
        np.testing.assert_array_equal(getattr(batch, name), expected[name].numpy(), err_msg=name)


@pytest.mark.parametrize("quantile", range(len(QUANTILES)))
@pytest.mark.parametrize(("flat_ner", "multi_label"), [(True, False), (False, True)])
def test_entities_match_gliner(models, quantile, flat_ner, multi_label):
    reference, ours, thresholds = models
    options = dict(threshold=thresholds[quantile], flat_ner=flat_ner, multi_label=multi_label)
    expected = reference.inference(TEXTS, LABELS, **options)
    assert sum(map(len, expected)) > 0  # the comparison is not between empty lists
    for ours_row, ref_row in zip(ours.inference(TEXTS, LABELS, batch_size=2, **options), expected, strict=True):
        assert_same_entities(ours_row, ref_row)
