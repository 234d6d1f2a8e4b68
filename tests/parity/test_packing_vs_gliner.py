"""Packed training batches (several examples per row): the row plan, the packed layout, the network's per-example
logits and the loss against the same examples unpacked and against gliner's own loss, and the Grain pipeline."""

from __future__ import annotations

import random
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from gliner_jax.buckets import row_bucket
from gliner_jax.checkpoint_io import load_gliner
from gliner_jax.packing import TOKEN_KEYS, pack, plan_rows
from gliner_jax.processing import Processor
from gliner_jax.testing.builders import build_reference
from gliner_jax.training.data import Packing, collate, make_train_dataset
from gliner_jax.training.loss import LossConfig, gliner_loss
from tests.utils.batches import assert_state_restores, take

WORDS = [
    "Marie",
    "Curie",
    "won",
    "the",
    "Nobel",
    "Prize",
    "in",
    "Physics",
    "with",
    "Pierre",
    "Curie",
    "in",
    "Paris",
    "in",
    "1903",
    "and",
    "again",
    "in",
    "1911",
]
TYPES = ["person", "award", "city", "date", "field", "river"]


def make_examples(lengths: list[int], seed: int = 0) -> tuple[list[dict], list[list[str]]]:
    """Examples of the given word counts with random entities (some wider than the span model allows), and per
    example 1-5 labels (some not among its entities' labels)."""
    rng = random.Random(seed)
    examples, label_sets = [], []
    for n in lengths:
        words = [rng.choice(WORDS) for _ in range(n)]
        ner = []
        for _ in range(rng.randint(0, 4)):
            start = rng.randrange(n)
            ner.append([start, min(n - 1, start + rng.randint(0, 4)), rng.choice(TYPES)])
        examples.append({"tokenized_text": words, "ner": ner})
        label_sets.append(rng.sample(TYPES, rng.randint(1, 5)))
    return examples, label_sets


# ---- the row plan ----


def test_plan_rows_hand_checked():
    # Rows of <= 10 tokens: first-fit decreasing needs 3, (9), (6, 4), (5, 3, 2). 9 fits beside no other example,
    # so the other five take 2 rows, one of them with 3 examples.
    assert plan_rows([5, 9, 2, 6, 3, 4], 10) == [[1], [3, 5], [0, 2, 4]]
    assert plan_rows([4, 0, 4], 10, multiple=4) == [[0], [2], [], []]  # empty examples left out, rows spread
    assert plan_rows([], 10, multiple=2) == [[], []]
    with pytest.raises(ValueError, match="11 tokens"):
        plan_rows([3, 11], 10)


