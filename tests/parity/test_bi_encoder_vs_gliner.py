"""Bi-encoder GLiNER (span and token) against gliner's BiEncoderSpanGLiNER / BiEncoderTokenGLiNER: logits, batches,
entities, precomputed label embeddings, export both ways, gradients, static shapes and bad input."""

from __future__ import annotations

import json
import shutil

import gliner
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from gliner_jax import GLiNER
from gliner_jax.checkpoint_io import CheckpointMismatchError, load_gliner
from gliner_jax.hub import LABELS_TOKENIZER_DIR
from gliner_jax.testing.builders import build_reference, quantile_thresholds
from tests.utils.entities import assert_same_entities
from tests.utils.gliner_parity import (
    assert_export_equals_reference,
    assert_logits_close,
    assert_training_network_matches,
    network_inputs,
    reference_batch,
)
from tests.utils.programs import compiled_programs

# Text encoders: DeBERTa-v3 (64 wide) as knowledgator's gliner-bi-*-v1.0, ModernBERT (48) as their v2.0 / modern
# bi-encoders; labels: BERT (48 wide). hidden_size picks which of the two projections exist. Each text encoder, head,
# and projection layout once.
CASES = {
    "span_deberta_labels_projection_rnn1": dict(
        text="deberta-v2", span_mode="markerV0", hidden_size=64, num_rnn_layers=1, max_width=4
    ),
    "token_deberta_both_projections_rnn1": dict(
        text="deberta-v2", span_mode="token_level", hidden_size=40, num_rnn_layers=1
    ),
    "span_modernbert_no_projection_no_rnn": dict(
        text="modernbert", span_mode="markerV0", hidden_size=48, num_rnn_layers=0, max_width=3
    ),
}
TEXTS = [
    "Marie Curie won the Nobel Prize in Physics in 1903, and again in 1911!",
    "Zürich, São Paulo & Kraków: Müller-Lüdenscheidt_GmbH paid $1,200.50 on 3/14/2015.",
    "   ",
    "Apple",
    "Dr. Smith-Jones (WHO) met Angela Merkel in Geneva at 10:30am on Tuesday with 3 colleagues from the UN.",
]
LABELS = ["person", "award", "city name", "organization", "date"]
# Per-text label lists of different sizes, overlapping, in different orders (gliner gathers them from one table).
PER_TEXT_LABELS = [
    ["person", "award", "year"],
    ["city", "company name", "amount of money", "date"],
    ["person"],
    ["organization"],
    ["date", "person", "international organization", "city", "time of day"],
]
# One threshold, low enough for many overlapping candidates: higher ones run the same decoding on fewer.
QUANTILES = (0.9,)


@pytest.fixture(scope="module", params=list(CASES))
def models(request, gliner_backbone, family_backbone, labels_backbone, tmp_path_factory):
    """(reference gliner bi-encoder, its directory, our GLiNER read from it, thresholds at QUANTILES)."""
    directory = tmp_path_factory.mktemp(request.param)
    case = dict(CASES[request.param])
    text = case.pop("text")
    backbone = gliner_backbone if text == "deberta-v2" else family_backbone(text)
    # logit_scale 5: scores spread below 1 (at 30 the top quantiles sit within float32 rounding of 1, and which
    # spans pass them turns on rounding).
    reference = build_reference(backbone, directory, labels_encoder=str(labels_backbone), logit_scale=5.0, **case)
    thresholds = quantile_thresholds(reference, [t for t in TEXTS if t.strip()], LABELS, QUANTILES)
    return reference, directory, GLiNER.from_pretrained(directory), thresholds


def test_reference_is_a_bi_encoder(models):
    reference, _, ours, _ = models
    expected = "BiEncoderTokenGLiNER" if reference.config.span_mode == "token_level" else "BiEncoderSpanGLiNER"
    assert type(reference).__name__ == expected
    assert ours.config.is_bi_encoder and ours.model.labels_encoder is not None
    assert type(reference.model.token_rep_layer.labels_encoder.model).__name__ == "BertModel"
    assert type(ours.config.labels_encoder_config).__name__ == "BertConfig"
    text_model = type(reference.model.token_rep_layer.bert_layer.model).__name__
    assert (
        text_model
        == {"DebertaConfig": "DebertaV2Model", "ModernBertConfig": "ModernBertModel"}[
            type(ours.config.encoder_config).__name__
        ]
    )


