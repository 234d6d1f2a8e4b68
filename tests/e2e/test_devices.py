"""Inference on 8 fake CPU devices (a fresh interpreter started with XLA_FLAGS=--xla_force_host_platform_device_count=8,
which must be set before JAX starts): a data mesh with replicated parameters, and the training rules' sharded
parameters on a (data 2, fsdp 2, tensor 2) mesh, give the entities of one device and of the gliner package, for a
uni-encoder and a bi-encoder."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from gliner_jax import GLiNER
from gliner_jax.data_formats import read_examples
from gliner_jax.testing.builders import build_reference, quantile_thresholds
from tests.utils import fresh
from tests.utils.entities import assert_same_entities

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [
    "Marie Curie won the Nobel Prize in Physics in 1903, and again in 1911!",
    "Dr. Smith-Jones (WHO) met Angela Merkel in Geneva at 10:30am on Tuesday with 3 colleagues from the UN.",
    "",
    "Apple",
    "Zürich, São Paulo & Kraków: Müller-Lüdenscheidt_GmbH paid $1,200.50 on 3/14/2015.",
] * 3
LABELS = ["person", "award", "city name", "organization", "date"]


def _distribute(model: GLiNER, name: str) -> None:
    """Place `model` on the placement `name` says: "one" device, all "eight" (data mesh, replicated parameters) or
    "sharded" (a (2, 2, 2) mesh, parameters sharded by the training rules)."""
    from flax import nnx

    from gliner_jax.sharding import MeshConfig, batch_sharding, make_mesh, state_shardings

    if name == "one":
        model.distribute(make_mesh(MeshConfig(), jax.devices()[:1]))
    elif name.startswith("eight"):
        model.distribute()
    else:
        mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
        model.distribute(mesh, state_shardings(nnx.state(model.model), mesh), batch_sharding(mesh))
        embedding = model.model.encoder.embeddings.word_embeddings.embedding.get_value()
        assert not embedding.sharding.is_fully_replicated


def _run_everywhere(directory: str, threshold: float, out: str) -> None:
    """Entry point of the 8-device interpreter: entities (inference flat and nested, predict_words) and dev-set
    scores on 1 device, on all 8 (data mesh, replicated parameters; also with inference packing, whose rows are
    then a multiple of 8) and on a (2, 2, 2) mesh with the parameters sharded by the training rules; saved as
    JSON."""
    assert jax.device_count() == 8
    model = GLiNER.from_pretrained(directory)
    dev, _ = read_examples(ROOT / "data" / "tiny" / "dev.jsonl")
    results = {}
    for name in ("one", "eight", "eight_packed", "sharded"):
        model.pack_tokens = 96 if name == "eight_packed" else None
        _distribute(model, name)
        results[name] = {
            "flat": model.inference(TEXTS, LABELS, threshold=threshold, batch_size=4),
            "nested": model.inference(TEXTS, LABELS, threshold=threshold, flat_ner=False, batch_size=4),
            "words": model.predict_words([t.split() for t in TEXTS], LABELS, threshold=threshold, batch_size=12),
            "evaluation": model.evaluate(dev[:24], threshold=threshold, batch_size=8).to_dict(),
        }
    Path(out).write_text(json.dumps(results))


@pytest.mark.slow
def test_eight_devices_give_the_entities_of_one(gliner_backbone, tmp_path):
    directory = tmp_path / "model"
    config = dict(span_mode="markerV0", hidden_size=48, max_width=4, max_len=48)
    reference = build_reference(gliner_backbone, directory, logit_scale=4.0, **config)
    threshold = quantile_thresholds(reference, TEXTS, LABELS, (0.97,))[0]
    out = tmp_path / "results.json"
    command = fresh.function_command(__file__, "_run_everywhere", str(directory), threshold, str(out))
    fresh.run(command, fresh.fresh_env(devices=8))
    results = json.loads(out.read_text())

    expected = {
        "flat": reference.inference(TEXTS, LABELS, threshold=threshold),
        "nested": reference.inference(TEXTS, LABELS, threshold=threshold, flat_ner=False),
    }
    assert sum(map(len, expected["flat"])) > 0
    for name, got in results.items():
        for mode, entities in expected.items():
            for ours, ref in zip(got[mode], entities, strict=True):
                assert [(e["start"], e["end"], e["label"]) for e in ours] == [
                    (e["start"], e["end"], e["label"]) for e in ref
                ], name
                np.testing.assert_allclose([e["score"] for e in ours], [e["score"] for e in ref], atol=1e-5)
        words = [[(s, e, label) for s, e, label, _ in row] for row in got["words"]]
        assert words == [[(s, e, label) for s, e, label, _ in row] for row in results["one"]["words"]], name
        assert got["evaluation"] == results["one"]["evaluation"], name
    assert results["one"]["evaluation"]["predicted"] > 0


def _run_bi_encoder_everywhere(directory: str, threshold: float, out: str) -> None:
    """Entry point of the 8-device interpreter for a bi-encoder: entities (inference flat and nested, one label
    list and one per text, from label embeddings, streamed in chunks) on 1 device, on all 8 (also packed) and on a
    (2, 2, 2) mesh with sharded parameters; saved as JSON."""
    assert jax.device_count() == 8
    model = GLiNER.from_pretrained(directory)
    embeddings = model.encode_labels(LABELS)
    per_text = [LABELS[i % len(LABELS) :] + LABELS[: i % 3] for i in range(len(TEXTS))]
    results = {}
    for name in ("one", "eight", "eight_packed", "sharded"):
        model.pack_tokens = 64 if name == "eight_packed" else None
        _distribute(model, name)
        chunks = [TEXTS[:4], TEXTS[4:5], TEXTS[5:]]
        results[name] = {
            "flat": model.inference(TEXTS, LABELS, threshold=threshold, batch_size=4),
            "nested": model.inference(TEXTS, LABELS, threshold=threshold, flat_ner=False, batch_size=4),
            "per_text": model.inference(TEXTS, per_text, threshold=threshold, batch_size=4),
            "embeds": model.batch_predict_with_embeds(TEXTS, embeddings, LABELS, threshold=threshold, batch_size=4),
            "stream": [
                entities
                for chunk in model.inference_stream(chunks, LABELS, threshold=threshold, batch_size=4)
                for entities in chunk
            ],
        }
    Path(out).write_text(json.dumps(results))


@pytest.mark.slow
def test_bi_encoder_on_eight_devices_gives_the_entities_of_one(gliner_backbone, labels_backbone, tmp_path):
    directory = tmp_path / "model"
    config = dict(span_mode="markerV0", hidden_size=64, max_width=4, max_len=48, num_rnn_layers=1)
    reference = build_reference(
        gliner_backbone, directory, labels_encoder=str(labels_backbone), logit_scale=5.0, **config
    )
    threshold = quantile_thresholds(reference, [t for t in TEXTS if t], LABELS, (0.97,))[0]
    out = tmp_path / "results.json"
    command = fresh.function_command(__file__, "_run_bi_encoder_everywhere", str(directory), threshold, str(out))
    fresh.run(command, fresh.fresh_env(devices=8))
    results = json.loads(out.read_text())

    expected = reference.inference(TEXTS, LABELS, threshold=threshold)
    assert sum(map(len, expected)) > 0
    one = results["one"]
    for mode in ("flat", "embeds", "stream"):  # flat entities of LABELS, as gliner finds them
        for ours, ref in zip(one[mode], expected, strict=True):
            assert_same_entities(ours, ref)
    for got in results.values():
        assert got.keys() == one.keys()
        for mode, entities in got.items():
            for ours, first in zip(entities, one[mode], strict=True):
                assert_same_entities(ours, first)