@pytest.mark.parametrize("seed", range(5))
def test_plan_rows_places_every_example_once_within_capacity(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 100) for _ in range(rng.randint(1, 40))]
    multiple = rng.choice([1, 2, 4])
    rows = plan_rows(lengths, 128, multiple=multiple)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 128 for row in rows)
    assert all(row == sorted(row) for row in rows)
    assert len(rows) % multiple == 0
    # First fit leaves at most one row half empty or less: at most ceil(2 * tokens / capacity) rows, then bucketed.
    assert len(rows) <= row_bucket(-(-2 * sum(lengths) // 128), multiple)


# ---- the network and the loss ----


# (span mode, subtoken pooling): mean pooling pools every subtoken of a word inside its own packed example.
SETUPS = {"markerV0": ("markerV0", "first"), "token_level": ("token_level", "first"), "marker_mean": ("marker", "mean")}


@pytest.fixture(scope="module", params=list(SETUPS))
def packed_setup(request, gliner_backbone, tmp_path_factory):
    """(reference gliner model, our network, our processor) for one span mode and subtoken pooling, with a BiLSTM
    and a projection."""
    span_mode, pooling = SETUPS[request.param]
    directory = tmp_path_factory.mktemp(f"packing-{request.param}")
    ref = build_reference(
        gliner_backbone,
        directory,
        span_mode=span_mode,
        subtoken_pooling=pooling,
        hidden_size=48,
        num_rnn_layers=1,
        max_width=3,
        max_len=40,
    )
    model, config = load_gliner(directory)
    return ref, model, Processor.from_config(config, transformers.AutoTokenizer.from_pretrained(directory))


def collated(examples, label_sets, processor) -> dict[str, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return collate(examples, label_sets, processor)


def network_logits(model, arrays: dict[str, np.ndarray]) -> np.ndarray:
    graphdef, state = nnx.split(model)
    inputs = {name: jnp.asarray(value) for name, value in arrays.items() if name != "entities"}
    return np.asarray(jax.jit(lambda state: nnx.merge(graphdef, state)(**inputs))(state))


def slot_of(packed: dict[str, np.ndarray], unpacked: dict[str, np.ndarray]) -> list[tuple[int, int]]:
    """(row, slot) of each unpacked example in the packed batch, found by its tokens."""
    where = []
    for ids, mask in zip(unpacked["input_ids"], unpacked["attention_mask"], strict=True):
        tokens = ids[mask > 0].tolist()
        found = [
            (r, s - 1)
            for r in range(len(packed["input_ids"]))
            for s in range(1, packed["attention_mask"][r].max() + 1)
            if packed["input_ids"][r][packed["attention_mask"][r] == s].tolist() == tokens
        ]
        where.append(found[0])
    assert len(set(where)) == len(where)
    return where


LENGTHS = [23, 3, 40, 11, 17, 6, 30, 1, 9]


def test_packed_layout_holds_each_example_whole(packed_setup):
    _, _, processor = packed_setup
    examples, label_sets = make_examples(LENGTHS)
    unpacked = collated(examples, label_sets, processor)
    packed = pack(unpacked, row_length=160, pad_id=processor.tokenizer.pad_token_id, multiple=2)
    rows, tokens = packed["input_ids"].shape
    assert rows % 2 == 0 and tokens % 32 == 0 and tokens <= 160
    segments = packed["attention_mask"]
    assert (segments > 0).sum() == (unpacked["attention_mask"] > 0).sum()  # no token lost or added
    for r, row in enumerate(segments):  # segments are contiguous, numbered 1, 2, ... from the left, then padding
        ids = row[row > 0]
        assert (np.diff(ids) >= 0).all() and set(ids) == set(range(1, ids.max(initial=0) + 1))
        assert (row[len(ids) :] == 0).all()
        assert (packed["input_ids"][r][row == 0] == processor.tokenizer.pad_token_id).all()
    for i, (r, s) in enumerate(slot_of(packed, unpacked)):
        np.testing.assert_array_equal(
            packed["words_mask"][r][segments[r] == s + 1], unpacked["words_mask"][i][unpacked["attention_mask"][i] > 0]
        )
        for name in set(unpacked) - set(TOKEN_KEYS):
            np.testing.assert_array_equal(packed[name][r, s], unpacked[name][i], err_msg=name)
    used = np.zeros(packed["words_valid"].shape[:2], bool)
    for r, s in slot_of(packed, unpacked):
        used[r, s] = True
    for name in set(unpacked) - set(TOKEN_KEYS):  # unused slots are neutral padding
        assert not packed[name][~used].any(), name


@pytest.fixture(scope="module")
def packed_case(packed_setup):
    """Examples with labels, collated one per row and packed (rows of 160 tokens), and our logits for both."""
    _, model, processor = packed_setup
    examples, label_sets = make_examples(LENGTHS, seed=1)
    unpacked = collated(examples, label_sets, processor)
    packed = pack(unpacked, row_length=160, pad_id=processor.tokenizer.pad_token_id)
    assert packed["attention_mask"].max() >= 2  # several examples share a row
    logits = {"packed": network_logits(model, packed), "unpacked": network_logits(model, unpacked)}
    return examples, label_sets, unpacked, packed, logits


def test_packed_logits_equal_each_example_alone(packed_case):
    """Per-example logits of a packed batch equal the logits of the unpacked batch (one example per row) wherever
    they are valid: each segment is encoded alone, its words and prompts scattered into its own slot."""
    _, _, unpacked, packed, logits = packed_case
    ours, alone = logits["packed"], logits["unpacked"]
    assert ours.shape[:2] == packed["words_valid"].shape[:2] and ours.shape[2:] == alone.shape[1:]
    scale = np.abs(alone).max()
    for i, (r, s) in enumerate(slot_of(packed, unpacked)):
        n, c = unpacked["words_valid"][i].sum(), unpacked["labels_valid"][i].sum()
        np.testing.assert_allclose(ours[r, s, :n, ..., :c, :], alone[i, :n, ..., :c, :], rtol=0, atol=2e-5 * scale)


LOSSES = {"sum": LossConfig(), "focal-mean": LossConfig(alpha=0.75, gamma=2.0, label_smoothing=0.1, reduction="mean")}


def test_packed_loss_equals_unpacked_and_gliner_loss(packed_setup, packed_case):
    """The loss of a packed batch equals the loss of the same examples unpacked and gliner's loss for them (its own
    collator and model), for gliner's default loss and a focal mean."""
    ref = packed_setup[0]
    examples, label_sets, unpacked, packed, logits = packed_case
    collator = ref.data_collator_class(ref.config, data_processor=ref.data_processor, prepare_labels=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = collator(examples, entity_types=label_sets)
    for name, config in LOSSES.items():
        kwargs = dict(alpha=config.alpha, gamma=config.gamma, label_smoothing=config.label_smoothing)
        with torch.no_grad():
            ref_loss = float(ref.model(**batch, reduction=config.reduction, masking="none", **kwargs).loss)
        unpacked_loss = float(gliner_loss(jnp.asarray(logits["unpacked"]), unpacked, config))
        assert unpacked_loss == pytest.approx(ref_loss, rel=1e-5), name
        packed_loss = float(gliner_loss(jnp.asarray(logits["packed"]), packed, config))
        assert packed_loss == pytest.approx(unpacked_loss, rel=1e-5), name


@pytest.mark.slow  # two gradient programs to compile: 20-40 s
def test_packed_gradients_equal_unpacked(packed_setup, packed_case):
    model = packed_setup[1]
    _, _, unpacked, packed, _ = packed_case
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def grads(params, rest, arrays):
        def loss(params):
            network = nnx.merge(graphdef, params, jax.tree.map(jnp.asarray, rest))
            return gliner_loss(network(**{k: v for k, v in arrays.items() if k != "entities"}), arrays, LossConfig())

        return jax.grad(loss)(params)

    packed_grads, unpacked_grads = (grads(params, rest, jax.tree.map(jnp.asarray, a)) for a in (packed, unpacked))
    for (path, got), want in zip(
        jax.tree_util.tree_leaves_with_path(packed_grads), jax.tree.leaves(unpacked_grads), strict=True
    ):
        scale = max(float(jnp.abs(want).max()), 1e-6)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-4 * scale, err_msg=str(path))


def test_network_refuses_mismatched_per_example_axes(packed_setup):
    _, model, processor = packed_setup
    examples, label_sets = make_examples([5, 7])
    packed = pack(collated(examples, label_sets, processor), row_length=160, pad_id=0)
    packed["labels_valid"] = packed["labels_valid"][:, 0]
    with pytest.raises(ValueError, match="same leading axes"):
        network_logits(model, packed)


# ---- the Grain pipeline ----


@pytest.fixture(scope="module")
def processor(gliner_backbone):
    tokenizer = transformers.AutoTokenizer.from_pretrained(gliner_backbone)
    tokenizer.add_tokens(["[FLERT]", "<<ENT>>", "<<SEP>>"], special_tokens=True)
    return Processor(tokenizer, max_width=3, max_len=64)


def source(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return make_examples([rng.randint(1, 60) for _ in range(n)], seed)[0]


def example_keys(batch: dict[str, np.ndarray]) -> list[tuple]:
    """Each example's identity, packed or not: its real tokens and its entity rows, in row then slot order."""
    packed = batch["words_valid"].ndim == 3
    keys = []
    for r, (ids, segments) in enumerate(zip(batch["input_ids"], batch["attention_mask"], strict=True)):
        for s in range(1, segments.max(initial=0) + 1):
            entities = batch["entities"][r, s - 1] if packed else batch["entities"][r]
            keys.append((tuple(ids[segments == s].tolist()), tuple(map(tuple, entities.tolist()))))
    return keys


def test_packed_pipeline_carries_the_unpacked_examples_per_host(processor):
    """Each host's packed batch holds exactly the examples (tokens, labels, targets) of its unpacked batch, in rows
    of at most row_length tokens, a multiple of row_multiple rows."""
    data = source(40)
    common = dict(global_batch_size=8, seed=5, num_epochs=1)
    for host in range(2):
        plain = make_train_dataset(data, processor, process_index=host, process_count=2, **common)
        packed = make_train_dataset(
            data, processor, process_index=host, process_count=2, packing=Packing(256, 2), **common
        )
        for want, got in zip(take(iter(plain), 5), take(iter(packed), 5), strict=True):
            assert sorted(example_keys(got)) == sorted(example_keys(want))
            assert got["input_ids"].shape[0] % 2 == 0 and got["input_ids"].shape[1] <= 256
            assert got["words_valid"].shape[2:] == want["words_valid"].shape[1:]
            assert got["span_idx"].shape[:2] == got["words_valid"].shape[:2]


def test_packed_iterator_state_restores_the_same_batches(processor):
    dataset = make_train_dataset(
        source(30, seed=1),
        processor,
        global_batch_size=6,
        seed=2,
        process_index=0,
        process_count=1,
        packing=Packing(256),
    )
    iterator = iter(dataset)
    take(iterator, 2)
    assert_state_restores(dataset, iterator, 3)


def test_packing_pads_less_than_one_example_per_row(processor):
    data = source(64, seed=3)
    common = dict(global_batch_size=8, seed=0, process_index=0, process_count=1, num_epochs=1)
    padding = {}
    for name, packing in (("plain", None), ("packed", Packing(256))):
        batches = take(iter(make_train_dataset(data, processor, packing=packing, **common)), 8)
        real = sum(int((b["attention_mask"] > 0).sum()) for b in batches)
        padding[name] = 1 - real / sum(b["attention_mask"].size for b in batches)
    assert padding["packed"] < padding["plain"] / 2
