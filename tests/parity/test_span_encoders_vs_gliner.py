"""gliner 0.2.29's span context encoders (`span_encoder_config`: deberta-v2, modernbert, rnn) against the gliner
package: logits and gradients on its own batches, logits through our bucketed pipeline, entities, checkpoints both
ways; a bi-encoder; a relation model's entities and relations."""

from __future__ import annotations

import warnings

import gliner
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from gliner_jax import GLiNER
from gliner_jax.checkpoint_io import gliner_table, state_to_torch
from gliner_jax.testing.builders import build_reference, quantile_thresholds, relation_thresholds
from gliner_jax.training import data as data_lib
from gliner_jax.training.loss import LossConfig
from gliner_jax.training.step import loss_terms
from tests.utils.gliner_parity import (
    PER_TEXT_LABELS,
    SHARED_LABELS,
    TEXTS,
    assert_export_equals_reference,
    assert_gradients_close,
    assert_logits_close,
    assert_training_network_matches,
    reference_logits,
    train_without_dropout,
)

# Each kind once. rnn: two layers (torch's dropout between them), narrower than the head (both projections);
# deberta-v2 under markerV2, which reads the batch's last word slot (padding, contextualised in gliner too);
# modernbert: three layers (transformers 5.16 cannot build a one-layer ModernBertConfig), narrower; marked slow
# (our ModernBERT, fed embeddings).
CASES = {
    "rnn": dict(
        span_mode="markerV0",
        num_rnn_layers=0,
        span_encoder_config={"model_type": "rnn", "hidden_size": 24, "num_hidden_layers": 2},
    ),
    "deberta": dict(
        span_mode="markerV2",
        num_rnn_layers=1,
        span_encoder_config={"model_type": "deberta-v2", "num_attention_heads": 2},
    ),
    "modernbert": dict(
        span_mode="markerV0",
        num_rnn_layers=0,
        span_encoder_config={"model_type": "modernbert", "hidden_size": 32, "num_hidden_layers": 3},
    ),
}


@pytest.fixture(
    scope="module",
    params=[case if case != "modernbert" else pytest.param(case, marks=pytest.mark.slow) for case in CASES],
)
def reference(request, gliner_backbone, tmp_path_factory):
    """(reference gliner model, its saved directory)."""
    directory = tmp_path_factory.mktemp(request.param)
    case = CASES[request.param]
    ref = build_reference(gliner_backbone, directory, hidden_size=48, max_width=4, **case)
    assert ref.model.span_rep_layer.context_encoder.__class__.__name__ != "IdentityContextEncoder"
    return ref, directory


def test_pipeline_and_checkpoints_match(reference, tmp_path):
    """Our bucketed pipeline gives the reference's logits on texts of different lengths (gliner's encoder reads the
    padding of the batch's width); gliner's directory loads strictly, ours loads in gliner strictly and gives its
    logits. Gradients: test_training_loss_and_gradients_match (LSTM), test_network_gradients_match (the others)."""
    ref, directory = reference
    _, ref_logits = reference_logits(ref, TEXTS, PER_TEXT_LABELS)
    ours = GLiNER.from_pretrained(directory)
    _, bucketed = ours.batch_logits(TEXTS, PER_TEXT_LABELS, bucket=True)
    assert bucketed.shape[1] > ref_logits.shape[1]
    assert_logits_close(bucketed[:, : ref_logits.shape[1], :, : ref_logits.shape[3]], ref_logits)

    assert {m.torch_key for m in gliner_table(ours.config)} == set(ref.model.state_dict())
    exported = assert_export_equals_reference(ours, ref, tmp_path)
    reloaded = gliner.GLiNER.from_pretrained(str(tmp_path), local_files_only=True)
    reloaded.model.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)
    assert type(reloaded.model.span_rep_layer.context_encoder) is type(ref.model.span_rep_layer.context_encoder)
    np.testing.assert_array_equal(
        reference_logits(reloaded, TEXTS, SHARED_LABELS)[1], reference_logits(ref, TEXTS, SHARED_LABELS)[1]
    )


