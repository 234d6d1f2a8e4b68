"""gliner 0.2.29's token models with `represent_spans` (UniEncoderTokenModel / BiEncoderTokenModel and their span
representation: TokenMarker over the words, through the span context encoder where there is one) against the gliner
package: token and span logits on gliner's own batch, entities (gliner decodes the span logits of the spans it finds in
the token probabilities), checkpoints both ways."""

from __future__ import annotations

import dataclasses
import random
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
from gliner_jax.testing.builders import build_reference
from gliner_jax.training import data as data_lib
from gliner_jax.training.loss import LossConfig
from gliner_jax.training.step import loss_terms
from tests.utils.gliner_parity import (
    PER_TEXT_LABELS,
    TEXTS,
    assert_export_equals_reference,
    assert_gradients_close,
    assert_logits_close,
    assert_same_outputs,
    network_inputs,
    reference_batch,
    train_without_dropout,
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


def _words(text: str) -> list[str]:
    return text.split(" ")


# Training records: entities of one and several words, one whose label is not among the example's labels (no span
# target), an example without entities (no span target, no negative).
RECORDS = [
    {
        "tokenized_text": _words("Marie Curie worked at the University of Paris with Pierre Curie in 1903 ."),
        "ner": [[8, 9, "person"], [0, 1, "person"], [4, 7, "organization"], [11, 11, "date"]],
    },
    {
        "tokenized_text": _words("Apple was founded by Steve Jobs in Cupertino ."),
        "ner": [[0, 0, "company"], [4, 5, "x"]],
    },
    {"tokenized_text": _words("Nothing happened here today ."), "ner": []},
]
TRAIN_LABELS = [["person", "organization", "date"], ["company", "city"], ["person"]]
COEFFICIENTS = {"token_loss_coef": 0.7, "span_loss_coef": 1.6}
FOCAL = dict(alpha=0.6, gamma=1.5, prob_margin=0.0, label_smoothing=0.1)
SEED = 11


def _reference_loss(ref, batch: dict, token: float, span: float, *, backward: bool = False) -> float:
    """gliner's training loss on its batch with these coefficients (its gradients with `backward`)."""
    ref.model.config.token_loss_coef, ref.model.config.span_loss_coef = token, span
    ref.model.zero_grad()
    with torch.set_grad_enabled(backward):
        loss = ref.model(**batch, **FOCAL, reduction="mean", negatives=1.0).loss
    if backward:
        loss.backward()
    return float(loss.detach())


@pytest.mark.parametrize("reference", ["uni"], indirect=True)
def test_training_loss_and_gradients_match(reference):
    """On gliner's own training batch (its span targets: the gold spans and random negatives, drawn from the same
    seed): our data path's span targets, the token and span loss terms, the total with gliner's coefficients and every
    parameter's gradient, through the train step's loss (`training.step.loss_terms`)."""
    ref, _, ours = reference
    collator = ref.data_collator_class(ref.config, data_processor=ref.data_processor, prepare_labels=True)
    random.seed(SEED)  # gliner draws its negative spans from the global random module
    ref_batch = collator(RECORDS, entity_types=TRAIN_LABELS)
    ref.model.eval()
    token = _reference_loss(ref, ref_batch, 1.0, 0.0)
    span = _reference_loss(ref, ref_batch, 0.0, 1.0)
    total = _reference_loss(ref, ref_batch, *COEFFICIENTS.values(), backward=True)
    ref_grads = {name: p.grad.numpy() for name, p in ref.model.named_parameters() if p.grad is not None}

    records = [data_lib.normalize_record(record) for record in RECORDS]
    batch = data_lib.collate(records, TRAIN_LABELS, ours.processor, rng=random.Random(SEED))
    mask, labels = ref_batch["span_mask"].numpy(), ref_batch["span_labels"].numpy()
    classes = np.where(labels.any(axis=-1), labels.argmax(axis=-1) + 1, 0)
    for row in range(len(RECORDS)):
        expected = np.concatenate([ref_batch["span_idx"].numpy()[row], classes[row, :, None]], axis=-1)[mask[row]]
        np.testing.assert_array_equal(batch["token_spans"][row][batch["token_span_mask"][row]], expected)
    assert mask.sum() == 10 and (classes[mask] == 0).sum() == 5  # five gold spans, as many negatives

    model = nnx.clone(ours.model)
    model.config = dataclasses.replace(ours.config, **COEFFICIENTS)
    train_without_dropout(model)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    inputs = {name: jnp.asarray(value) for name, value in batch.items()}

    def loss(params):
        network = nnx.merge(graphdef, params, jax.tree.map(jnp.asarray, rest))
        return loss_terms(network, inputs, LossConfig(**FOCAL, reduction="mean"))

    (ours_total, terms), gradients = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    for name, value in {"token": token, "span": span}.items():
        assert value > 0.05, name
        np.testing.assert_allclose(float(terms[name]), value, rtol=2e-5, err_msg=name)
    np.testing.assert_allclose(float(ours_total), total, rtol=2e-5)
    nnx.update(model, gradients)
    grads = state_to_torch(model, gliner_table(model.config))
    assert any(name.startswith("span_rep_layer.context_encoder") for name in ref_grads)
    assert_gradients_close(grads, ref_grads)
