"""Inference packing (`GLiNER.pack_tokens`): several texts per encoder row, attention inside each text, positions
restarting in each; the entities equal gliner's unpacked inference, and ours unpacked, on every encoder family."""

from __future__ import annotations

import numpy as np
import pytest

from gliner_jax import GLiNER
from gliner_jax.modeling.encoders.deberta import DebertaConfig
from gliner_jax.packing import pack
from gliner_jax.testing.builders import build_reference, quantile_thresholds
from gliner_jax.text.wire import WireSizes, from_wire, to_wire
from tests.utils.entities import assert_same_entities

SHORT = [
    "Marie Curie won the Nobel Prize in Physics in 1903, and again in 1911!",
    "Apple",
    "",
    "Dr. Smith-Jones (WHO) met Angela Merkel in Geneva at 10:30am on Tuesday with 3 colleagues from the UN.",
    "Zürich, São Paulo & Kraków: Müller-Lüdenscheidt_GmbH paid $1,200.50 on 3/14/2015.",
    "Paris in May",
    "Barack Obama visited Berlin .",
]
# Longer than max_len (40 words): read in overlapping windows, each a row of its own.
LONG = " ".join(SHORT[0].split() + SHORT[3].split() + SHORT[4].split() + SHORT[6].split())
TEXTS = [*SHORT, LONG, *SHORT[::-1]]
LABELS = ["person", "award", "city name", "organization", "date"]
CONFIG = dict(hidden_size=48, max_width=4, max_len=40)
slow = pytest.mark.slow


@pytest.fixture(
    scope="module",
    params=[
        ("deberta-v2", "markerV0"),
        pytest.param(("deberta-v2", "token_level"), marks=slow),
        pytest.param(("bert", "markerV0"), marks=slow),
        pytest.param(("modernbert", "markerV0"), marks=slow),
    ],
    ids=lambda p: "-".join(p),
)
def models(request, gliner_backbone, family_backbone, tmp_path_factory):
    """(gliner reference, our model of its directory, a threshold at the 0.97 quantile of its scores)."""
    family, span_mode = request.param
    backbone = gliner_backbone if family == "deberta-v2" else family_backbone(family)
    directory = tmp_path_factory.mktemp(f"packing-{family}-{span_mode}")
    reference = build_reference(backbone, directory, logit_scale=4.0, span_mode=span_mode, **CONFIG)
    threshold = quantile_thresholds(reference, SHORT, LABELS, (0.97,))[0]
    return reference, GLiNER.from_pretrained(directory), threshold


@pytest.mark.parametrize(("flat_ner", "multi_label"), [(True, False), (False, True)])
def test_packed_entities_equal_unpacked_and_gliner(models, flat_ner, multi_label):
    reference, ours, threshold = models
    options = dict(threshold=threshold, flat_ner=flat_ner, multi_label=multi_label, batch_size=32)  # one batch
    ours.pack_tokens = None
    unpacked = ours.inference(TEXTS, LABELS, **options)
    ours.pack_tokens = 64
    packed = ours.inference(TEXTS, LABELS, **options)
    assert sum(map(len, unpacked)) > 0  # the comparison is not between empty lists
    for got, want in zip(packed, unpacked, strict=True):
        assert_same_entities(got, want)
    # gliner reads the first max_len words of a text (no windows): compare the texts that fit.
    expected = reference.inference(SHORT, LABELS, threshold=threshold, flat_ner=flat_ner, multi_label=multi_label)
    for got, want in zip(packed[: len(SHORT)], expected, strict=True):
        assert_same_entities(got, want)


def test_gliner_packing_agrees_on_deberta(models):
    """gliner's own inference packing finds what its unpacked inference finds on DeBERTa (relative positions), and
    so do we packed."""
    from gliner.infer_packing import InferencePackingConfig

    reference, ours, threshold = models
    if not isinstance(ours.config.encoder_config, DebertaConfig):
        # gliner 0.2.29 raises here: its packed BERT call drops input_ids, and its packed ModernBERT call needs
        # ModernBertModel._maybe_set_compile, which transformers 5 lacks.
        pytest.skip("gliner's inference packing runs on DeBERTa only")
    ours.pack_tokens = 128  # gliner cuts a text longer than max_length to it; none is here
    packing = InferencePackingConfig(max_length=128)
    expected = reference.inference(SHORT, LABELS, threshold=threshold, batch_size=8, packing_config=packing)
    for got, want in zip(ours.inference(SHORT, LABELS, threshold=threshold, batch_size=8), expected, strict=True):
        assert_same_entities(got, want)


