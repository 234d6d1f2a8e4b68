"""Training relation extraction models against gliner 0.2.29 (`UniEncoderSpanRelexModel`): on gliner's own training
batch of relation records, our batch (built by our data path, with the same negative pairs drawn from the same seed),
each loss term (entity, adjacency, relation), the total with gliner's coefficients and every parameter gradient; a
TuckER model's inference, export and train step with its BatchNorm statistics."""

from __future__ import annotations

import random

import gliner
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from gliner.evaluation import BaseRelexEvaluator
from safetensors.torch import load_file

from gliner_jax import GLiNER
from gliner_jax.checkpoint_io import gliner_table, relation_table, state_to_torch
from gliner_jax.evaluation import relation_scores
from gliner_jax.testing.builders import build_reference, relation_thresholds
from gliner_jax.training import data as data_lib
from gliner_jax.training.loss import LossConfig
from gliner_jax.training.optim import OptimizerConfig, parameter_groups, parameter_path
from gliner_jax.training.step import loss_terms, make_train_step
from tests.utils.gliner_parity import (
    assert_gradients_close,
    assert_same_outputs,
    capture_gradients,
    train_without_dropout,
)


def _words(text: str) -> list[str]:
    return text.split(" ")


RECORDS = [
    {
        "tokenized_text": _words("Marie Curie worked at the University of Paris with Pierre Curie in 1903 ."),
        "ner": [[8, 9, "person"], [0, 1, "person"], [4, 7, "organization"], [11, 11, "date"]],
        "relations": [[1, 2, "works at"], [1, 0, "married to"], [0, 1, "married to"], [0, 2, "works at"]],
    },
    {
        "tokenized_text": _words("Apple was founded by Steve Jobs in Cupertino ."),
        "ner": [[0, 0, "company"], [4, 5, "person"], [7, 7, "city"]],
        "relations": [[0, 1, "founded by"], [0, 2, "located in"]],
    },
    {  # no relation: only negative pairs (and the entity term)
        "tokenized_text": _words("Bill Gates lives in Medina ."),
        "ner": [[0, 1, "person"], [4, 4, "city"]],
        "relations": [],
    },
]
LABELS = [["person", "organization", "date"], ["company", "person", "city"], ["person", "city"]]
RELATIONS = [["works at", "married to"], ["founded by", "located in", "ceo of"], ["lives in"]]
WEIGHTS = {"span_loss_coef": 0.7, "adjacency_loss_coef": 1.3, "relation_loss_coef": 2.0}
# gliner's trainer arguments (as its compute_loss passes them) and ours: a focal loss whose relation terms have their
# own alpha and gamma, mean reduction.
FOCAL = dict(alpha=0.6, gamma=1.5, rel_alpha=0.3, rel_gamma=2.0, prob_margin=0.0, label_smoothing=0.1)
REDUCTION = "mean"
SEED = 7
RELATION_SCALES = {"pair_rep_layer.3.weight": 10.0, "relations_rep_layer.relation_rep_layer.mlp.2.weight": 10.0}


@pytest.fixture(scope="module", params=["markerV0+mlp", "token_level+none"])
def reference(request, gliner_backbone, tmp_path_factory):
    """A gliner relation model (span or token level, with this relations_layer) and its directory."""
    span_mode, _, relations_layer = request.param.partition("+")
    directory = tmp_path_factory.mktemp(f"relex-train-{span_mode}-{relations_layer}")
    ref = build_reference(
        gliner_backbone,
        directory,
        logit_scale=5.0,
        span_mode=span_mode,
        hidden_size=32,
        max_width=4,
        dropout=0.0,
        relations_layer=relations_layer,
    )
    with torch.no_grad():
        for name, param in ref.model.named_parameters():
            param.mul_(RELATION_SCALES.get(name, 1.0))
    ref.save_pretrained(directory)
    return ref, directory


