"""The training data pipeline against gliner's training collator (label sampling, span and token targets), also for
bi-encoders. Records, ArrayRecord / TFDS sources, per-host slicing, iterator checkpoints and shape buckets:
tests/unit/test_data_pipeline.py."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import transformers

from gliner_jax import GLiNER
from gliner_jax.testing.builders import build_reference
from gliner_jax.text.collate import Processor
from gliner_jax.training.data import (
    collate,
    make_train_dataset,
    sample_labels,
    sample_shared_labels,
)
from tests.utils.batches import BATCH, numbered_examples, row_keys, take
from tests.utils.eval_batches import make_eval_batches

MAX_LEN = 12
MAX_WIDTH = 3


@pytest.fixture(scope="module", params=["markerV0", "token_level"])
def setup(request, gliner_backbone, tmp_path_factory):
    """(reference GLiNER, our Processor on the tokenizer saved with it) for one span mode."""
    directory = tmp_path_factory.mktemp(request.param)
    ref = build_reference(gliner_backbone, directory, span_mode=request.param, max_width=MAX_WIDTH, max_len=MAX_LEN)
    return ref, Processor.from_config(ref.config, transformers.AutoTokenizer.from_pretrained(directory))


def patch_reference_random(monkeypatch, seed: int) -> None:
    """Make gliner's module-level random calls draw from Random(seed), iterating sets in sorted order (as we do)."""
    draws = random.Random(seed)

    def shuffle(items: list) -> None:
        items.sort()
        draws.shuffle(items)

    monkeypatch.setattr(random, "sample", lambda population, k: draws.sample(sorted(population), k))
    monkeypatch.setattr(random, "randint", draws.randint)
    monkeypatch.setattr(random, "shuffle", shuffle)