def test_network_matches_reference_on_reference_batch(models):
    """Our network (eval mode) fed gliner's own collated bi-encoder batch with shared labels (a label table, no gather
    indices) gives its logits; per-text labels: test_training_network_matches_reference."""
    reference, directory, _, _ = models
    batch = reference_batch(reference, TEXTS, LABELS)
    with torch.no_grad():
        expected = reference.run_batch(batch).logits.numpy()
    model, config = load_gliner(directory)
    assert_logits_close(np.asarray(model(**network_inputs(batch, config))), expected)


@pytest.mark.parametrize("labels", [LABELS, PER_TEXT_LABELS], ids=["shared", "per_text"])
def test_pipeline_matches_reference(models, labels):
    """Texts and labels in, logits out, our batches bucketed (padded label table, label tokens, rows, words): the
    reference's logits on its region."""
    reference, _, ours, _ = models
    texts = [text for text in TEXTS if text.strip()]
    labels = labels if labels is LABELS else [row for row, text in zip(labels, TEXTS, strict=True) if text.strip()]
    with torch.no_grad():
        expected = reference.run_batch(reference_batch(reference, texts, labels)).logits.numpy()
    _, logits = ours.batch_logits(texts, labels, bucket=True)
    if ours.config.span_mode == "markerV0":  # [B, W, K, C]
        region = logits[:, : expected.shape[1], :, : expected.shape[3]]
    else:  # [B, W, C, 3]
        region = logits[:, : expected.shape[1], : expected.shape[2]]
    assert_logits_close(region, expected)


@pytest.mark.parametrize("labels", [LABELS, PER_TEXT_LABELS], ids=["shared", "per_text"])
def test_processor_matches_reference_collation(models, labels):
    """Without buckets our batch holds gliner's collated tensors: words alone (no prompt), the distinct labels
    tokenized by the label tokenizer, each row's labels placed by index."""
    reference, _, ours, _ = models
    expected = reference_batch(reference, TEXTS, labels)
    batch = ours.processor.prepare(TEXTS, labels, bucket=False)
    live = [i for i, text in enumerate(TEXTS) if text.strip()]  # gliner drops empty texts; ours keeps neutral rows
    for name in ("input_ids", "attention_mask", "words_mask"):
        np.testing.assert_array_equal(getattr(batch, name)[live], expected[name].numpy(), err_msg=name)
    for name in ("labels_input_ids", "labels_attention_mask"):
        np.testing.assert_array_equal(getattr(batch, name), expected[name].numpy(), err_msg=name)
    if "labels_gather_indices" in expected:
        valid = expected["prompts_embedding_mask"].numpy().astype(bool)
        np.testing.assert_array_equal(batch.labels_valid[live], valid)
        np.testing.assert_array_equal(
            np.where(valid, batch.labels_index[live], 0), np.where(valid, expected["labels_gather_indices"].numpy(), 0)
        )
    else:
        assert (batch.labels_index[live] == np.arange(len(LABELS))).all() and batch.labels_valid[live].all()
    assert (batch.input_ids < ours.config.encoder_config.vocab_size).all()