def _reference_loss(ref, batch: dict, span: float, adjacency: float, relation: float, *, backward: bool = False):
    """gliner's training loss on its batch with these coefficients (its gradients with `backward`)."""
    config = ref.model.config
    config.span_loss_coef, config.adjacency_loss_coef, config.relation_loss_coef = span, adjacency, relation
    ref.model.zero_grad()
    with torch.set_grad_enabled(backward):
        loss = ref.model(**batch, **FOCAL, reduction=REDUCTION, negatives=1.0, masking="none").loss
        value = float(loss.detach())
    if backward:
        loss.backward()
    return value


def test_relation_loss_terms_and_gradients_match_gliner(reference):
    ref, directory = reference
    collator = ref.data_collator_class(ref.config, data_processor=ref.data_processor, prepare_labels=True)
    random.seed(SEED)  # gliner draws its negative pairs from the global random module
    ref_batch = collator(RECORDS, entity_types=LABELS, relation_types=RELATIONS)
    ref.model.eval()  # dropout off (the model's own rates are 0; the backbone's are not)
    entity = _reference_loss(ref, ref_batch, 1.0, 0.0, 0.0)
    adjacency = _reference_loss(ref, ref_batch, 0.0, 1.0, 0.0)
    relation = _reference_loss(ref, ref_batch, 0.0, 0.0, 1.0)
    total = _reference_loss(ref, ref_batch, *WEIGHTS.values(), backward=True)
    ref_grads = {name: p.grad.numpy() for name, p in ref.model.named_parameters() if p.grad is not None}

    ours = GLiNER.from_pretrained(directory)
    for name, value in WEIGHTS.items():
        object.__setattr__(ours.config, name, value)
    records = [data_lib.normalize_record(record) for record in RECORDS]
    batch = data_lib.collate(records, LABELS, ours.processor, relation_sets=RELATIONS, rng=random.Random(SEED))
    if "adj_matrix" in ref_batch:  # our gold adjacency is gliner's (the same pairs drawn from the same seed)
        ref_adjacency = ref_batch["adj_matrix"].numpy()
        n = ref_adjacency.shape[1]
        np.testing.assert_array_equal(batch["adjacency"][: len(RECORDS), :n, :n], ref_adjacency)
        assert batch["adjacency"][: len(RECORDS)].sum() == ref_adjacency.sum() > 6

    model = ours.model
    train_without_dropout(model)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    config = LossConfig(**FOCAL, reduction=REDUCTION, masking="none")
    inputs = {name: jnp.asarray(value) for name, value in batch.items()}

    def loss(params):
        return loss_terms(nnx.merge(graphdef, params, jax.tree.map(jnp.asarray, rest)), inputs, config)

    (ours_total, terms), gradients = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    expected = {"entity": entity, "relation": relation}
    if ref.config.relations_layer != "none":
        expected["adjacency"] = adjacency
    else:
        assert adjacency == 0.0 and "adjacency" not in terms
    for name, value in expected.items():
        assert value > 0.05, name  # each term is really there
        np.testing.assert_allclose(float(terms[name]), value, rtol=2e-5, err_msg=name)
    np.testing.assert_allclose(float(ours_total), total, rtol=2e-5)
    nnx.update(model, gradients)
    grads = state_to_torch(model, gliner_table(ours.config))
    assert any(name.startswith("pair_rep_layer") for name in ref_grads)
    assert_gradients_close(grads, ref_grads)

    # gliner's optimizer groups: everything outside token_rep_layer (the relation layers too) at others_lr.
    groups = jax.tree_util.tree_leaves_with_path(parameter_groups(params, OptimizerConfig(num_steps=1)))
    relation_groups = [group for path, group in groups if parameter_path(path).startswith("relation_head/")]
    assert relation_groups and set(relation_groups) == {"others"}