def reference_collate(ref, examples: list[dict], entity_types: list[str] | None = None) -> dict:
    """gliner's training collator output (labels as NumPy) and each row's labels in class-id order."""
    collator = ref.data_collator_class(
        ref.config, data_processor=ref.data_processor, prepare_labels=True, return_id_to_classes=True
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = collator(examples, entity_types=entity_types)
    mappings = batch["id_to_classes"]
    mappings = mappings if isinstance(mappings, list) else [mappings] * len(examples)
    extra = {name: batch[name].numpy() for name in ("labels_input_ids", "labels_attention_mask") if name in batch}
    return extra | {
        "labels": batch["labels"].numpy(),
        "input_ids": batch["input_ids"].numpy(),
        "label_sets": [[mapping[c] for c in sorted(mapping)] for mapping in mappings],
    }


def dense_targets(entities: np.ndarray, shape: tuple[int, ...], span_mode: str) -> np.ndarray:
    """Our `entities` rows as the reference's label tensor: span [B, W*K, C] one-hot at s*K + (e - s); token
    [B, W, C, 3] with start, end and inside markers."""
    dense = np.zeros(shape, np.float32)
    for b, row in enumerate(entities.tolist()):
        for s, e, c in row:
            if c == 0:
                continue
            if span_mode == "token_level":
                dense[b, s, c - 1, 0] = dense[b, e, c - 1, 1] = 1
                dense[b, s : e + 1, c - 1, 2] = 1
            else:
                dense[b, s * MAX_WIDTH + e - s, c - 1] = 1
    return dense


def assert_targets_match(ours: dict, want: dict, span_mode: str) -> None:
    """Our entities reproduce the reference labels on its region and are empty elsewhere; ids match too."""
    labels = want["labels"]
    num_rows, num_classes = labels.shape[0], ours["labels_valid"].shape[1]
    if span_mode == "token_level":
        shape = (num_rows, ours["words_valid"].shape[1], num_classes, 3)
    else:
        shape = (num_rows, ours["span_mask"].shape[1], num_classes)
    region = (slice(None), slice(0, labels.shape[1]), slice(0, labels.shape[2]))  # words or spans, classes
    dense = dense_targets(ours["entities"][:num_rows], shape, span_mode)
    np.testing.assert_array_equal(dense[region], labels)
    dense[region] = 0
    assert not dense.any()
    ids = want["input_ids"]
    np.testing.assert_array_equal(ours["input_ids"][:num_rows, : ids.shape[1]], ids)
    e = ours["entities"].shape[1]
    assert e >= 8 and e & (e - 1) == 0 and ours["entities"].dtype == np.int32


@pytest.mark.parametrize("max_neg_type_ratio", [0, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_labels_and_targets_match_reference(setup, monkeypatch, seed, max_neg_type_ratio):
    ref, processor = setup
    monkeypatch.setattr(ref.data_processor.config, "max_types", 3)
    monkeypatch.setattr(ref.data_processor.config, "max_neg_type_ratio", max_neg_type_ratio)
    patch_reference_random(monkeypatch, seed)
    want = reference_collate(ref, BATCH)

    label_sets = sample_labels(BATCH, random.Random(seed), max_types=3, max_neg_type_ratio=max_neg_type_ratio)
    assert label_sets == want["label_sets"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = collate(BATCH, label_sets, processor, batch_size=len(BATCH) + 2)
    assert_targets_match(ours, want, processor.span_mode)
    assert not ours["entities"][len(BATCH) :].any()
    expected_keys = {"input_ids", "attention_mask", "words_mask", "words_valid", "labels_valid", "entities"}
    if processor.span_mode != "token_level":
        expected_keys |= {"span_idx", "span_mask"}
    assert set(ours) == expected_keys


def test_eval_batches_match_reference(setup):
    ref, processor = setup
    examples = [BATCH[i] for i in (0, 1, 2, 3, 5)]
    labels = sorted({entity[2] for ex in examples for entity in ex["ner"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(make_eval_batches(examples, processor, batch_size=3))
    assert [len(batch.examples) for batch in batches] == [3, 2]
    assert [batch.examples for batch in batches] == [examples[:3], examples[3:]]
    for batch in batches:
        assert batch.labels == labels
        rows = batch.examples
        want = reference_collate(ref, rows, entity_types=[labels] * len(rows))  # flat lists break its labels
        assert want["label_sets"] == [labels] * len(rows)
        assert_targets_match(batch.arrays, want, processor.span_mode)
        assert batch.arrays["input_ids"].shape[0] == 3
        np.testing.assert_array_equal(batch.arrays["labels_valid"][: len(rows)].sum(1), len(labels))
        assert not batch.arrays["labels_valid"][len(rows) :].any() and not batch.arrays["entities"][len(rows) :].any()


@pytest.fixture(scope="module")
def bi_setup(gliner_backbone, labels_backbone, tmp_path_factory):
    """(reference bi-encoder GLiNER, our Processor for it: text and label tokenizers saved with it)."""
    directory = tmp_path_factory.mktemp("bi")
    ref = build_reference(
        gliner_backbone, directory, labels_encoder=str(labels_backbone), max_width=MAX_WIDTH, max_len=MAX_LEN
    )
    return ref, GLiNER.from_pretrained(directory).processor


def test_bi_encoder_batch_matches_reference(bi_setup):
    """A bi-encoder's training batch: gliner's targets and word tokens for the shared labels, and its label table
    tokenized as gliner's collator tokenizes it, rows padded to the label-row multiple."""
    ref, processor = bi_setup
    table = sample_shared_labels(BATCH, random.Random(1))
    want = reference_collate(ref, BATCH, entity_types=[table] * len(BATCH))
    assert want["label_sets"] == [table] * len(BATCH)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = collate(
            BATCH, [table] * len(BATCH), processor, batch_size=len(BATCH) + 2, label_table=table, label_rows_multiple=5
        )
    assert_targets_match(ours, want, processor.span_mode)
    rows, width = want["labels_input_ids"].shape
    assert rows == len(table) and ours["labels_input_ids"].shape[0] % 5 == 0
    np.testing.assert_array_equal(ours["labels_input_ids"][:rows, :width], want["labels_input_ids"])
    np.testing.assert_array_equal(ours["labels_attention_mask"][:rows, :width], want["labels_attention_mask"])
    assert not ours["labels_attention_mask"][rows:].any() and not ours["labels_attention_mask"][:, width:].any()
    live = ours["words_valid"].any(1)
    assert (ours["labels_index"][live] == np.arange(len(table))).all() and ours["labels_valid"][live].all()
    assert set(ours) >= {"labels_index", "labels_input_ids", "labels_attention_mask"}


def test_bi_encoder_hosts_share_the_global_label_table(bi_setup):
    """Each host collates its own rows, but with the global batch's label table, whole and the same on every host."""
    _, processor = bi_setup
    source = numbered_examples(16)
    common = dict(global_batch_size=4, seed=3, num_epochs=1, label_rows_multiple=4)
    whole = take(iter(make_train_dataset(source, processor, process_index=0, process_count=1, **common)), 4)
    hosts = [
        take(iter(make_train_dataset(source, processor, process_index=p, process_count=2, **common)), 4)
        for p in range(2)
    ]
    for full, first, second in zip(whole, *hosts, strict=True):
        assert row_keys(first) + row_keys(second) == row_keys(full)
        for name in ("labels_input_ids", "labels_attention_mask"):
            np.testing.assert_array_equal(first[name], full[name])
            np.testing.assert_array_equal(second[name], full[name])
        assert full["labels_input_ids"].shape[0] % 4 == 0
        np.testing.assert_array_equal(
            np.concatenate([first["labels_index"], second["labels_index"]]), full["labels_index"]
        )