@pytest.mark.parametrize("quantile", range(len(QUANTILES)))
@pytest.mark.parametrize(("flat_ner", "multi_label"), [(True, False), (False, False), (False, True)])
def test_entities_match_reference(models, quantile, flat_ner, multi_label):
    """inference equals gliner's, with one label list and with one list per text."""
    reference, _, ours, thresholds = models
    options = dict(threshold=thresholds[quantile], flat_ner=flat_ner, multi_label=multi_label)
    for labels in (LABELS, PER_TEXT_LABELS):
        expected = reference.inference(TEXTS, labels, **options)
        got = ours.inference(TEXTS, labels, batch_size=2, **options)
        # The comparison is not between empty lists (the thresholds are quantiles of the scores for LABELS; per-text
        # lists, fewer labels per text, may have no score above the higher ones).
        assert sum(map(len, expected)) > 0 or (labels is PER_TEXT_LABELS and quantile > 0)
        for ours_entities, ref_entities in zip(got, expected, strict=True):
            assert_same_entities(ours_entities, ref_entities)


def test_precomputed_label_embeddings_match_reference(models):
    """encode_labels equals gliner's; predict_with_embeds / batch_predict_with_embeds give gliner's entities from
    ours or from gliner's embeddings, and the entities of predicting from the label strings."""
    reference, _, ours, thresholds = models
    embeddings = ours.encode_labels(LABELS, batch_size=2)
    expected = reference.encode_labels(LABELS, batch_size=2).numpy()
    assert embeddings.shape == expected.shape == (len(LABELS), ours.config.hidden_size)
    np.testing.assert_allclose(embeddings, expected, rtol=0, atol=1e-5 * np.abs(expected).max())

    threshold = thresholds[0]
    for text in TEXTS:
        want = reference.predict_with_embeds(text, torch.from_numpy(expected), LABELS, threshold=threshold)
        assert_same_entities(ours.predict_with_embeds(text, embeddings, LABELS, threshold=threshold), want)
        assert_same_entities(
            ours.predict_with_embeds(text, torch.from_numpy(expected), LABELS, threshold=threshold), want
        )
    batched = ours.batch_predict_with_embeds(TEXTS, embeddings, LABELS, threshold=threshold, batch_size=3)
    for got, expected in zip(batched, ours.inference(TEXTS, LABELS, threshold=threshold), strict=True):
        assert_same_entities(got, expected)  # the label encoder ran on other shapes: float rounding apart
    assert sum(map(len, batched)) > 0


@pytest.mark.parametrize("models", ["span_deberta_labels_projection_rnn1"], indirect=True)
def test_precomputed_prompts_mode_scores_the_config_labels(models, tmp_path):
    """A bi-encoder config in `precomputed_prompts_mode` (gliner cannot compress a bi-encoder, but runs such a
    config): gliner's collator gives every text the labels of `id_to_classes`, which the label encoder reads,
    whatever labels are given; ours alike, read from a directory (gliner itself then finds nothing: JSON turns the
    id_to_classes keys into strings, which its collator does not map back)."""
    reference, directory, _, (threshold,) = models
    stored = LABELS[:3]
    expected = reference.inference(TEXTS, stored, threshold=threshold, flat_ner=False)
    assert sum(map(len, expected)) > 0
    reference.config.precomputed_prompts_mode, reference.config.id_to_classes = True, dict(enumerate(stored, 1))
    try:
        in_mode = reference.inference(TEXTS, ["anything"], threshold=threshold, flat_ner=False)
    finally:
        reference.config.precomputed_prompts_mode = reference.config.id_to_classes = None
    copy = shutil.copytree(directory, tmp_path / "model")
    config = json.loads((copy / "gliner_config.json").read_text())
    config.update(precomputed_prompts_mode=True, id_to_classes=dict(enumerate(stored, 1)))
    (copy / "gliner_config.json").write_text(json.dumps(config))
    ours = GLiNER.from_pretrained(copy)
    got = ours.inference(TEXTS, ["anything"], threshold=threshold, flat_ner=False, batch_size=2)
    for ours_entities, ref_entities, mode_entities in zip(got, expected, in_mode, strict=True):
        assert_same_entities(mode_entities, ref_entities)
        assert_same_entities(ours_entities, ref_entities)
    with pytest.raises(ValueError, match="Label descriptions are not supported"):
        ours.inference(TEXTS[:1], {"person": "a human being"})


