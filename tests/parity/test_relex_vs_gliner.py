"""Relation extraction GLiNER (gliner's UniEncoderSpanRelexGLiNER) against the `gliner` PyTorch package: entity
logits, adjacency and relation logits of every relations_layer, strict conversion both ways, and the entities and
relations of inference."""

from __future__ import annotations

import json
from pathlib import Path

import gliner
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from gliner.infer_packing import InferencePackingConfig

from gliner_jax import GLiNER
from gliner_jax.checkpoint_io import gliner_table, load_gliner, relation_table, state_from_torch, state_to_torch
from gliner_jax.decoding import select_entities, select_token_entities
from gliner_jax.modeling.relations import RelationHead
from gliner_jax.modeling.triples import TRIPLES_LAYERS
from gliner_jax.testing.builders import build_reference
from gliner_jax.testing.hub_cache import add_to_cache
from tests.utils import fresh
from tests.utils.gliner_parity import assert_logits_close, assert_same_outputs, network_inputs
from tests.utils.legacy_layouts import BACKBONE_ID, DROP, Layout, backbone_files, layout_files

TEXTS = [
    "Marie Curie worked at the University of Paris with Pierre Curie in 1903.",
    "Apple was founded by Steve Jobs in Cupertino.",
    "Bill Gates founded Microsoft with Paul Allen in Albuquerque, New Mexico, in 1975.",
]
LABELS = [["person", "organization", "date"], ["company", "person", "city"], ["person", "company", "city", "year"]]
RELATIONS = [["works at", "married to"], ["founded by", "located in", "ceo of"], ["founded", "founded with"]]
# Every relations_layer with gliner's pair projection; two with a triples_layer instead (a parameter-free mode: the
# modes with parameters need 768-wide models, and test_triples_layers_match checks each of them).
RELATIONS_LAYERS = ("dot", "mlp", "attn", "bilinear", "gcn", "gat", "none", "dot+ComplEx", "none+DistMult")
# gliner's relation heads (and the entity head, scaled by build_reference) with their last layers scaled, so that
# entities, adjacency and relations each spread over (0, 1).
RELATION_SCALES = {"pair_rep_layer.3.weight": 30.0, "relations_rep_layer.relation_rep_layer.mlp.2.weight": 30.0}


@pytest.fixture(scope="module", params=RELATIONS_LAYERS)
def reference(request, gliner_backbone, tmp_path_factory):
    """(relations_layer, a gliner relex model with it, its saved directory). The "dot" model's config names a
    labels_encoder too, which gliner's relation model ignores (it builds no label encoder, writes no
    labels_encoder_config): every test of it checks that we ignore it as well."""
    directory = tmp_path_factory.mktemp(f"relex-{request.param}")
    relations_layer, _, triples_layer = request.param.partition("+")
    ignored = {"labels_encoder": str(gliner_backbone)} if request.param == "dot" else {}
    ref = build_reference(
        gliner_backbone,
        directory,
        logit_scale=30.0,
        span_mode="markerV0",
        hidden_size=32,
        max_width=4,
        relations_layer=relations_layer,
        triples_layer=triples_layer or None,
        **ignored,
    )
    with torch.no_grad():
        for name, param in ref.model.named_parameters():
            param.mul_(RELATION_SCALES.get(name, 1.0))
    ref.save_pretrained(directory)
    return request.param, ref, directory


def _reference_forward(ref, threshold: float, adjacency_threshold: float) -> tuple[dict, object, np.ndarray | None]:
    """gliner's collated batch of TEXTS, its forward output at these thresholds (entity selection, pair selection)
    and the adjacency its relations layer computed (None without one)."""
    prepared = ref.prepare_batch(TEXTS, LABELS, relations=RELATIONS)
    batch = ref.collate_batch(prepared["input_x"], prepared["entity_types"], relation_types=prepared["relation_types"])
    captured = []
    layer = getattr(ref.model, "relations_rep_layer", None)
    hook = None if layer is None else layer.register_forward_hook(lambda m, i, o: captured.append(o.numpy()))
    with torch.no_grad():
        output = ref.run_batch(batch, threshold=threshold, adjacency_threshold=adjacency_threshold)
    if hook is not None:
        hook.remove()
    return batch, output, captured[0] if captured else None


