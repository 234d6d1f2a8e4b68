"""gliner's label-generating decoder model (`UniEncoderSpanDecoderGLiNER`) end to end against the `gliner` package: a
gliner-built model (tiny BERT backbone, tiny untied GPT-2 `labels_decoder` with its byte-level BPE tokenizer) loads
here strictly, our export is its state dict and loads in gliner strictly, and `inference` gives gliner's entities and
generated labels (greedy: gliner's `do_sample=False`), with and without the span's words in the decoder prefix
(`full_decoder_context`), constrained by `gen_constraints`, and with decoder_mode None (no generated labels).
decoder_mode "prompt" fails in gliner 0.2.29's own inference and is refused here (tests/unit/test_config_refusals.py).
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil

import gliner
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from gliner.data_processing.collator import UniEncoderSpanDecoderDataCollator

from gliner_jax import GLiNER
from gliner_jax.checkpoint_io import gliner_table, state_to_torch
from gliner_jax.modeling.label_decoder import IGNORE_INDEX, prefix_length
from gliner_jax.testing.builders import build_backbone, build_label_decoder, build_reference, quantile_thresholds
from gliner_jax.training.loss import LossConfig
from gliner_jax.training.step import loss_terms
from tests.utils.encoders import TINY_HF
from tests.utils.gliner_parity import (
    assert_export_equals_reference,
    assert_gradients_close,
    assert_same_outputs,
    network_inputs,
)

MAX_WIDTH = 4
TEXTS = [
    "Barack Obama was born in Honolulu , Hawaii .",
    "Apple released the iPhone in 2007 .",
    "Angela Merkel led Germany from 2005 to 2021 .",
]
LABELS = ["person", "location", "organization"]
CONSTRAINTS = ["person", "city", "organization", "date of birth"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(gliner's span-decoder model, its directory)."""
    tmp = tmp_path_factory.mktemp("decoder_gliner")
    backbone = build_backbone(tmp / "backbone", {"model_type": "bert", **TINY_HF["bert"], "num_hidden_layers": 2})
    # An untied head: with tied embeddings a random GPT-2 repeats its last input token, whatever the prefix.
    decoder_config = dict(n_positions=128, n_embd=24, n_layer=2, n_head=3, tie_word_embeddings=False)
    decoder = build_label_decoder(tmp / "decoder", decoder_config)
    ref = build_reference(
        backbone, tmp / "ref", labels_decoder=str(decoder), decoder_mode="span", hidden_size=32, max_width=MAX_WIDTH
    )
    shutil.rmtree(decoder)  # everything is read from the model's own directory, as gliner reads it
    return ref, tmp / "ref"


@pytest.fixture(scope="module")
def ours(reference):
    return GLiNER.from_pretrained(reference[1])


def variant(directory, target, ours, **fields):
    """(gliner's, ours): a copy of a gliner model directory with `fields` changed in its gliner_config.json, loaded by
    gliner, and our model with that config (our network: the weights are the same, and so are its compiled
    programs)."""
    shutil.copytree(directory, target)
    config = json.loads((target / "gliner_config.json").read_text())
    (target / "gliner_config.json").write_text(json.dumps(config | fields))
    changed = dataclasses.replace(ours.config, **fields)
    copy = GLiNER(ours.model, changed, ours.tokenizer, decoder_tokenizer=ours.decoder_tokenizer)
    return gliner.GLiNER.from_pretrained(str(target), local_files_only=True), copy


def test_checkpoint_loads_strictly_both_ways(reference, ours, tmp_path):
    ref, _ = reference
    assert ours.config.to_dict()["labels_decoder_config"]["n_embd"] == 24
    assert_export_equals_reference(ours, ref, tmp_path / "export")
    assert (tmp_path / "export" / "decoder_tokenizer" / "tokenizer_config.json").is_file()
    back = gliner.GLiNER.from_pretrained(str(tmp_path / "export"), local_files_only=True, strict=True)
    assert type(back).__name__ == "UniEncoderSpanDecoderGLiNER"
    assert back.data_processor.decoder_tokenizer.get_vocab() == ref.data_processor.decoder_tokenizer.get_vocab()