def test_repeated_labels_keep_their_own_embedding_rows(models):
    """Hand-checked semantics: with a label repeated, each label keeps its first row (gliner would pair the
    de-duplicated labels with the first rows, shifting every label after the repeat)."""
    _, _, ours, thresholds = models
    labels = ["person", "person", "award", "date", "award"]
    embeddings = ours.encode_labels(labels)
    threshold = thresholds[0]
    for text in TEXTS:
        expected = ours.predict_entities(text, ["person", "award", "date"], threshold=threshold)
        assert_same_entities(ours.predict_with_embeds(text, embeddings, labels, threshold=threshold), expected)


def test_inference_stream_gives_the_entities_of_inference(models):
    """Chunks streamed through one pipeline (one label table for the stream) give `inference`'s entities."""
    _, _, ours, thresholds = models
    options = dict(threshold=thresholds[0], flat_ner=False, batch_size=2)
    chunks = [TEXTS[:2], TEXTS[2:3], TEXTS[3:]]
    streamed = [entities for chunk in ours.inference_stream(chunks, LABELS, **options) for entities in chunk]
    expected = ours.inference(TEXTS, LABELS, **options)
    assert sum(map(len, expected)) > 0
    for got, want in zip(streamed, expected, strict=True):
        assert_same_entities(got, want)


def test_inference_packing_gives_the_entities_unpacked(models):
    """With pack_tokens several texts share an encoder row (each row's labels_index packed with it, per slot): the
    entities of unpacked inference, per-text label lists and label embeddings given alike."""
    _, _, ours, thresholds = models
    options = dict(threshold=thresholds[0], batch_size=4)
    embeddings = ours.encode_labels(LABELS)
    expected = [
        ours.inference(TEXTS, PER_TEXT_LABELS, **options),
        ours.batch_predict_with_embeds(TEXTS, embeddings, LABELS, **options),
    ]
    ours.pack_tokens = 64
    try:
        got = [
            ours.inference(TEXTS, PER_TEXT_LABELS, **options),
            ours.batch_predict_with_embeds(TEXTS, embeddings, LABELS, **options),
        ]
    finally:
        ours.pack_tokens = None
    assert sum(map(len, expected[1])) > 0
    for packed, unpacked in zip(got, expected, strict=True):
        for ours_entities, want in zip(packed, unpacked, strict=True):
            assert_same_entities(ours_entities, want)


def test_export_loads_in_gliner_strictly(models, tmp_path):
    """Our export is gliner's state dict key for key (label encoder, projections, the unused BiLSTM), with its
    label tokenizer in labels_tokenizer/; gliner loads it strictly and computes the reference's logits, and our
    native format round-trips."""
    reference, _, ours, _ = models
    assert_export_equals_reference(ours, reference, tmp_path / "torch")
    assert (tmp_path / "torch" / LABELS_TOKENIZER_DIR / "tokenizer_config.json").is_file()
    config = json.loads((tmp_path / "torch" / "gliner_config.json").read_text())
    assert config["labels_encoder_config"]["hidden_size"] == 48 and config["vocab_size"] == -1

    loaded = gliner.GLiNER.from_pretrained(str(tmp_path / "torch"), local_files_only=True, strict=True)
    assert type(loaded).__name__ == type(reference).__name__
    batch = reference_batch(reference, TEXTS, PER_TEXT_LABELS)
    with torch.no_grad():
        np.testing.assert_array_equal(loaded.run_batch(batch).logits.numpy(), reference.run_batch(batch).logits.numpy())

    ours.save_pretrained(tmp_path / "native", native=True)
    native = GLiNER.from_pretrained(tmp_path / "native")
    _, first = ours.batch_logits(TEXTS, LABELS)
    _, again = native.batch_logits(TEXTS, LABELS)
    np.testing.assert_array_equal(again, first)


