"""Every span mode and subtoken pooling of gliner 0.2.29 against the gliner package: logits on its own batches and
through our (bucketed) pipeline, entities, checkpoints both ways, gradients. markerV0 / token_level with "first"
pooling are covered at length in test_model_vs_gliner.py and test_inference_vs_gliner.py."""

from __future__ import annotations

import warnings

import gliner
import numpy as np
import pytest
import torch

from gliner_jax import GLiNER
from gliner_jax.checkpoint_io import gliner_table
from gliner_jax.config import SPAN_MODES
from gliner_jax.modeling.span_modes import BATCH_DEPENDENT_MODES
from gliner_jax.testing.builders import build_reference, quantile_thresholds
from tests.utils.gliner_parity import (
    PER_TEXT_LABELS,
    SHARED_LABELS,
    TEXTS,
    assert_export_equals_reference,
    assert_logits_close,
    assert_training_network_matches,
    reference_logits,
)

NEW_MODES = [mode for mode in SPAN_MODES if mode not in ("markerV0", "token_level")]
# Each mode once; the BiLSTM on or off (padding words are zeros either way), with or without the encoder projection.
CASES = {
    mode: dict(span_mode=mode, hidden_size=48 if i % 2 else 64, num_rnn_layers=i % 3 % 2, max_width=4)
    for i, mode in enumerate(NEW_MODES)
}
# Pooling over subtokens (the tiny tokenizer splits most words into several): each kind once, in a span and in a
# token model (one pooling function feeds both heads).
CASES |= {
    f"{pooling}_{mode}": dict(span_mode=mode, hidden_size=48, subtoken_pooling=pooling, max_width=4)
    for pooling, mode in (("last", "markerV0"), ("mean", "markerV0"), ("max", "token_level"))
}
CASES["mean_markerV1"] = dict(span_mode="markerV1", hidden_size=48, subtoken_pooling="mean", max_width=4)


# Entities: the batch-dependent modes, one other span mode, pooling in a span and a token model.
ENTITY_CASES = ["markerV1", "markerV2", "conv_share", "mean_markerV0", "max_token_level"]
# Run by default (the others are marked slow; the full run has them all): each structure once.
QUICK_CASES = {"marker", "markerV1", "markerV2", "cat", "conv_conv", "conv_share", "mean_markerV0", "max_token_level"}


@pytest.fixture(
    scope="module",
    params=[case if case in QUICK_CASES else pytest.param(case, marks=pytest.mark.slow) for case in CASES],
)
def reference(request, gliner_backbone, tmp_path_factory):
    """(reference gliner model, its saved directory)."""
    directory = tmp_path_factory.mktemp(request.param)
    return build_reference(gliner_backbone, directory, **CASES[request.param]), directory


@pytest.fixture(scope="module", params=ENTITY_CASES)
def entity_reference(request, gliner_backbone, tmp_path_factory):
    """A reference whose probabilities spread (logits scaled less), and its saved directory."""
    directory = tmp_path_factory.mktemp(f"entities_{request.param}")
    return build_reference(gliner_backbone, directory, logit_scale=4.0, **CASES[request.param]), directory


def test_network_and_pipeline_match_reference(reference):
    """Our network as training runs it on the reference's own batch gives its logits and every parameter's gradient
    (markerV1's project_first, which gliner never applies, gets zeros); our pipeline, bucketed (W, T and C padded
    further), gives the reference's logits too: markerV1 / markerV2 included, whose rows read the batch's widest row."""
    ref, directory = reference
    grads, ref_grads = assert_training_network_matches(ref, directory, TEXTS, PER_TEXT_LABELS)
    unused = {name for name in grads if name not in ref_grads}
    assert unused == {name for name in grads if ".project_first." in name}
    assert ref.config.span_mode == "markerV1" or not unused
    for name in unused:
        assert not grads[name].any(), name

    batch, ref_logits = reference_logits(ref, TEXTS, PER_TEXT_LABELS)
    ours = GLiNER.from_pretrained(directory)
    np.testing.assert_array_equal(
        ours.processor.prepare(TEXTS, PER_TEXT_LABELS, bucket=False).words_mask, batch["words_mask"].numpy()
    )
    _, bucketed = ours.batch_logits(TEXTS, PER_TEXT_LABELS, bucket=True)
    assert bucketed.shape[1] > ref_logits.shape[1]
    words = slice(0, ref_logits.shape[1])
    if ours.config.span_mode == "token_level":  # [B, W, C, 3]
        region = bucketed[:, words, : ref_logits.shape[2]]
    else:  # [B, W, K, C]
        region = bucketed[:, words, :, : ref_logits.shape[3]]
    assert_logits_close(region, ref_logits)