@pytest.mark.slow
@pytest.mark.parametrize("reference", ["deberta", "modernbert"], indirect=True)
def test_network_gradients_match(reference):
    """Our network as training runs it, on the reference's own batch: its logits and every parameter's gradient
    (ModernBERT's one-row token table, which nothing reads, gets zeros)."""
    ref, directory = reference
    grads, ref_grads = assert_training_network_matches(ref, directory, TEXTS, PER_TEXT_LABELS)
    assert any(".context_encoder." in name for name in ref_grads)
    unused = set(grads) - set(ref_grads)
    assert unused == {name for name in grads if name.endswith("tok_embeddings.weight")}
    for name in unused:
        assert not grads[name].any(), name


@pytest.mark.parametrize("reference", ["deberta"], indirect=True)
def test_entities_match_reference(reference):
    """gliner's entities with the same batch size (rows batched in order, as gliner batches them): the batch-dependent
    markerV2 under a DeBERTa encoder."""
    ref, directory = reference
    ours = GLiNER.from_pretrained(directory)
    threshold = quantile_thresholds(ref, TEXTS, SHARED_LABELS, (0.9,))[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ref.inference(TEXTS, SHARED_LABELS, batch_size=3, threshold=threshold)
    got = ours.inference(TEXTS, SHARED_LABELS, batch_size=3, threshold=threshold)
    assert sum(map(len, expected)) > 0
    for ours_row, ref_row in zip(got, expected, strict=True):
        assert [(e["start"], e["end"], e["label"]) for e in ours_row] == [
            (e["start"], e["end"], e["label"]) for e in ref_row
        ]
        np.testing.assert_allclose([e["score"] for e in ours_row], [e["score"] for e in ref_row], rtol=0, atol=1e-5)


def test_bi_encoder_and_one_way_rnn_match(gliner_backbone, labels_backbone, tmp_path_factory):
    """A bi-encoder span model (labels from their own encoder) with a one-way LSTM encoder: gliner's logits through
    our bucketed pipeline (per-text labels), and its directory loads here strictly."""
    directory = tmp_path_factory.mktemp("bi_rnn")
    encoder = {"model_type": "rnn", "bidirectional": False}
    ref = build_reference(
        gliner_backbone,
        directory,
        labels_encoder=str(labels_backbone),
        span_mode="markerV0",
        hidden_size=48,
        max_width=4,
        span_encoder_config=encoder,
    )
    assert (
        type(ref).__name__ == "BiEncoderSpanGLiNER"
        and not ref.model.span_rep_layer.context_encoder.encoder.bidirectional
    )
    ours = GLiNER.from_pretrained(directory)
    assert {m.torch_key for m in gliner_table(ours.config)} == set(ref.model.state_dict())
    _, ref_logits = reference_logits(ref, TEXTS, PER_TEXT_LABELS)
    _, logits = ours.batch_logits(TEXTS, PER_TEXT_LABELS, bucket=True)
    assert_logits_close(logits[:, : ref_logits.shape[1], :, : ref_logits.shape[3]], ref_logits)


RELEX_TEXTS = [
    "Marie Curie worked at the University of Paris with Pierre Curie in 1903.",
    "Apple was founded by Steve Jobs in Cupertino.",
    "Bill Gates founded Microsoft with Paul Allen in Albuquerque, New Mexico, in 1975.",
]
RELEX_LABELS = ["person", "organization", "city", "date"]
RELATIONS = ["works at", "founded by", "located in"]


RELEX_CASES = {  # the span model reads its entities from span representations; the token model from word states
    "span_deberta": dict(
        span_mode="markerV0", logit_scale=30.0, encoder={"model_type": "deberta-v2", "hidden_size": 32}
    ),
    "token_rnn": dict(span_mode="token_level", logit_scale=5.0, encoder={"model_type": "rnn", "hidden_size": 24}),
}


@pytest.mark.parametrize("case", list(RELEX_CASES))
def test_relation_model_matches(gliner_backbone, tmp_path_factory, case):
    """Relation models (gliner's UniEncoderSpanRelexGLiNER / UniEncoderTokenRelexGLiNER) whose entity
    representations, which the relation stage reads, come through a context encoder: gliner's entities and
    relations."""
    directory = tmp_path_factory.mktemp(f"relex_{case}")
    span_mode, logit_scale, encoder = RELEX_CASES[case].values()
    ref = build_reference(
        gliner_backbone,
        directory,
        span_mode=span_mode,
        hidden_size=48,
        max_width=4,
        relations_layer="dot",
        logit_scale=logit_scale,
        span_encoder_config=encoder,
    )
    with torch.no_grad():
        ref.model.pair_rep_layer[3].weight.mul_(30.0)
    ref.save_pretrained(directory)
    if span_mode == "token_level":
        threshold = quantile_thresholds(ref, RELEX_TEXTS, RELEX_LABELS, (0.95,))[0]
        options = dict(threshold=threshold, adjacency_threshold=0.0, relation_threshold=0.0)
    else:
        options = relation_thresholds(ref, RELEX_TEXTS, RELEX_LABELS, RELATIONS, entities=4, batch_size=2)
    expected = ref.inference(RELEX_TEXTS, RELEX_LABELS, relations=RELATIONS, batch_size=2, **options)
    got = GLiNER.from_pretrained(directory).inference(
        RELEX_TEXTS, RELEX_LABELS, relations=RELATIONS, batch_size=2, **options
    )
    assert sum(map(len, expected[1])) >= 2
    for ours_rows, ref_rows in zip(got, expected, strict=True):
        for ours_row, ref_row in zip(ours_rows, ref_rows, strict=True):
            assert [{k: v for k, v in e.items() if k != "score"} for e in ours_row] == [
                {k: v for k, v in e.items() if k != "score"} for e in ref_row
            ]
            np.testing.assert_allclose([e["score"] for e in ours_row], [e["score"] for e in ref_row], atol=1e-5)


def _words(text: str) -> list[str]:
    return text.split(" ")


RECORDS = [
    {
        "tokenized_text": _words("Marie Curie worked at the University of Paris with Pierre Curie in 1903 ."),
        "ner": [[8, 9, "person"], [0, 1, "person"], [4, 7, "organization"], [11, 11, "date"]],
    },
    {"tokenized_text": _words("Apple was founded by Steve Jobs in Cupertino ."), "ner": [[4, 5, "person"]]},
    {"tokenized_text": _words("Bill Gates lives in Medina ."), "ner": [[0, 1, "person"], [4, 4, "city"]]},
]
TRAIN_LABELS = [["person", "organization", "date"], ["company", "person", "city"], ["person", "city"]]
FOCAL = dict(alpha=0.6, gamma=1.5, prob_margin=0.0, label_smoothing=0.1)


@pytest.mark.parametrize("reference", ["rnn"], indirect=True)
def test_training_loss_and_gradients_match(reference):
    """gliner's training loss on its own collated batch of records (per-record labels, rows of different lengths)
    and its gradients; ours on the batch our data path builds from the same records."""
    ref, directory = reference
    collator = ref.data_collator_class(ref.config, data_processor=ref.data_processor, prepare_labels=True)
    ref_batch = collator(RECORDS, entity_types=TRAIN_LABELS)
    ref.model.eval()  # dropout off
    ref.model.zero_grad()
    with torch.enable_grad():
        ref_loss = ref.model(**ref_batch, **FOCAL, reduction="mean", negatives=1.0, masking="none").loss
        ref_loss.backward()
    ref_grads = {name: p.grad.numpy() for name, p in ref.model.named_parameters() if p.grad is not None}

    ours = GLiNER.from_pretrained(directory)
    records = [data_lib.normalize_record(record) for record in RECORDS]
    batch = data_lib.collate(records, TRAIN_LABELS, ours.processor)
    model = ours.model
    train_without_dropout(model)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    inputs = {name: jnp.asarray(value) for name, value in batch.items()}

    def loss(params):
        merged = nnx.merge(graphdef, params, jax.tree.map(jnp.asarray, rest))
        return loss_terms(merged, inputs, LossConfig(**FOCAL, reduction="mean", masking="none"))[0]

    value, gradients = jax.value_and_grad(loss)(params)
    np.testing.assert_allclose(float(value), float(ref_loss), rtol=2e-5)
    nnx.update(model, gradients)
    grads = state_to_torch(model, gliner_table(ours.config))
    assert any(".context_encoder." in name for name in ref_grads)
    assert_gradients_close(grads, ref_grads)