def test_training_network_matches_reference(models):
    """Per-text labels (gliner's gather indices) through our network as training runs it: the reference's logits, and
    gradients of every parameter, the label encoder's included, equal to torch autograd's."""
    reference, directory, _, _ = models
    assert "labels_gather_indices" in reference_batch(reference, TEXTS, PER_TEXT_LABELS)  # the per-row layout
    ours, ref_grads = assert_training_network_matches(reference, directory, TEXTS, PER_TEXT_LABELS)
    assert any(".labels_encoder." in name for name in ref_grads)
    unused = [name for name in ours if name.startswith("rnn.")]  # built, never run: no gradient
    assert all(not ours[name].any() for name in unused)
    assert not any(name in ref_grads for name in unused)


def test_label_encoder_compiles_few_programs(models):
    """Label counts and lengths vary within their buckets (3 to 8 label tokens): one label-encoder program and one
    forward program. The count is real: a label of 9 to 16 tokens compiles one more label-encoder program. Labels
    are chosen by their token counts: the tiny tokenizer is trained anew each session, and its merges can vary."""
    _, _, ours, _ = models
    phrases = [
        "person",
        "award",
        "date",
        "organization",
        "name of the city",
        "city name",
        "the year of birth",
        "an international organization",
        "city name of the country",
    ]
    tokens = {phrase: len(ours.labels_tokenizer(phrase)["input_ids"]) for phrase in phrases}
    short = sorted((phrase for phrase in phrases if tokens[phrase] <= 8), key=tokens.get)
    long = next(phrase for phrase in phrases if 8 < tokens[phrase] <= 16)
    assert len(short) >= 4 and tokens[short[-1]] > tokens[short[0]], tokens  # lengths vary inside the bucket
    ours.inference(TEXTS[:1], short[:1], batch_size=2)
    before = compiled_programs()
    for labels in (short[:2], short[-2:], short[1:2], short[:4]):
        ours.inference(TEXTS[:1], labels, batch_size=2)
    assert compiled_programs() == before
    ours.inference(TEXTS[:1], [long], batch_size=2)  # the next label-token bucket
    assert compiled_programs() == before + 1


def test_bad_input(models, tmp_path):
    _, _, ours, _ = models
    embeddings = ours.encode_labels(LABELS)
    with pytest.raises(ValueError, match=r"shape \(4, "):
        ours.predict_with_embeds(TEXTS[0], embeddings[:4], LABELS)
    with pytest.raises(ValueError, match="one label list"):
        ours.batch_predict_with_embeds(TEXTS[:2], embeddings, [LABELS, LABELS])
    with pytest.raises(NotImplementedError, match="packing_config"):
        ours.batch_predict_with_embeds(TEXTS[:1], embeddings, LABELS, packing_config=object())
    with pytest.raises(ValueError, match="label strings"):
        ours.encode_labels("person")
    # gliner adds <<ENT>> to a bi-encoder's text tokenizer without an embedding row for it (its word splitter cuts
    # the string apart in a text; a pre-split word stays whole)
    assert ours.tokenizer.convert_tokens_to_ids("<<ENT>>") >= ours.config.encoder_config.vocab_size
    with pytest.raises(ValueError, match=r"<<ENT>>.*no embedding"):
        ours.predict_words([["Marie", "<<ENT>>", "Curie"]], LABELS)

    bad = tmp_path / "bad"
    ours.save_pretrained(bad)
    tensors = load_file(bad / "model.safetensors")
    key = "token_rep_layer.labels_encoder.model.embeddings.word_embeddings.weight"
    save_file({k: v for k, v in tensors.items() if k != key}, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=key):
        GLiNER.from_pretrained(bad)


def test_uni_encoder_has_no_label_embeddings(gliner_backbone, tmp_path):
    build_reference(gliner_backbone, tmp_path, span_mode="markerV0", hidden_size=48, max_width=3)
    uni = GLiNER.from_pretrained(tmp_path)
    with pytest.raises(NotImplementedError, match="bi-encoder"):
        uni.encode_labels(LABELS)
    with pytest.raises(NotImplementedError, match="bi-encoder"):
        uni.predict_with_embeds(TEXTS[0], np.zeros((len(LABELS), 48), np.float32), LABELS)