def test_packed_batch_holds_several_texts_per_row(models):
    """A batch of short texts takes fewer encoder rows, each slot's arrays are its text's, and every text is
    placed once."""
    _, ours, _ = models
    batch = ours.processor.prepare(SHORT, LABELS, batch_size=8)
    arrays = {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "words_mask": batch.words_mask,
        "word_counts": batch.text_lengths,
        "example": np.arange(1, 9),
    }
    packed = pack(arrays, row_length=64, pad_id=ours.tokenizer.pad_token_id)
    rows, slots = packed["example"].shape
    assert rows < len(SHORT) - 1 and slots > 1  # one text is empty: it takes no slot
    placed = sorted(packed["example"][packed["example"] > 0].tolist())
    assert placed == [i + 1 for i, text in enumerate(SHORT) if text]
    for r in range(rows):
        for s in range(slots):
            example = packed["example"][r, s] - 1
            if example < 0:
                continue
            segment = packed["attention_mask"][r] == s + 1
            real = batch.attention_mask[example] > 0
            np.testing.assert_array_equal(packed["input_ids"][r, segment], batch.input_ids[example, real])
            np.testing.assert_array_equal(packed["words_mask"][r, segment], batch.words_mask[example, real])
            assert packed["word_counts"][r, s] == batch.text_lengths[example]


DESCRIBED = {"person": "a human being", "award": "a prize", "city name": "a city", "organization": "a company"}


@pytest.mark.parametrize(
    ("span_mode", "pooling"),
    [
        ("token_level", "last"),
        pytest.param("markerV1", "mean", marks=slow),
        pytest.param("markerV0", "max", marks=slow),
    ],
)
def test_packed_pooling_and_descriptions_equal_gliner(gliner_backbone, tmp_path, span_mode, pooling):
    """Packed rows pool each text's subtokens as gliner's `subtoken_pooling` does and read {label: description}
    prompts, entities carrying the labels: gliner's entities, batched as gliner batches them (markerV1 reads its
    batch's longest row), over several batches; a long text's windows are merged as unpacked."""
    config = dict(CONFIG, hidden_size=32, span_mode=span_mode, subtoken_pooling=pooling)
    reference = build_reference(gliner_backbone, tmp_path, logit_scale=4.0, **config)
    threshold = quantile_thresholds(reference, SHORT, list(DESCRIBED.values()), (0.95,))[0]
    ours = GLiNER.from_pretrained(tmp_path)
    options = dict(threshold=threshold, batch_size=3)
    expected = reference.inference(SHORT, DESCRIBED, **options)
    assert sum(map(len, expected)) > 0 and {e["label"] for row in expected for e in row} <= set(DESCRIBED)
    unpacked = ours.inference([*SHORT, LONG], DESCRIBED, **options)
    ours.pack_tokens = 64
    packed = ours.inference([*SHORT, LONG], DESCRIBED, **options)
    for got, want in zip(packed, [*expected, unpacked[-1]], strict=True):
        assert_same_entities(got, want)


def test_refusals(models):
    _, ours, _ = models
    ours.pack_tokens = 0
    with pytest.raises(ValueError, match="pack_tokens"):
        ours.inference(SHORT, LABELS)
    ours.pack_tokens = None


def test_wire_array_takes_apart_to_the_packed_layout():
    """The per-slot counts of a packed batch become slot-shaped arrays for `GLiNERModel`."""
    word_counts, label_counts = np.array([[3, 1, 0]]), np.array([[2, 2, 0]])
    tokens = np.ones((1, 5), np.int32)
    arrays = from_wire(to_wire(tokens, tokens, tokens, word_counts, label_counts), WireSizes(4, 3, 2, 3))
    assert arrays["words_valid"].tolist() == [[[True] * 3 + [False], [True] + [False] * 3, [False] * 4]]
    assert arrays["labels_valid"].tolist() == [[[True, True, False], [True, True, False], [False] * 3]]
    assert arrays["span_idx"].shape == (1, 3, 8, 2) and arrays["span_mask"].shape == (1, 3, 8)
    assert arrays["span_mask"][0, 0].tolist() == [True] * 5 + [False] * 3  # spans (0,0) (0,1) (1,1) (1,2) (2,2)