def test_relation_scores_match_gliners_evaluator():
    """Random gold records and predictions (shared and other spans, relations in both directions, duplicates, texts
    without any): our relation P/R/F1 are gliner's BaseRelexEvaluator's on the same predictions."""
    rng = np.random.default_rng(3)
    kinds = ["at", "in", "of"]
    examples, predicted, gold_pairs, pred_pairs = [], [], [], []
    for _ in range(12):
        spans = sorted({(int(s), int(s + rng.integers(0, 3))) for s in rng.integers(0, 10, size=rng.integers(0, 6))})
        ner = [[s, e, "x"] for s, e in spans]
        entities = [(s, e, "y", 0.9) for s, e in spans if rng.random() < 0.8]
        entities += [(int(s), int(s), "y", 0.5) for s in rng.integers(10, 14, size=rng.integers(0, 2))]
        n, m = len(ner), len(entities)
        relations = [[int(h), int(t), str(rng.choice(kinds))] for h, t in rng.integers(0, n, (n, 2))] if n else []
        found = [(int(h), str(rng.choice(kinds)), int(t), 0.7) for h, t in rng.integers(0, m, (m + 1, 2))] if m else []
        # Predictions that hit: gold relations whose spans were both predicted.
        index = {(s, e): i for i, (s, e, _, _) in enumerate(entities)}
        for h, t, kind in relations:
            if rng.random() < 0.6 and tuple(ner[h][:2]) in index and tuple(ner[t][:2]) in index:
                found.append((index[tuple(ner[h][:2])], kind, index[tuple(ner[t][:2])], 0.8))
        examples.append({"tokenized_text": ["w"] * 16, "ner": ner, "relations": relations})
        predicted.append((entities, found))
        gold_pairs.append(([tuple(e) for e in ner], [tuple(r) for r in relations]))
        pred_pairs.append((entities, [(h, kind, t) for h, kind, t, _ in found]))
    ours = relation_scores(predicted, examples)
    evaluator = BaseRelexEvaluator(gold_pairs, pred_pairs)
    output, f1 = evaluator.evaluate()
    precision, recall, _ = evaluator.compute_prf(*evaluator.transform_data()).values()
    assert 0 < ours.micro.true_positives < ours.micro.predicted
    assert str(ours) == output.strip()
    np.testing.assert_allclose([ours.precision, ours.recall, ours.f1], [precision, recall, f1], rtol=1e-12)