PACK_TOKENS = 192  # packed inference: TEXTS[0] and TEXTS[1] with their prompts (86 + 84 tokens) share a row


def first_two_share_a_row(ref, row_length: int) -> bool:
    """Whether the prompts of TEXTS[0] and TEXTS[1] (a batch of 2) fit in one packed row of `row_length` tokens."""
    batch, _, _ = _reference_forward(ref, 0.5, 0.5)
    return int(batch["attention_mask"][:2].sum()) <= row_length


def _between(values: np.ndarray, rank: int) -> float:
    """A threshold halfway between the rank-th and (rank+1)-th smallest of values: none sits on it."""
    values = np.sort(values.reshape(-1))
    return float((values[rank] + values[rank + 1]) / 2)


def reference_thresholds(ref, entities: int = 16, pairs: float = 0.5) -> tuple[float, float]:
    """(entity threshold, adjacency threshold) from gliner's own scores: about `entities` entities over the texts, and
    that fraction of their `pairs` kept (random heads score alike, so fixed thresholds keep all or nothing)."""
    batch, output, _ = _reference_forward(ref, 0.5, 0.5)
    best = torch.sigmoid(output.logits).amax(-1).numpy().reshape(len(TEXTS), -1)[batch["span_mask"].numpy()]
    threshold = _between(best, len(best) - entities)
    _, _, adjacency = _reference_forward(ref, threshold, 0.5)
    if adjacency is None:
        return threshold, 0.5
    values = adjacency[(adjacency > 0) & ~np.eye(adjacency.shape[1], dtype=bool)]
    return threshold, _between(values, int(len(values) * (1 - pairs)))


def test_logits_adjacency_and_relations_match(reference):
    """Fed gliner's own batch: entity logits, the entities selected for the relation stage, their adjacency and the
    relation logits of gliner's pairs are gliner's."""
    _, ref, directory = reference
    threshold, adjacency_threshold = reference_thresholds(ref)
    batch, output, ref_adjacency = _reference_forward(ref, threshold, adjacency_threshold)
    model, config = load_gliner(directory)
    inputs = network_inputs(batch, config)
    rel_ids = batch["input_ids"].numpy() == config.rel_token_index
    inputs["relations_valid"] = jnp.asarray(np.arange(rel_ids.sum(1).max())[None] < rel_ids.sum(1)[:, None])
    logits, spans, relations = model.relex(**inputs)
    assert_logits_close(np.asarray(logits), output.logits.numpy())

    probs = np.asarray(jax.nn.sigmoid(logits))
    num_labels = int(inputs["labels_valid"].shape[1])
    entity_index, entity_mask, bounds = select_entities(probs, batch["span_mask"].numpy(), threshold, num_labels)
    count = int(entity_mask.sum(1).max())
    assert count >= 3, "too few entities selected to test the relation stage"
    np.testing.assert_array_equal(bounds[:, :count] * entity_mask[:, :count, None], output.entity_spans.numpy())

    index, mask = jnp.asarray(entity_index), jnp.asarray(entity_mask)
    adjacency, pair_logits = model.relation_scores(spans, index, mask, relations)
    if ref_adjacency is None:
        assert adjacency is None
    else:
        np.testing.assert_allclose(np.asarray(adjacency)[:, :count, :count], ref_adjacency, rtol=0, atol=1e-5)
    pair_idx, pair_mask = output.rel_idx.numpy(), output.rel_mask.numpy()
    assert pair_mask.sum() >= 4
    rows, pairs = np.nonzero(pair_mask)
    ours = np.asarray(pair_logits)[rows, pair_idx[rows, pairs, 0], pair_idx[rows, pairs, 1]]
    ref_logits = output.rel_logits.numpy()[rows, pairs]
    ours = ours[:, : ref_logits.shape[-1]]
    if ref.config.triples_layer is None:
        assert_logits_close(ours, ref_logits)
    else:  # triple scores, of any scale (DistMult's products of small states)
        assert ref_logits.std() > 1e-3 * np.abs(ref_logits).max()
        np.testing.assert_allclose(ours, ref_logits, rtol=1e-5, atol=1e-5 * np.abs(ref_logits).max())