@pytest.mark.parametrize("flat_ner", [True, False])
def test_entities_match_reference(entity_reference, flat_ner):
    """Entities of gliner's inference with the same batch size: rows of a batch-dependent mode are batched in order,
    as gliner batches them."""
    ref, directory = entity_reference
    ours = GLiNER.from_pretrained(directory)
    threshold = quantile_thresholds(ref, TEXTS, SHARED_LABELS, (0.9,))[0]
    options = dict(threshold=threshold, flat_ner=flat_ner)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ref.inference(TEXTS, SHARED_LABELS, batch_size=3, **options)
    got = ours.inference(TEXTS, SHARED_LABELS, batch_size=3, **options)
    assert sum(map(len, expected)) > 0
    for ours_row, ref_row in zip(got, expected, strict=True):
        assert [(e["start"], e["end"], e["label"]) for e in ours_row] == [
            (e["start"], e["end"], e["label"]) for e in ref_row
        ]
        np.testing.assert_allclose([e["score"] for e in ours_row], [e["score"] for e in ref_row], rtol=0, atol=1e-5)


def test_checkpoints_both_ways(reference, tmp_path):
    """gliner's directory loads here strictly (every tensor mapped, none left over); ours loads in gliner strictly,
    bit for bit, and gives the reference's logits."""
    ref, directory = reference
    ours = GLiNER.from_pretrained(directory)
    assert {m.torch_key for m in gliner_table(ours.config)} == set(ref.model.state_dict())
    exported = assert_export_equals_reference(ours, ref, tmp_path)
    reloaded = gliner.GLiNER.from_pretrained(str(tmp_path), local_files_only=True)
    reloaded.model.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)
    assert type(reloaded) is type(ref) and reloaded.config.span_mode == ref.config.span_mode
    assert reloaded.config.subtoken_pooling == ref.config.subtoken_pooling
    np.testing.assert_array_equal(
        reference_logits(reloaded, TEXTS, SHARED_LABELS)[1], reference_logits(ref, TEXTS, SHARED_LABELS)[1]
    )


@pytest.mark.parametrize("mode", BATCH_DEPENDENT_MODES)
def test_batch_dependent_modes_read_the_widest_row(gliner_backbone, tmp_path_factory, mode):
    """A short text's logits in markerV1 / markerV2 change with the batch's widest row, in gliner and here alike:
    our rows follow gliner's batching, not a batch-independent per-row rule."""
    directory = tmp_path_factory.mktemp(f"dependent_{mode}")
    ref = build_reference(gliner_backbone, directory, span_mode=mode, hidden_size=48, max_width=4)
    ours = GLiNER.from_pretrained(directory)
    alone, ref_alone = (
        ours.batch_logits(TEXTS[2:3], SHARED_LABELS)[1],
        reference_logits(ref, TEXTS[2:3], SHARED_LABELS)[1],
    )
    together = ours.batch_logits(TEXTS[2:4], SHARED_LABELS)[1][:1]
    ref_together = reference_logits(ref, TEXTS[2:4], SHARED_LABELS)[1][:1]
    span = (slice(None), slice(0, 1), slice(None), slice(None))  # "Apple": one word, one valid span per width
    assert np.abs(ref_alone[span] - ref_together[span]).max() > 1e-3 * np.abs(ref_alone).max()
    assert_logits_close(alone[span], ref_alone[span])
    assert_logits_close(together[span], ref_together[span])
