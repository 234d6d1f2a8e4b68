"""Packed training batches (several examples per row): the packed layout, the network's per-example logits and the
loss against the same examples unpacked and against gliner's own loss. The row plan and the Grain pipeline:
tests/unit/test_packing_pipeline.py."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from gliner_jax.checkpoint_io import load_gliner
from gliner_jax.packing import TOKEN_KEYS, pack
from gliner_jax.testing.builders import build_reference
from gliner_jax.text.collate import Processor
from gliner_jax.training.data import collate
from gliner_jax.training.loss import LossConfig, gliner_loss
from tests.utils.batches import make_examples

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