def test_inference_matches_gliner(reference, ours, tmp_path):
    ref, directory = reference
    # About a third of the spans above it: the decoder writes a label for each, before flat decoding picks.
    threshold = quantile_thresholds(ref, TEXTS, LABELS, (0.65,))[0]
    options = dict(threshold=threshold, batch_size=2)

    expected = ref.inference(TEXTS, LABELS, do_sample=False, **options)
    found = ours.inference(TEXTS, LABELS, **options)
    assert_same_outputs(found, expected)
    generated = [label for entities in found for entity in entities for label in entity["generated_labels"]]
    assert len(generated) > 5 and len(set(generated)) > 1  # the labels depend on the span and its words

    # Constrained to labels, nested, at most 3 tokens (a label cut short).
    options = dict(options, gen_constraints=CONSTRAINTS, flat_ner=False)
    expected = ref.inference(TEXTS, LABELS, do_sample=False, max_new_tokens=3, **options)
    found = ours.inference(TEXTS, LABELS, max_new_tokens=3, **options)
    assert_same_outputs(found, expected)
    written = {label for entities in found for e in entities for label in e["generated_labels"]}
    assert written and all(any(f" {c}".startswith(label) for c in CONSTRAINTS) for label in written)

    # Without the span's words: the decoder reads the span representation alone.
    options = dict(options, flat_ner=True)
    alone_ref, alone = variant(directory, tmp_path / "alone", ours, full_decoder_context=False)
    expected = alone_ref.inference(TEXTS, LABELS, do_sample=False, **options)
    assert_same_outputs(alone.inference(TEXTS, LABELS, **options), expected)

    # decoder_mode None: gliner builds (and saves) the decoder, and never reads what it generates.
    silent_ref, silent = variant(directory, tmp_path / "silent", ours, decoder_mode=None)
    expected = silent_ref.inference(TEXTS, LABELS, do_sample=False, threshold=threshold, batch_size=2)
    assert not any("generated_labels" in entity for entities in expected for entity in entities)
    assert_same_outputs(silent.inference(TEXTS, LABELS, threshold, batch_size=2), expected)


EXAMPLES = [
    {"tokenized_text": TEXTS[0].split(), "ner": [[0, 1, "person"], [5, 7, "location"], [5, 5, "city"]]},
    {"tokenized_text": TEXTS[1].split(), "ner": [[0, 0, "company"], [3, 3, "product"], [5, 5, "date"]]},
    {"tokenized_text": TEXTS[2].split(), "ner": [[0, 1, "person"], [3, 3, "country"]]},
]


def our_batch(batch: dict, config) -> dict:
    """Our training batch of gliner's collated one: the network inputs, the gold spans as `entities`, and the
    decoder arrays (the gold spans padded to 8, gliner's prefix length)."""
    inputs = {k: np.asarray(v) for k, v in network_inputs(batch, config).items()}
    labels = batch["labels"].numpy()
    labels = labels.reshape(len(labels), -1, MAX_WIDTH, labels.shape[-1])  # [B, W, K, C]
    rows, starts, widths, classes = np.nonzero(labels)
    entities = np.zeros((len(labels), 8, 3), np.int32)
    spans = np.zeros((8, 3), np.int32)
    for i, (row, start, width, label) in enumerate(zip(rows, starts, widths, classes, strict=True)):
        entities[row, np.count_nonzero(rows[:i] == row)] = start, start + width, label + 1
        spans[i] = row, start, start + width
    count = len(rows)
    words_mask = batch["decoder_words_mask"].numpy()
    candidates = labels.shape[1] * MAX_WIDTH
    prefix_len = prefix_length(words_mask, spans[:count, 1:], rows, MAX_WIDTH, candidates)
    decoder = {
        "decoder_input_ids": batch["decoder_input_ids"].numpy(),
        "decoder_words_mask": words_mask,
        "decoder_spans": spans,
        "decoder_prefix_len": np.full(len(labels), prefix_len, np.int32),
    }
    for name, fill in (("decoder_labels_ids", 0), ("decoder_labels_mask", 0), ("decoder_labels", IGNORE_INDEX)):
        value = batch[name].numpy()
        decoder[name] = np.concatenate([value, np.full((8 - count, value.shape[1]), fill, value.dtype)])
    arrays = inputs | {"entities": entities} | decoder
    return {name: jnp.asarray(value) for name, value in arrays.items()}


def test_training_loss_and_gradients_match_gliner(reference, ours):
    """gliner's total loss (decoder_loss_coef * decoder + span_loss_coef * span) on its own collated training batch
    (blank_entity_prob 0), and every parameter gradient."""
    ref, _ = reference
    ref.config.blank_entity_prob = 0.0
    random.seed(0)
    collator = UniEncoderSpanDecoderDataCollator(ref.config, data_processor=ref.data_processor, prepare_labels=True)
    batch = collator(EXAMPLES)
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    ref.model.eval()
    ref.model.zero_grad()
    output = ref.model(**tensors)
    output.loss.backward()
    ref_grads = {name: p.grad.numpy() for name, p in ref.model.named_parameters() if p.grad is not None}

    config = dataclasses.replace(ours.config, decoder_loss_coef=0.5, span_loss_coef=1.0)
    arrays = our_batch(batch, config)
    assert int(arrays["decoder_prefix_len"][0]) == output.decoder_embedding.shape[2]  # gliner's, padding counted

    def loss(model):
        total, terms = loss_terms(model, arrays, LossConfig())
        return total, terms

    (total, terms), grads = nnx.jit(nnx.value_and_grad(loss, has_aux=True))(ours.model)
    np.testing.assert_allclose(float(terms["decoder"]), float(output.decoder_loss.detach()), rtol=1e-5)
    np.testing.assert_allclose(float(total), float(output.loss.detach()), rtol=1e-5)
    graphdef, _, rest = nnx.split(ours.model, nnx.Param, ...)
    assert_gradients_close(state_to_torch(nnx.merge(graphdef, grads, rest), gliner_table(config)), ref_grads)