def test_conversion_is_strict_both_ways(reference):
    """Every tensor of gliner's state dict is read (a missing or unexpected one refused) and written back equal."""
    _, ref, directory = reference
    model, config = load_gliner(directory)
    ref_state = {k: v.numpy() for k, v in ref.model.state_dict().items()}
    ours = state_to_torch(model, gliner_table(config))
    assert ours.keys() == ref_state.keys()
    for key, value in ref_state.items():
        np.testing.assert_array_equal(ours[key], value, err_msg=key)


def inference_thresholds(ref) -> dict[str, float]:
    """Entity, adjacency and relation thresholds for inference on TEXTS from gliner's own scores: each keeps some of
    what it sees and drops some (see `reference_thresholds`; half of the pairs' relation scores)."""
    threshold, adjacency_threshold = reference_thresholds(ref, entities=40, pairs=0.75)
    _, output, _ = _reference_forward(ref, threshold, adjacency_threshold)
    rel_probs = torch.sigmoid(output.rel_logits[..., 0]).numpy()[output.rel_mask.numpy()]  # a real class in each row
    relation_threshold = _between(rel_probs, len(rel_probs) // 2)
    return dict(threshold=threshold, adjacency_threshold=adjacency_threshold, relation_threshold=relation_threshold)


@pytest.mark.parametrize(
    ("reference", "flat_ner", "multi_label"), [("dot", True, False), ("none", False, True)], indirect=["reference"]
)
def test_inference_matches_reference(reference, flat_ner, multi_label):
    """Texts, per-text labels and relations in (an empty text among them, gliner's batches of 2): entities and
    relations out, as gliner's `inference` gives them, thresholds for entities, pairs and relations set apart; and
    (flat) `predict_relations` of one text and entity-only `predict_entities`."""
    _, ref, directory = reference
    texts, labels, relations = (
        [*TEXTS[:2], " ", TEXTS[2]],
        [*LABELS[:2], ["x"], LABELS[2]],
        [*RELATIONS[:2], ["y"], RELATIONS[2]],
    )
    options = dict(**inference_thresholds(ref), flat_ner=flat_ner, multi_label=multi_label)
    ref_entities, ref_relations = ref.inference(texts, labels, relations=relations, batch_size=2, **options)
    model = GLiNER.from_pretrained(directory)
    entities, found = model.inference(texts, labels, relations=relations, batch_size=2, **options)
    assert sum(map(len, ref_relations)) >= 3
    assert_same_outputs(entities, ref_entities)
    assert_same_outputs(found, ref_relations)
    if not flat_ner:  # the single-text entry points and packing once (their own compiles)
        return
    # Packed: both texts of a batch share one encoder row, as gliner's inference packing (inside its encoder) reads
    # them; the same entities and relations as gliner, packed and not.
    assert first_two_share_a_row(ref, PACK_TOKENS)
    model.pack_tokens = PACK_TOKENS
    packing = InferencePackingConfig(max_length=PACK_TOKENS)
    ref_packed = ref.inference(texts, labels, relations=relations, batch_size=2, packing_config=packing, **options)
    packed = model.inference(texts, labels, relations=relations, batch_size=2, **options)
    model.pack_tokens = None
    for got, want in zip(packed, (ref_entities, ref_relations), strict=True):
        assert_same_outputs(got, want)
    for got, want in zip(packed, ref_packed, strict=True):
        assert_same_outputs(got, want)
    one = model.predict_relations(TEXTS[1], LABELS[1], RELATIONS[1], **options)
    ref_one = ref.predict_relations(TEXTS[1], LABELS[1], RELATIONS[1], **options)
    assert_same_outputs([one[0], one[1]], [ref_one[0], ref_one[1]])
    # Entities alone go through the entity pipeline (windows, buckets), the prompt without relations as gliner's.
    entity_options = dict(threshold=options["threshold"], flat_ner=flat_ner, multi_label=multi_label)
    ref_alone = ref.predict_entities(TEXTS[0], LABELS[0], **entity_options)
    assert ref_alone
    assert_same_outputs([model.predict_entities(TEXTS[0], LABELS[0], **entity_options)], [ref_alone])


# Several devices: per-text labels and relations, gliner's batches of 3 (rows padded to 4, one per device) in the
# pipeline, and a stream of chunks with one label set.
DEVICE_TEXTS = [*TEXTS, " ", *TEXTS[::-1]]
DEVICE_LABELS = [*LABELS, ["x"], *LABELS[::-1]]
DEVICE_RELATIONS = [*RELATIONS, ["y"], *RELATIONS[::-1]]
STREAM_CHUNKS = [TEXTS[:2], [TEXTS[2], " ", TEXTS[0]]]


def _relations_on_devices(directory: str, options: dict, out: str) -> None:
    """Entry point of the 4-device interpreter: inference with relations, pipelined and not, and the stream of
    STREAM_CHUNKS with relations; saved as JSON."""
    assert jax.device_count() == 4
    model = GLiNER.from_pretrained(directory)
    results = {}
    for pipelined in (True, False):
        model.pipelined = pipelined
        found = model.inference(DEVICE_TEXTS, DEVICE_LABELS, relations=DEVICE_RELATIONS, batch_size=3, **options)
        results[f"pipelined={pipelined}"] = found
    stream = model.inference_stream(STREAM_CHUNKS, LABELS[2], relations=RELATIONS[2], batch_size=2, **options)
    results["stream"] = list(stream)
    Path(out).write_text(json.dumps(results))


@pytest.mark.parametrize("reference", ["attn"], indirect=True)
def test_several_devices_give_gliners_relations(reference, tmp_path):
    """On 4 devices the one inference pipeline (rows split over the devices, batches dispatched while the host
    selects and decodes, pipelined or not; and streamed in chunks) gives gliner's entities and relations."""
    _, ref, directory = reference
    options = inference_thresholds(ref)
    out = tmp_path / "results.json"
    command = fresh.function_command(__file__, "_relations_on_devices", str(directory), options, str(out))
    fresh.run(command, fresh.fresh_env(devices=4))
    results = json.loads(out.read_text())

    expected = ref.inference(DEVICE_TEXTS, DEVICE_LABELS, relations=DEVICE_RELATIONS, batch_size=3, **options)
    assert sum(map(len, expected[1])) >= 3
    for name in ("pipelined=True", "pipelined=False"):
        entities, found = results[name]
        assert_same_outputs(entities, expected[0])
        assert_same_outputs(found, expected[1])
    for chunk, (entities, found) in zip(STREAM_CHUNKS, results["stream"], strict=True):
        ref_entities, ref_found = ref.inference(chunk, LABELS[2], relations=RELATIONS[2], batch_size=2, **options)
        assert_same_outputs(entities, ref_entities)
        assert_same_outputs(found, ref_found)


class _Holder(nnx.Module):
    def __init__(self, mode: str):
        self.relation_head = RelationHead("none", mode, 8, 0.0, jnp.float32, nnx.Rngs(0))


@pytest.mark.parametrize("mode", [mode for mode in TRIPLES_LAYERS if mode != "TuckER"])
def test_triples_layers_match(mode):
    """Every triples_layer mode, built by gliner (768 wide, its parameters moved off their init) and read strictly
    by our key table: the scores of every (head, relation, tail) of a few entities and relations are gliner's
    (TuckER, whose scores depend on the whole batch: `test_tucker_model_matches`)."""
    from gliner.modeling.multitask.triples_layers import TriplesScoreLayer

    torch.manual_seed(0)
    layer = TriplesScoreLayer(mode).eval()
    with torch.no_grad():
        for param in layer.parameters():
            param.add_(0.05 * torch.randn_like(param))
    holder = _Holder(mode)
    tensors = {f"triples_score_layer.{k}": v.numpy() for k, v in layer.state_dict().items()}
    state_from_torch(holder, tensors, relation_table("none", mode))
    assert state_to_torch(holder, relation_table("none", mode)).keys() == tensors.keys()

    scale = 0.003 if mode == "TransE" else 0.05  # distances under gliner's clamp at 10
    rng = np.random.default_rng(0)
    entities = (scale * rng.normal(size=(2, 4, 768))).astype(np.float32)
    relations = (scale * rng.normal(size=(2, 3, 768))).astype(np.float32)
    h = torch.from_numpy(entities)[:, :, None, None].expand(2, 4, 4, 3, 768)
    t = torch.from_numpy(entities)[:, None, :, None].expand(2, 4, 4, 3, 768)
    r = torch.from_numpy(relations)[:, None, None].expand(2, 4, 4, 3, 768)
    with torch.no_grad():
        ref = layer(h.reshape(-1, 768), r.reshape(-1, 768), t.reshape(-1, 768)).reshape(2, 4, 4, 3).numpy()
    _, ours = holder.relation_head(jnp.asarray(entities), jnp.ones((2, 4), bool), jnp.asarray(relations))
    assert ref.std() > 1e-3 * np.abs(ref).max() and (ref > -9.99).all()
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("reference", ["dot"], indirect=True)
def test_hub_ids_and_legacy_layouts_load_as_gliner(reference, gliner_backbone, tmp_path):
    """A relation model as a hub repo id in its complete layout and in gliner 0.2.x's model-name-only layout
    (no tokenizer, no token indices: the relation token is added as gliner adds it): the same token indices as
    gliner, the same entities and relations; the export loads in gliner strictly."""
    _, _, directory = reference
    cache = tmp_path / "cache"
    add_to_cache(cache, BACKBONE_ID, backbone_files(gliner_backbone))
    add_to_cache(cache, "relex-org/complete", layout_files(directory, Layout({})))
    no_indices = {"encoder_config": DROP, "class_token_index": DROP, "rel_token_index": DROP, "vocab_size": DROP}
    add_to_cache(cache, "relex-org/legacy", layout_files(directory, Layout(no_indices, tokenizer=False)))
    for repo in ("relex-org/complete", "relex-org/legacy"):
        ref = gliner.GLiNER.from_pretrained(repo, cache_dir=cache)
        ours = GLiNER.from_pretrained(repo, cache_dir=cache)
        for field in ("class_token_index", "rel_token_index", "vocab_size"):
            assert getattr(ours.config, field) == getattr(ref.config, field), field
        threshold, adjacency_threshold = reference_thresholds(ref, entities=40, pairs=0.75)
        options = dict(threshold=threshold, adjacency_threshold=adjacency_threshold, relation_threshold=0.5)
        expected = ref.inference(TEXTS, LABELS, relations=RELATIONS, **options)
        assert sum(map(len, expected[1])) > 0
        got = ours.inference(TEXTS, LABELS, relations=RELATIONS, **options)
        for our_items, ref_items in zip(got, expected, strict=True):
            assert_same_outputs(our_items, ref_items)
    ours.save_pretrained(tmp_path / "export")
    written = json.loads((tmp_path / "export" / "gliner_config.json").read_text())
    assert written["labels_encoder"] == ref.config.labels_encoder is not None  # ignored, and kept
    reloaded = gliner.GLiNER.from_pretrained(str(tmp_path / "export"), local_files_only=True, strict=True)
    assert_same_outputs(reloaded.inference(TEXTS, LABELS, relations=RELATIONS, **options)[1], expected[1])


@pytest.fixture(scope="module")
def token_reference(gliner_backbone, tmp_path_factory):
    """(gliner's token-level relation model, UniEncoderTokenRelexGLiNER with relations_layer "dot"; its directory)."""
    directory = tmp_path_factory.mktemp("relex-token")
    options = dict(span_mode="token_level", hidden_size=32, relations_layer="dot", logit_scale=3.0)
    ref = build_reference(gliner_backbone, directory, **options)
    with torch.no_grad():
        for name, param in ref.model.named_parameters():
            param.mul_(RELATION_SCALES.get(name, 1.0))
    ref.save_pretrained(directory)
    return ref, directory


def token_thresholds(ref) -> tuple[float, float]:
    """(entity threshold, adjacency threshold): the entity threshold halfway between two of the scores of gliner's
    one-word entity candidates (min of start, end and inside probabilities; real words and labels), keeping about a
    quarter; the adjacency threshold halving the selected entities' pairs."""
    batch, output, _ = _reference_forward(ref, 0.5, 0.5)
    probs = torch.sigmoid(output.logits).numpy().min(-1)  # [B, W, C]
    words = np.arange(probs.shape[1])[None, :, None] < batch["text_lengths"].numpy().reshape(-1, 1, 1)
    labels = np.arange(probs.shape[2])[None, None] < np.array([len(x) for x in LABELS])[:, None, None]
    real = probs[words & labels]
    threshold = _between(real, int(0.75 * len(real)))
    _, _, adjacency = _reference_forward(ref, threshold, 0.5)
    values = adjacency[(adjacency > 0) & ~np.eye(adjacency.shape[1], dtype=bool)]
    return threshold, _between(values, len(values) // 2)


def test_token_model_matches(token_reference):
    """gliner's token-level relation model, fed gliner's batch: token logits, the entities its relation stage reads
    (spans of start / end / inside above the threshold, as gliner extracts them), their adjacency and relation
    logits; the checkpoint both ways; and inference's entities and relations."""
    ref, directory = token_reference
    threshold, adjacency_threshold = token_thresholds(ref)
    batch, output, ref_adjacency = _reference_forward(ref, threshold, adjacency_threshold)
    model, config = load_gliner(directory)
    assert state_to_torch(model, gliner_table(config)).keys() == ref.model.state_dict().keys()
    inputs = network_inputs(batch, config)
    rel_ids = batch["input_ids"].numpy() == config.rel_token_index
    inputs["relations_valid"] = jnp.asarray(np.arange(rel_ids.sum(1).max())[None] < rel_ids.sum(1)[:, None])
    scores, words, relations = model.relex(**inputs)
    ref_scores = output.logits.numpy()  # unscaled (near 0): entities then differ in their labels
    assert ref_scores.std() > 1e-2
    np.testing.assert_allclose(np.asarray(scores), ref_scores, rtol=0, atol=1e-5)

    num_words, num_labels = inputs["words_valid"].shape[1], inputs["labels_valid"].shape[1]
    bounds, mask = select_token_entities(np.asarray(jax.nn.sigmoid(scores)), threshold, num_words, num_labels)
    count = int(mask.sum(1).max())
    assert count >= 3
    np.testing.assert_array_equal(bounds[:, :count] * mask[:, :count, None], output.entity_spans.numpy())
    adjacency, pair_logits = model.relation_scores(words, jnp.asarray(bounds), jnp.asarray(mask), relations)
    np.testing.assert_allclose(np.asarray(adjacency)[:, :count, :count], ref_adjacency, rtol=0, atol=1e-5)
    pair_idx, pair_mask = output.rel_idx.numpy(), output.rel_mask.numpy()
    rows, pairs = np.nonzero(pair_mask)
    ours = np.asarray(pair_logits)[rows, pair_idx[rows, pairs, 0], pair_idx[rows, pairs, 1]]
    ref_logits = output.rel_logits.numpy()[rows, pairs]
    assert_logits_close(ours[:, : ref_logits.shape[-1]], ref_logits)

    rel_probs = torch.sigmoid(output.rel_logits[..., 0]).numpy()[pair_mask]
    options = dict(
        threshold=threshold,
        adjacency_threshold=adjacency_threshold,
        relation_threshold=_between(rel_probs, len(rel_probs) // 2),
    )
    expected = ref.inference(TEXTS, LABELS, relations=RELATIONS, batch_size=2, **options)
    model = GLiNER.from_pretrained(directory)
    got = model.inference(TEXTS, LABELS, relations=RELATIONS, batch_size=2, **options)
    assert sum(map(len, expected[0])) >= 3 and sum(map(len, expected[1])) >= 2
    assert_same_outputs(got[0], expected[0])
    assert_same_outputs(got[1], expected[1])
    assert first_two_share_a_row(ref, PACK_TOKENS)
    model.pack_tokens = PACK_TOKENS  # the first batch's two texts in one encoder row: the same entities and relations
    packed = model.inference(TEXTS, LABELS, relations=RELATIONS, batch_size=2, **options)
    assert_same_outputs(packed[0], expected[0])
    assert_same_outputs(packed[1], expected[1])
