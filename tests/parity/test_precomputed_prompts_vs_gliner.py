"""gliner's `precomputed_prompts_mode` against gliner 0.2.29: `compress_prompt_embeddings` (the stored prompts and
labels), predictions that score the stored labels whatever labels are given, label descriptions refused, gliner's
compressed checkpoint read (its `precomputed_prompts` tensor) and ours written key for key, training (gliner's
batch, loss and gradients); a relation model's entity and relation prompts."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import load_file

from gliner_jax import GLiNER
from gliner_jax.checkpoint_io import gliner_table, state_to_torch
from gliner_jax.testing.builders import CORPUS, build_reference, quantile_thresholds
from gliner_jax.training import data as data_lib
from gliner_jax.training.distill import compress_and_distill, word_level_example
from gliner_jax.training.loss import LossConfig
from gliner_jax.training.step import make_train_step
from tests.utils.entities import assert_same_entities
from tests.utils.gliner_parity import (
    TEXTS,
    assert_export_equals_reference,
    assert_gradients_close,
    assert_same_outputs,
    capture_gradients,
    train_without_dropout,
)

LABELS = ["person", "award", "person", "city", "date"]  # a repeat: gliner keeps the first
STORED = ["person", "award", "city", "date"]


@pytest.fixture(scope="module")
def models(gliner_backbone, tmp_path_factory):
    """(gliner's compressed model, the directory it saved, ours compressed the same way)."""
    plain, compressed = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("compressed")
    reference = build_reference(gliner_backbone, plain, logit_scale=5.0, span_mode="markerV0", hidden_size=32)
    ours = GLiNER.from_pretrained(plain)
    reference.compress_prompt_embeddings(CORPUS[:5], LABELS, batch_size=2)
    ours.compress_prompt_embeddings(CORPUS[:5], LABELS, batch_size=2)
    reference.save_pretrained(compressed)
    return reference, compressed, ours


def test_compressed_prompts_match_reference(models):
    reference, _, ours = models
    expected = reference.model.precomputed_prompts.detach().numpy()
    stored = np.asarray(ours.model.precomputed_prompts.get_value())
    assert stored.shape == expected.shape == (len(STORED), 32)
    np.testing.assert_allclose(stored, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert ours.config.precomputed_prompts_mode is True and reference.config.precomputed_prompts_mode is True
    assert ours.config.id_to_classes == reference.config.id_to_classes == dict(enumerate(STORED, 1))


def test_entities_match_reference_whatever_the_labels(models):
    """The stored labels are scored whatever labels are given (gliner ignores them), by our compressed model and by
    ours read from gliner's compressed checkpoint; descriptions are refused by both."""
    reference, compressed, ours = models
    (threshold,) = quantile_thresholds(reference, TEXTS, STORED, (0.9,))
    expected = reference.inference(TEXTS, ["anything"], threshold=threshold, flat_ner=False)
    assert sum(map(len, expected)) > 0
    for model in (ours, GLiNER.from_pretrained(compressed)):
        for labels in (["anything"], STORED):
            got = model.inference(TEXTS, labels, threshold=threshold, flat_ner=False, batch_size=2)
            for ours_entities, ref_entities in zip(got, expected, strict=True):
                assert_same_entities(ours_entities, ref_entities)
    for model in (reference, ours):
        with pytest.raises(ValueError, match="Label descriptions are not supported"):
            model.inference(TEXTS[:1], {"person": "a human being"})


def test_export_matches_reference_checkpoint(models, tmp_path):
    """Our export holds gliner's tensors key for key (`precomputed_prompts` with them) and its stored labels. gliner
    itself cannot load such a checkpoint strictly (it registers `precomputed_prompts` as None: "Unexpected key"), and
    loaded leniently it drops the prompts: we read them."""
    reference, _, ours = models
    ours.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    expected = reference.model.state_dict()
    assert saved.keys() == expected.keys() and "precomputed_prompts" in saved
    loaded = GLiNER.from_pretrained(tmp_path)
    assert loaded.config.precomputed_labels == STORED
    np.testing.assert_array_equal(
        np.asarray(loaded.model.precomputed_prompts.get_value()), saved["precomputed_prompts"]
    )


# Training records: an entity of a label the model does not store ("country") is no target, in gliner as here.
RECORDS = [
    {
        "tokenized_text": [
            "Marie",
            "Curie",
            "won",
            "the",
            "Nobel",
            "Prize",
            "in",
            "Physics",
            "in",
            "1903",
            "in",
            "Paris",
            ".",
        ],
        "ner": [[0, 1, "person"], [3, 6, "award"], [8, 8, "date"], [10, 10, "city"]],
    },
    {
        "tokenized_text": ["Angela", "Merkel", "visited", "France", "in", "2019", "."],
        "ner": [[0, 1, "person"], [3, 3, "country"]],
    },
]
LOSS = LossConfig(alpha=0.75, gamma=2.0, label_smoothing=0.1, reduction="mean", masking="none")


def test_training_matches_reference(models):
    """Training in precomputed_prompts_mode as gliner trains it: its collator gives every example the stored labels
    in their order and no label prompt, and so does our data path (the same targets); our one train step gives
    gliner's loss and the gradient of every parameter torch gives one (the stored prompts get none: frozen in
    both)."""
    reference, compressed, _ = models
    collator = reference.data_collator_class(
        reference.config, data_processor=reference.data_processor, prepare_labels=True
    )
    ref_batch = collator(RECORDS)
    assert not (ref_batch["input_ids"] == reference.config.class_token_index).any()
    reference.model.eval()
    reference.model.zero_grad()
    with torch.enable_grad():
        options = {name: getattr(LOSS, name) for name in ("alpha", "gamma", "label_smoothing", "reduction")}
        ref_loss = reference.model(**ref_batch, **options, prob_margin=0.0, negatives=1.0, masking="none").loss
        ref_loss.backward()
    ref_grads = {name: p.grad.numpy() for name, p in reference.model.named_parameters() if p.grad is not None}
    assert "precomputed_prompts" not in ref_grads and len(ref_grads) > 20

    ours = GLiNER.from_pretrained(compressed)
    dataset = data_lib.make_train_dataset(
        RECORDS,
        ours.processor,
        global_batch_size=len(RECORDS),
        seed=0,
        shuffle=False,
        process_index=0,
        process_count=1,
        fixed_labels=ours.config.precomputed_labels,
    )
    batch = next(iter(dataset))
    targets = batch["entities"][: len(RECORDS)]
    assert sorted(map(tuple, targets[targets[..., 2] > 0].tolist())) == [
        (0, 1, 1),
        (0, 1, 1),
        (3, 6, 2),
        (8, 8, 4),
        (10, 10, 3),
    ]
    assert int(ref_batch["labels"].sum()) == 5 and batch["labels_valid"][: len(RECORDS), :4].all()

    model = ours.model
    train_without_dropout(model)
    graphdef, params, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    step = jax.jit(make_train_step(graphdef, capture_gradients(), LOSS))
    inputs = {name: jnp.asarray(value) for name, value in batch.items()}
    _, gradients, _, metrics = step(params, (), stats, inputs, jax.random.key(0), rest)
    np.testing.assert_allclose(float(metrics["loss"]), float(ref_loss.detach()), rtol=2e-5)
    nnx.update(model, gradients)
    grads = state_to_torch(model, [m for m in gliner_table(ours.config) if m.torch_key != "precomputed_prompts"])
    assert_gradients_close(grads, ref_grads)


# A relation model compressed with entity and relation labels (repeats: gliner keeps the first of each).
RELEX_TEXTS = [
    "Marie Curie worked at the University of Paris with Pierre Curie in 1903.",
    "Apple was founded by Steve Jobs in Cupertino.",
    "Bill Gates founded Microsoft with Paul Allen in Albuquerque, New Mexico, in 1975.",
]
RELEX_LABELS = ["person", "organization", "person", "city"]
RELATIONS = ["works at", "founded by", "works at", "located in"]
STORED_RELEX, STORED_RELATIONS = ["person", "organization", "city"], ["works at", "founded by", "located in"]


@pytest.fixture(scope="module")
def relex_models(gliner_backbone, tmp_path_factory):
    """(gliner's relation model compressed with RELEX_LABELS and RELATIONS, the directory it saved, ours compressed
    the same way from the same model)."""
    plain, compressed = tmp_path_factory.mktemp("relex-plain"), tmp_path_factory.mktemp("relex-compressed")
    options = dict(span_mode="markerV0", hidden_size=32, max_width=4, relations_layer="dot")
    reference = build_reference(gliner_backbone, plain, logit_scale=30.0, **options)
    with torch.no_grad():  # relation scores spread over (0, 1)
        reference.model.pair_rep_layer[3].weight.mul_(30.0)
    reference.save_pretrained(plain)
    ours = GLiNER.from_pretrained(plain)
    reference.compress_prompt_embeddings(CORPUS[:5], RELEX_LABELS, rel_labels=RELATIONS, batch_size=2)
    ours.compress_prompt_embeddings(CORPUS[:5], RELEX_LABELS, rel_labels=RELATIONS, batch_size=2)
    reference.save_pretrained(compressed)
    return reference, compressed, ours


def test_relation_model_compressed_as_gliner(relex_models, tmp_path):
    """A relation model's `compress_prompt_embeddings(texts, labels, rel_labels=...)`: gliner's stored entity and
    relation prompts and labels; gliner's compressed checkpoint read and written back bit for bit; gliner's entities
    and relations, from our compressed model, and from gliner's checkpoint whatever labels it is given (gliner
    itself names the stored classes by the labels given, by position: given the stored ones, the same)."""
    reference, compressed, ours = relex_models
    for name, count in (("precomputed_prompts", 3), ("precomputed_rel_prompts", 3)):
        expected = getattr(reference.model, name).detach().numpy()
        stored = np.asarray(getattr(ours.model, name).get_value())
        assert stored.shape == expected.shape == (count, 32)
        np.testing.assert_allclose(stored, expected, rtol=0, atol=1e-5 * np.abs(expected).max(), err_msg=name)
    assert ours.config.id_to_classes == reference.config.id_to_classes == dict(enumerate(STORED_RELEX, 1))
    assert ours.config.rel_id_to_classes == reference.config.rel_id_to_classes == dict(enumerate(STORED_RELATIONS, 1))
    loaded = GLiNER.from_pretrained(compressed)
    assert_export_equals_reference(loaded, reference, tmp_path / "export")
    assert GLiNER.from_pretrained(tmp_path / "export").config.precomputed_relations == STORED_RELATIONS

    # thresholds from gliner's scores: a few entities per text (nested: a random model's best spans overlap), every
    # pair of them, half of the relations gliner then finds
    (threshold,) = quantile_thresholds(reference, RELEX_TEXTS, STORED_RELEX, (0.97,))
    options = dict(threshold=threshold, adjacency_threshold=0.0, flat_ner=False, relation_threshold=0.0)
    found = reference.inference(RELEX_TEXTS, STORED_RELEX, relations=STORED_RELATIONS, batch_size=2, **options)[1]
    scores = np.sort([relation["score"] for row in found for relation in row])
    options["relation_threshold"] = float(scores[len(scores) // 2 - 1 : len(scores) // 2 + 1].mean())
    expected = reference.inference(RELEX_TEXTS, STORED_RELEX, relations=STORED_RELATIONS, batch_size=2, **options)
    assert sum(map(len, expected[0])) >= 4 and sum(map(len, expected[1])) >= 2
    got = ours.inference(RELEX_TEXTS, STORED_RELEX, relations=STORED_RELATIONS, batch_size=2, **options)
    read = loaded.inference(RELEX_TEXTS, ["anything"], relations=["x"], batch_size=2, **options)
    for found in (got, read):
        assert_same_outputs(found[0], expected[0])
        assert_same_outputs(found[1], expected[1])


def test_distillation_trains_the_compressed_model_on_its_predictions(gliner_backbone, tmp_path):
    """gliner's `compress_prompt_embeddings(distill=True)`, as `compress_and_distill`: the uncompressed model's
    predictions become gliner's word-level examples (`_predictions_to_word_level`: labels lower-cased, entities
    that are not whole whitespace words dropped), and the model is compressed and fine-tuned on them in place (its
    stored prompts kept: frozen in training, as in gliner); the run's files land in the folder given."""
    reference = build_reference(gliner_backbone, tmp_path / "plain", logit_scale=5.0, hidden_size=32)
    texts = [*CORPUS[:6], "  Marie  Curie lived in   Paris, France . "]  # runs of spaces, punctuation in words
    labels = ["Person", "award", "city", "date"]  # a capital: gliner's lower-cased examples never name it
    (threshold,) = quantile_thresholds(reference, texts, labels, (0.8,))
    model = GLiNER.from_pretrained(tmp_path / "plain")
    with pytest.raises(NotImplementedError, match="compress_and_distill"):
        model.compress_prompt_embeddings(texts, labels, distill=True)
    predictions = model.inference(texts, labels, threshold=threshold)
    examples = [word_level_example(text, found) for text, found in zip(texts, predictions, strict=True)]
    start = texts[-1].index("Paris")
    by_hand = [  # "Marie  Curie" (a capital), "Paris" (not the word "Paris,"), "Paris, France" (whole words)
        {"start": 2, "end": 14, "label": "Person"},
        {"start": start, "end": start + 5, "label": "city"},
        {"start": start - 1, "end": start + 13, "label": "country"},
    ]
    for text, found in [*zip(texts, predictions, strict=True), (texts[-1], by_hand)]:
        expected = type(reference)._predictions_to_word_level(text, found)
        expected = {"tokenized_text": expected["tokenized_text"], "ner": [list(e) for e in expected["ner"]]}
        assert word_level_example(text, found) == expected
    assert word_level_example(texts[-1], by_hand)["ner"] == [[0, 1, "person"], [4, 5, "country"]]
    assert sum(len(example["ner"]) for example in examples) > 0  # something to learn

    encoder = "encoder/embeddings/word_embeddings/embedding"
    before = dict(nnx.to_flat_state(nnx.state(model.model, nnx.Param)))[tuple(encoder.split("/"))][...].copy()
    distilled = compress_and_distill(model, texts, labels, tmp_path / "distill", threshold=threshold, batch_size=4)
    assert distilled is model and model.config.precomputed_labels == labels
    saved = GLiNER.from_pretrained(tmp_path / "distill" / "compressed")
    np.testing.assert_array_equal(
        model.model.precomputed_prompts.get_value(), saved.model.precomputed_prompts.get_value()
    )
    after = dict(nnx.to_flat_state(nnx.state(model.model, nnx.Param)))[tuple(encoder.split("/"))][...]
    assert not np.array_equal(np.asarray(after), np.asarray(before))
    lines = (tmp_path / "distill" / "distill.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == examples
    assert (tmp_path / "distill" / "run" / "final" / "gliner_config.json").is_file()
    with pytest.raises(ValueError, match="not an empty folder"):
        compress_and_distill(model, texts, labels, tmp_path / "distill")
