"""gliner 0.2.29's token models with `represent_spans` (UniEncoderTokenModel / BiEncoderTokenModel and their span
representation: TokenMarker over the words, through the span context encoder where there is one) against the gliner
package: token and span logits on gliner's own batch, entities (gliner decodes the span logits of the spans it finds in
the token probabilities), checkpoints both ways."""

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
from gliner_jax.checkpoint_io import gliner_table
from gliner_jax.testing.builders import build_reference
from tests.utils.gliner_parity import (
    PER_TEXT_LABELS,
    TEXTS,
    assert_export_equals_reference,
    assert_logits_close,
    assert_same_outputs,
    network_inputs,
    reference_batch,
)

# The uni-encoder with a one-layer RNN span context encoder (it reads the batch's padded word slots, in gliner too);
# the bi-encoder with a cross fuser, whose word states the span representation reads. span_scale: what the centred
# span representations are scaled by (the uni-encoder's label prompts are close to one another).
CASES = {
    "uni": dict(span_encoder_config={"model_type": "rnn", "num_hidden_layers": 1}, span_scale=300.0),
    "bi": dict(post_fusion_schema="l2t-t2l", span_scale=30.0),
}
# Texts of one word count: gliner's batch then has no padded word, which gliner's span extraction would read (and
# decode entities past a text's end from). Ours select spans within each row's words whatever its batch.
SAME_LENGTH = [
    "Marie Curie won the Nobel Prize in Physics in Paris in 1903",
    "Angela Merkel met the United Nations team in Geneva on Tuesday morning",
    "Apple opened a new office in Berlin and hired twenty young engineers",
]
LABELS = ["person", "city", "organization", "date"]


@pytest.fixture(scope="module", params=list(CASES))
def reference(request, gliner_backbone, labels_backbone, tmp_path_factory):
    """(reference gliner model, its directory, ours read from it). Random heads, centred: the token logits per channel
    (start, end and inside above a threshold in about half the cells, so that spans of several words are found) and
    the span representations (their mean over every span of a batch subtracted, then scaled up, so that label
    probabilities spread over (0, 1))."""
    directory = tmp_path_factory.mktemp(request.param)
    case = dict(CASES[request.param])
    span_scale = case.pop("span_scale")
    if request.param == "bi":
        case["labels_encoder"] = str(labels_backbone)
    ref = build_reference(
        gliner_backbone, directory, hidden_size=32, span_mode="token_level", represent_spans=True, **case
    )
    assert type(ref).__name__ == ("BiEncoderTokenGLiNER" if request.param == "bi" else "UniEncoderTokenGLiNER")
    with torch.no_grad():
        output = ref.model(**reference_batch(ref, SAME_LENGTH, LABELS), threshold=0.0)  # every span
        spans = ref.model.span_rep_layer(output.words_embedding, output.span_idx)[output.span_mask]
        ref.model.scorer.out_mlp[3].bias.sub_(output.logits.mean(dim=(0, 1, 2)))
        last = ref.model.span_rep_layer.span_rep_layer.out_project[3]
        last.bias.sub_(spans.mean(dim=0))
        last.weight.mul_(span_scale)
        last.bias.mul_(span_scale)
    ref.save_pretrained(directory)
    return ref, directory, GLiNER.from_pretrained(directory)


@nnx.jit
def _logits(model: nnx.Module, inputs: dict, span_idx: jax.Array) -> tuple[jax.Array, jax.Array]:
    logits, kept = model(**inputs, span_states=True)
    return logits, model.span_scores(kept["span_words"], kept["span_prompts"], span_idx)


def test_logits_match_reference(reference):
    """Token logits and the span logits of the spans gliner extracts at the threshold, on gliner's own batch (rows of
    several lengths, per-text labels)."""
    ref, _, ours = reference
    batch = reference_batch(ref, TEXTS, PER_TEXT_LABELS)
    with torch.no_grad():
        expected = ref.model(**batch, threshold=0.45)
    found = expected.span_mask.numpy()
    assert found.sum() > 10 and (np.diff(expected.span_idx.numpy(), axis=-1)[found] > 0).any()
    inputs = network_inputs(batch, ours.config)
    logits, span_logits = _logits(ours.model, inputs, jnp.asarray(expected.span_idx.numpy()))
    assert_logits_close(np.asarray(logits), expected.logits.numpy())
    assert_logits_close(np.asarray(span_logits)[found], expected.span_logits.numpy()[found])


def test_entities_and_checkpoints_match(reference, tmp_path):
    """gliner's entities through our pipeline (flat and nested, two thresholds; packed rows too); gliner's directory
    loads here strictly and ours loads in gliner strictly, bit for bit."""
    ref, _, ours = reference
    for threshold, flat_ner, least in ((0.4, True, 1), (0.35, False, 5)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = ref.inference(SAME_LENGTH, LABELS, threshold=threshold, flat_ner=flat_ner, batch_size=3)
        assert sum(map(len, expected)) >= least
        assert_same_outputs(ours.inference(SAME_LENGTH, LABELS, threshold=threshold, flat_ner=flat_ner), expected)
    ours.pack_tokens = 96
    assert_same_outputs(ours.inference(SAME_LENGTH, LABELS, threshold=0.35, flat_ner=False), expected)
    ours.pack_tokens = None

    assert {m.torch_key for m in gliner_table(ours.config)} == set(ref.model.state_dict())
    exported = assert_export_equals_reference(ours, ref, tmp_path)
    reloaded = gliner.GLiNER.from_pretrained(str(tmp_path), local_files_only=True)
    reloaded.model.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)