def test_tucker_matches_gliner(gliner_backbone, tmp_path):
    """A TuckER relation model (768 wide, as gliner builds it; its BatchNorms moved off their init). gliner's TuckER
    views its batched product matmul(r, W) [D, rows, D] as [rows, D, D], so a pair's score depends on the whole
    flattened batch. Inference: through `inference` ours gives gliner's entities and relations (scores within 1e-5),
    the checkpoint reads strictly and the export loads in gliner strictly. Training, the BatchNorms in training mode,
    on gliner's own batch (two records): gliner flattens the gold adjacency's pairs, padded to the batch's largest
    count with each example's first entity, times the relation slots, and normalises over those rows; our train
    step's relation term (the one term TuckER changes), its gradients (the 768^3 core tensor's on its first slices)
    and the BatchNorm running statistics after the step are gliner's. One model for both: it is 1.8 GB."""
    torch.manual_seed(0)
    config = dict(span_mode="markerV0", hidden_size=768, max_width=4, dropout=0.0, relations_layer="dot")
    ref = gliner.GLiNER.from_config(
        gliner.GLiNERConfig(model_name=str(gliner_backbone), triples_layer="TuckER", **config),
        backbone_from_pretrained=True,
        local_files_only=True,
    )
    layer = ref.model.triples_score_layer.interaction
    with torch.no_grad():
        for norm in (layer.bn0, layer.bn1):
            norm.running_mean.uniform_(-0.2, 0.2)
            norm.running_var.uniform_(0.5, 2.0)
            norm.num_batches_tracked.fill_(7)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.1, 0.1)
        ref.model.span_rep_layer.span_rep_layer.out_project[3].weight.mul_(30.0)  # entity scores spread over (0, 1)
    ref.eval()
    ref.save_pretrained(tmp_path)
    ours = GLiNER.from_pretrained(tmp_path)
    assert state_to_torch(ours.model, gliner_table(ours.config)).keys() == ref.model.state_dict().keys()

    texts = [" ".join(record["tokenized_text"]) for record in RECORDS[:2]]
    # 5 entities in a text at most (gliner's TuckER builds a [D, D] matrix for each of its pairs x relations rows).
    options = dict(relation_thresholds(ref, texts, LABELS[1], RELATIONS[1], entities=5, batch_size=2), batch_size=2)
    ref_entities, ref_relations = ref.inference(texts, LABELS[1], relations=RELATIONS[1], **options)
    entities, found = ours.inference(texts, LABELS[1], relations=RELATIONS[1], **options)
    assert sum(map(len, ref_relations)) >= 2
    assert_same_outputs(entities, ref_entities)
    assert_same_outputs(found, ref_relations)
    ours.save_pretrained(tmp_path / "export")
    exported = load_file(tmp_path / "export" / "model.safetensors")
    assert ref.model.load_state_dict(exported, strict=True)  # every key, and each of gliner's dtypes
    for key, value in ref.model.state_dict().items():
        assert exported[key].dtype == value.dtype, key
    del exported

    records, labels, relations = RECORDS[:2], LABELS[:2], RELATIONS[:2]
    collator = ref.data_collator_class(ref.config, data_processor=ref.data_processor, prepare_labels=True)
    random.seed(SEED)
    ref_batch = collator(records, entity_types=labels, relation_types=relations)
    ref.model.eval()
    layer.train()  # BatchNorm on the batch's rows; its dropouts off
    layer.dropout.p = layer.input_dropout.p = 0.0
    relation = _reference_loss(ref, ref_batch, 0.0, 0.0, 1.0, backward=True)
    ref_stats = {k: v.numpy() for k, v in layer.state_dict().items() if "running" in k or "num_batches" in k}
    ref_grads = {name: p.grad.numpy() for name, p in ref.model.named_parameters() if p.grad is not None}
    core = "triples_score_layer.interaction.W"
    ref_grads[core] = ref_grads[core][:4].copy()
    del ref, layer

    for name, value in zip(WEIGHTS, (0.0, 0.0, 1.0), strict=True):
        object.__setattr__(ours.config, name, value)
    normalized = [data_lib.normalize_record(record) for record in records]
    batch = data_lib.collate(normalized, labels, ours.processor, relation_sets=relations, rng=random.Random(SEED))
    model = ours.model
    train_without_dropout(model)
    graphdef, params, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    step = make_train_step(graphdef, capture_gradients(), LossConfig(**FOCAL, reduction=REDUCTION, masking="none"))
    inputs = {name: jnp.asarray(value) for name, value in batch.items()}
    _, gradients, stats, metrics = jax.jit(step, donate_argnums=0)(params, (), stats, inputs, jax.random.key(0), rest)

    assert relation > 0.05
    np.testing.assert_allclose(float(metrics["loss/relation"]), relation, rtol=2e-5)
    np.testing.assert_allclose(float(metrics["loss"]), relation, rtol=2e-5)
    nnx.update(model, gradients, stats)
    ours_stats = state_to_torch(model, relation_table("dot", "TuckER"))
    for key, value in ref_stats.items():
        ours_value = ours_stats[f"triples_score_layer.interaction.{key}"]
        np.testing.assert_allclose(ours_value, value, rtol=1e-5, atol=1e-6 * np.abs(value).max(), err_msg=key)
    assert int(ref_stats["bn0.num_batches_tracked"]) == 8  # 7 set above, one step
    grads = state_to_torch(model, gliner_table(ours.config))
    grads[core] = grads[core][:4]
    # The BatchNorms remove any shift shared by all entities: the span head's last bias gets a zero gradient from the
    # relation term, but for rounding at the scale of its kernel's gradient.
    shift = "span_rep_layer.span_rep_layer.out_project.3."
    np.testing.assert_allclose(
        grads[shift + "bias"], ref_grads.pop(shift + "bias"), atol=1e-3 * np.abs(ref_grads[shift + "weight"]).max()
    )
    assert_gradients_close(grads, ref_grads)
