"""gliner's fusion options against gliner 0.2.29: `post_fusion_schema` / `num_post_fusion_layers` (the cross fuser: run
by the bi-encoder, built and never run by the uni-encoder) and `fuse_layers` (the layers fuser of the text encoder and
of a bi-encoder's label encoder): logits on gliner's batch, entities, strict export both ways, gradients as training
computes them; every encoder family's layer outputs (padding included) against transformers'."""

from __future__ import annotations

import gliner
import numpy as np
import pytest
import torch

from gliner_jax import GLiNER
from gliner_jax.checkpoint_io import load_gliner, load_hf_encoder
from gliner_jax.testing.builders import build_reference, quantile_thresholds
from tests.utils.entities import assert_same_entities
from tests.utils.gliner_parity import (
    PER_TEXT_LABELS,
    TEXTS,
    assert_export_equals_reference,
    assert_logits_close,
    assert_training_network_matches,
    network_inputs,
    reference_batch,
)

# Cross fuser: every block kind, two layers (span bi-encoder); an unknown block name, whose parameters gliner builds and
# never runs (token bi-encoder); the uni-encoder, which builds the fuser and never runs it. Layers fuser: the
# uni-encoder's text encoder (BERT: padding states of its own); a bi-encoder's two encoders (DeBERTa text, BERT labels).
# Relation models: both options on the relation model's entity stage.
CASES = {
    "bi_span": dict(bi=True, span_mode="markerV0", post_fusion_schema="l2l-l2t-t2t-t2l", num_post_fusion_layers=2),
    "bi_token": dict(bi=True, span_mode="token_level", post_fusion_schema="t2l-x-l2l", num_post_fusion_layers=1),
    "uni_span": dict(bi=False, span_mode="markerV0", post_fusion_schema="l2t", num_post_fusion_layers=1),
    # Its logits' scale at logit_scale 5 sits near 1 and moved below it in one process (the BERT backbone differs
    # between processes): scaled further, so that assert_logits_close compares logits of scale > 1.
    "uni_span_fused_bert": dict(bi=False, text="bert", span_mode="markerV0", fuse_layers=True, logit_scale=15.0),
    "bi_token_fused": dict(bi=True, span_mode="token_level", fuse_layers=True),
    # A relation model builds both (its cross fuser unused), its layers fuser feeding the entity logits.
    "relex_fused": dict(
        bi=False, span_mode="markerV0", relations_layer="dot", fuse_layers=True, post_fusion_schema="l2l"
    ),
}
TRAINED = ("bi_span", "uni_span_fused_bert")  # one representative kind per option
# Through the pipeline: the fusers that run (the token bi-encoder's cross fuser runs the span one's code)
PREDICTED = ("bi_span", "uni_span_fused_bert", "bi_token_fused")
LABELS = ["person", "award", "city name", "organization", "date"]


@pytest.fixture(scope="module", params=list(CASES))
def models(request, gliner_backbone, family_backbone, labels_backbone, tmp_path_factory):
    """(reference gliner model, its directory, ours read from it, the case's name)."""
    directory = tmp_path_factory.mktemp(request.param)
    case = dict(CASES[request.param])
    if case.pop("bi"):
        case["labels_encoder"] = str(labels_backbone)
    text = case.pop("text", None)
    backbone = gliner_backbone if text is None else family_backbone(text)
    logit_scale = case.pop("logit_scale", 5.0)
    reference = build_reference(backbone, directory, logit_scale=logit_scale, hidden_size=32, max_width=3, **case)
    return reference, directory, GLiNER.from_pretrained(directory), request.param


def test_logits_match_reference(models):
    """Per-text label lists (padded label slots in the cross fuser's masks; rows of several lengths, whose padding the
    layers fuser averages over): gliner's logits. The bi-encoder's cross fuser runs (the logits differ without it),
    the uni-encoder's does not."""
    reference, directory, _, _ = models
    batch = reference_batch(reference, TEXTS, PER_TEXT_LABELS)
    with torch.no_grad():
        expected = reference.run_batch(batch).logits.numpy()
    model, config = load_gliner(directory)
    inputs = network_inputs(batch, config)
    if config.is_relex:  # its entity logits stay below 1 here: compared at 1e-5 absolute
        np.testing.assert_allclose(np.asarray(model(**inputs)), expected, rtol=0, atol=1e-5)
    else:
        assert_logits_close(np.asarray(model(**inputs)), expected)
    if config.post_fusion_schema and not config.fuse_layers:
        model.cross_fuser = None
        assert config.is_bi_encoder == (not np.allclose(np.asarray(model(**inputs)), expected, atol=1e-3))


def test_entities_match_reference(models):
    """Batched as gliner batches them (the layers fuser reads the batch's padded length)."""
    reference, _, ours, name = models
    if name not in PREDICTED:
        pytest.skip("a fuser that never runs, or the code of another case")
    (threshold,) = quantile_thresholds(reference, TEXTS, LABELS, (0.9,))
    expected = reference.inference(TEXTS, LABELS, threshold=threshold, flat_ner=False, batch_size=2)
    got = ours.inference(TEXTS, LABELS, threshold=threshold, flat_ner=False, batch_size=2)
    assert sum(map(len, expected)) > 0
    for ours_entities, ref_entities in zip(got, expected, strict=True):
        assert_same_entities(ours_entities, ref_entities)


def test_export_loads_in_gliner_strictly(models, tmp_path):
    """Our export is gliner's state dict key for key, the cross fuser's unused blocks and the label encoder's layers
    fuser included; gliner loads it strictly."""
    reference, _, ours, _ = models
    saved = assert_export_equals_reference(ours, reference, tmp_path)
    assert any(".layers_fuser." in k or "cross_fuser." in k for k in saved)
    loaded = gliner.GLiNER.from_pretrained(str(tmp_path), local_files_only=True, strict=True)
    assert loaded.config.post_fusion_schema == reference.config.post_fusion_schema


def test_training_network_matches_reference(models):
    """Gradients of every parameter as training computes them (the cross fuser's every block kind; the layers fuser's
    and every encoder layer's through it), torch autograd's: once per option."""
    reference, directory, _, name = models
    if name not in TRAINED:
        pytest.skip("one representative kind per option")
    _, ref_grads = assert_training_network_matches(reference, directory, TEXTS, PER_TEXT_LABELS)
    assert any(".layers_fuser." in k or k.startswith("cross_fuser.") for k in ref_grads)


@pytest.mark.parametrize("model_type", ["deberta-v2", "bert", "modernbert"])
def test_every_layer_matches_transformers(saved_encoder, model_type):
    """all_layers: transformers' hidden_states but the embeddings', padding positions included (what the layers fuser
    averages), on rows of different lengths; ModernBERT's sliding window leaves padding that sees no key."""
    reference, directory = saved_encoder(model_type=model_type)
    ours, _ = load_hf_encoder(directory)
    rng = np.random.default_rng(0)
    mask = (np.arange(40)[None] < np.array([[40], [13]])).astype(np.int64)
    ids = np.where(mask > 0, rng.integers(5, 200, mask.shape), reference.config.pad_token_id)
    with torch.no_grad():
        hidden = reference(torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True)
    expected = np.stack([state.numpy() for state in hidden.hidden_states[1:]])
    np.testing.assert_allclose(np.asarray(ours(ids, mask, all_layers=True)), expected, rtol=0, atol=1e-5)
