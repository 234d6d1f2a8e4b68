"""gliner's fusion options against gliner 0.2.29: `post_fusion_schema` / `num_post_fusion_layers` (the cross fuser: run
by the bi-encoder, built and never run by the uni-encoder): logits on gliner's batch, entities, strict export both
ways, gradients as training computes them."""

from __future__ import annotations

import gliner
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from gliner_jax import GLiNER
from gliner_jax.checkpoint_io import load_gliner
from gliner_jax.testing.builders import build_reference, quantile_thresholds
from tests.utils.entities import assert_same_entities
from tests.utils.gliner_parity import (
    PER_TEXT_LABELS,
    TEXTS,
    assert_logits_close,
    assert_training_network_matches,
    network_inputs,
    reference_batch,
)

# Every block kind, two layers (span bi-encoder); an unknown block name, whose parameters gliner builds and never runs
# (token bi-encoder); the uni-encoder, which builds the fuser and never runs it.
CASES = {
    "bi_span": dict(bi=True, span_mode="markerV0", post_fusion_schema="l2l-l2t-t2t-t2l", num_post_fusion_layers=2),
    "bi_token": dict(bi=True, span_mode="token_level", post_fusion_schema="t2l-x-l2l", num_post_fusion_layers=1),
    "uni_span": dict(bi=False, span_mode="markerV0", post_fusion_schema="l2t", num_post_fusion_layers=1),
}
LABELS = ["person", "award", "city name", "organization", "date"]


@pytest.fixture(scope="module", params=list(CASES))
def models(request, gliner_backbone, labels_backbone, tmp_path_factory):
    """(reference gliner model, its directory, ours read from it)."""
    directory = tmp_path_factory.mktemp(request.param)
    case = dict(CASES[request.param])
    if case.pop("bi"):
        case["labels_encoder"] = str(labels_backbone)
    reference = build_reference(gliner_backbone, directory, logit_scale=5.0, hidden_size=32, max_width=3, **case)
    return reference, directory, GLiNER.from_pretrained(directory)


def test_logits_match_reference(models):
    """Per-text label lists (padded label slots in the fuser's masks): gliner's logits; the bi-encoder's fuser runs
    (the logits differ without it), the uni-encoder's does not."""
    reference, directory, _ = models
    batch = reference_batch(reference, TEXTS, PER_TEXT_LABELS)
    with torch.no_grad():
        expected = reference.run_batch(batch).logits.numpy()
    model, config = load_gliner(directory)
    assert model.cross_fuser is not None
    inputs = network_inputs(batch, config)
    assert_logits_close(np.asarray(model(**inputs)), expected)
    model.cross_fuser = None
    assert config.is_bi_encoder == (not np.allclose(np.asarray(model(**inputs)), expected, atol=1e-3))


def test_entities_match_reference(models):
    reference, _, ours = models
    (threshold,) = quantile_thresholds(reference, TEXTS, LABELS, (0.9,))
    expected = reference.inference(TEXTS, LABELS, threshold=threshold, flat_ner=False)
    got = ours.inference(TEXTS, LABELS, threshold=threshold, flat_ner=False, batch_size=2)
    assert sum(map(len, expected)) > 0
    for ours_entities, ref_entities in zip(got, expected, strict=True):
        assert_same_entities(ours_entities, ref_entities)


def test_export_loads_in_gliner_strictly(models, tmp_path):
    """Our export is gliner's state dict key for key, the fuser's unused blocks included; gliner loads it strictly."""
    reference, _, ours = models
    ours.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    expected = reference.model.state_dict()
    assert saved.keys() == expected.keys() and any(key.startswith("cross_fuser.") for key in saved)
    for key, value in expected.items():
        np.testing.assert_array_equal(saved[key], value.numpy(), err_msg=key)
    loaded = gliner.GLiNER.from_pretrained(str(tmp_path), local_files_only=True, strict=True)
    assert loaded.config.post_fusion_schema == reference.config.post_fusion_schema


def test_training_network_matches_reference(models):
    """Gradients of every parameter as training computes them (the fuser's every block kind), torch autograd's: once,
    on the span bi-encoder (the token bi-encoder runs the same fuser; the uni-encoder none)."""
    reference, directory, _ = models
    if reference.config.post_fusion_schema != CASES["bi_span"]["post_fusion_schema"]:
        pytest.skip("one representative kind: the span bi-encoder")
    grads, ref_grads = assert_training_network_matches(reference, directory, TEXTS, PER_TEXT_LABELS)
    assert any(name.startswith("cross_fuser.") for name in ref_grads)
