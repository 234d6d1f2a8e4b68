"""The training data pipeline against gliner's training collator (label sampling, span and token targets), plus
records, ArrayRecord / TFDS sources, per-host slicing, iterator checkpoints and shape buckets."""

from __future__ import annotations

import json
import logging
import random
import warnings

import numpy as np
import pytest
import transformers

from gliner_jax import GLiNER, cli
from gliner_jax.processing import Processor
from gliner_jax.testing.builders import build_reference
from gliner_jax.training.data import (
    ArrayRecordExamples,
    collate,
    make_train_dataset,
    open_source,
    read_examples,
    sample_labels,
    sample_shared_labels,
    tfds_source,
)
from tests.utils.batches import assert_state_restores, take
from tests.utils.eval_batches import make_eval_batches

MAX_LEN = 12
MAX_WIDTH = 3


def example(text: str, ner: list, **extra) -> dict:
    return {"tokenized_text": text.split(), "ner": ner, **extra}


# One training batch exercising every rule: several labels on one span, a repeated entity, truncation past
# MAX_LEN, entities wider than MAX_WIDTH, labels outside the classes, ner_labels (also empty), ner_negatives, no
# entities, no words.
BATCH = [
    example("Barack Obama was born in Honolulu Hawaii", [[0, 1, "person"], [5, 5, "city"], [5, 6, "location"]]),
    example(
        "Apple Inc. released the iPhone in San Francisco",
        [[0, 1, "company"], [0, 1, "organisation"], [4, 4, "product"], [6, 7, "city"], [0, 1, "company"]],
    ),
    example(
        "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911 again",
        [[0, 1, "person"], [4, 7, "award"], [9, 9, "date"], [11, 12, "field"], [14, 14, "date"]],
    ),
    example("The Eiffel Tower", []),
    example("Angela Merkel led Germany", [[0, 1, "person"], [3, 3, "country"]], ner_labels=["country", "city"]),
    example("Paris is nice", [[0, 0, "city"]], ner_negatives=["river", "mountain"]),
    example("", []),
    example("Zürich and Kraków", [[0, 0, "city"]], ner_labels=[]),
]


@pytest.fixture(scope="module", params=["markerV0", "token_level"])
def setup(request, gliner_backbone, tmp_path_factory):
    """(reference GLiNER, our Processor on the tokenizer saved with it) for one span mode."""
    directory = tmp_path_factory.mktemp(request.param)
    ref = build_reference(gliner_backbone, directory, span_mode=request.param, max_width=MAX_WIDTH, max_len=MAX_LEN)
    return ref, Processor.from_config(ref.config, transformers.AutoTokenizer.from_pretrained(directory))


@pytest.fixture(scope="module")
def processor(gliner_backbone):
    """A span-mode Processor on the test tokenizer (with gliner's added tokens), for the pipeline tests."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(gliner_backbone)
    tokenizer.add_tokens(["[FLERT]", "<<ENT>>", "<<SEP>>"], special_tokens=True)
    return Processor(tokenizer, max_width=MAX_WIDTH, max_len=64)


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


def test_shared_labels_hand_checked():
    """gliner's bi-encoder label pool: every example's positives and ner_negatives, or its ner_labels instead,
    one list for the whole batch, capped at max_types per example; a batch without entities or labels gets ""."""
    pool = sample_shared_labels(BATCH, random.Random(0), max_types=25)
    expected = {"person", "city", "location", "company", "organisation", "product", "award", "date", "field"}
    expected |= {"country", "river", "mountain"}  # ner_labels of "Angela Merkel ...", ner_negatives of "Paris ..."
    assert sorted(pool) == sorted(expected)
    assert pool == sample_shared_labels(BATCH, random.Random(0), max_types=25) != sorted(pool)  # seeded shuffle
    assert len(sample_shared_labels(BATCH, random.Random(0), max_types=1)) == len(BATCH)
    assert sample_shared_labels([example("a b", []), example("c", [])], random.Random(0)) == [""]


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


def write_json(path, records, *, lines: bool) -> None:
    text = "\n".join(json.dumps(r) for r in records) + "\n" if lines else json.dumps(records)
    path.write_text(text, encoding="utf-8")


def test_read_json_and_jsonl(tmp_path):
    write_json(tmp_path / "data.json", BATCH, lines=False)
    write_json(tmp_path / "data.jsonl", BATCH, lines=True)
    from_json, problems = read_examples(tmp_path / "data.json")
    assert problems == [] and from_json == BATCH
    assert read_examples(tmp_path / "data.jsonl") == (BATCH, [])


BAD_RECORDS = {
    1: ({"tokenized_text": ["a"], "ner": [[0, 1, "x"]]}, "out of range"),
    2: ({"tokenized_text": ["a", "b"], "ner": [[1, 0, "x"]]}, "end 0 < start 1"),
    3: ({"tokenized_text": ["a"], "ner": [[0.0, 0, "x"]]}, "integers"),
    4: ({"tokenized_text": ["a"]}, "missing key 'ner'"),
    5: ({"tokenized_text": ["a", 1], "ner": []}, "tokenized_text"),
    6: ({"tokenized_text": ["a"], "ner": [[0, 0, 5]]}, "label"),
    7: ({"tokenized_text": ["a"], "ner": [], "ner_labels": "x"}, "ner_labels"),
    8: ("not an object", "object"),
    10: ({"tokenized_text": ["a", "b"], "ner": [[True, True, "x"]]}, "integers"),
    11: ({"tokenized_text": ["a"], "ner": [[-1, 0, "x"]]}, "out of range"),
    12: ({"tokenized_text": ["a"], "ner": [[0, 0]]}, "[start, end, label]"),
}


def test_bad_records_are_reported_and_skipped(tmp_path):
    good = [example("a b", [[0, 1, "x"]]), example("c", [])]
    records = [good[0], *(BAD_RECORDS[i][0] for i in range(1, 9)), good[1], *(BAD_RECORDS[i][0] for i in (10, 11, 12))]
    write_json(tmp_path / "data.json", records, lines=False)
    with pytest.warns(UserWarning, match="skipped 11 bad record"):
        examples, problems = read_examples(tmp_path / "data.json")
    assert examples == good
    assert [p.index for p in problems] == sorted(BAD_RECORDS)
    for problem in problems:
        assert BAD_RECORDS[problem.index][1] in problem.reason
    with pytest.raises(ValueError, match=r"record 1: .*out of range"):
        read_examples(tmp_path / "data.json", strict=True)

    (tmp_path / "data.jsonl").write_text(json.dumps(good[0]) + "\n{oops\n\n" + json.dumps(good[1]) + "\n")
    with pytest.warns(UserWarning, match="skipped 1 bad record"):
        examples, problems = read_examples(tmp_path / "data.jsonl")
    assert examples == good and [(p.index, p.reason.startswith("invalid JSON")) for p in problems] == [(1, True)]


def test_array_record_round_trip_via_cli(tmp_path, capsys):
    records = [*BATCH, BAD_RECORDS[2][0], example("last one", [[1, 1, "x"]])]
    write_json(tmp_path / "train.jsonl", records, lines=True)
    with pytest.warns(UserWarning, match="skipped 1"):
        assert cli.main(["data", "prepare", str(tmp_path / "train.jsonl"), str(tmp_path / "out"), "--shards", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["records"] == len(BATCH) + 1 and summary["skipped"] == 1
    assert summary["problems"][0]["index"] == len(BATCH)
    assert len(summary["shards"]) == 3 and all("-of-00003" in path for path in summary["shards"])
    source = ArrayRecordExamples(tmp_path / "out")
    assert [source[i] for i in range(len(source))] == [*BATCH, records[-1]]
    assert len(open_source(str(tmp_path / "out"))) == len(source)
    with pytest.warns(UserWarning, match="skipped 1"):
        assert open_source(str(tmp_path / "train.jsonl")) == [*BATCH, records[-1]]

    with pytest.raises(SystemExit, match="record 8"):
        cli.main(["data", "prepare", str(tmp_path / "train.jsonl"), str(tmp_path / "strict"), "--strict"])


def test_tfds_builder_conversion(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-WORK-OF-ART", "I-WORK-OF-ART"]
    sentences = [
        (["Alice", "Smith", "went", "to", "New", "York"], ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]),
        (["Bob", "Paris", "Rome", "x"], ["I-PER", "B-LOC", "B-LOC", "O"]),  # IOB1 start; B-B splits
        (["Hamlet", "by", "Kate", "Lyon"], ["B-WORK-OF-ART", "O", "I-PER", "I-LOC"]),  # type change splits
        (["nothing"], ["O"]),
    ]

    class GlinerJaxTinyNer(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = {
                "tokens": tfds.features.Sequence(tfds.features.Text()),
                "ner": tfds.features.Sequence(tfds.features.ClassLabel(names=tags)),
            }
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, (tokens, ner) in enumerate(sentences):
                yield i, {"tokens": tokens, "ner": ner}

    builder = GlinerJaxTinyNer(data_dir=tmp_path, file_format="array_record")
    builder.download_and_prepare()
    source = tfds_source(builder.name, "train", data_dir=tmp_path, label_map={"PER": "person", "LOC": "location"})
    got = sorted((source[i] for i in range(len(source))), key=lambda ex: ex["tokenized_text"])
    assert got == sorted(
        [
            example("Alice Smith went to New York", [[0, 1, "person"], [4, 5, "location"]]),
            example("Bob Paris Rome x", [[0, 0, "person"], [1, 1, "location"], [2, 2, "location"]]),
            example("Hamlet by Kate Lyon", [[0, 0, "WORK-OF-ART"], [2, 2, "person"], [3, 3, "location"]]),
            example("nothing", []),
        ],
        key=lambda ex: ex["tokenized_text"],
    )


def numbered_examples(n: int, seed: int = 0) -> list[dict]:
    """Examples of distinct lengths (at most 60 words: the length names the example) with random entities."""
    rng = random.Random(seed)
    types = [f"type{i}" for i in range(30)]
    examples = []
    for length in rng.sample(range(1, 61), n):
        words = [rng.choice(["Paris", "Apple", "won", "the", "Prize", "Nobel"]) for _ in range(length)]
        ner = []
        for _ in range(rng.randint(0, 6)):
            start = rng.randrange(length)
            ner.append([start, min(length - 1, start + rng.randint(0, 4)), rng.choice(types)])
        examples.append({"tokenized_text": words, "ner": ner})
    return examples


def row_keys(batch: dict) -> list[tuple]:
    """Each row's identity: its real token ids and entity rows."""
    return [
        (tuple(ids[mask == 1].tolist()), tuple(map(tuple, ents.tolist())))
        for ids, mask, ents in zip(batch["input_ids"], batch["attention_mask"], batch["entities"], strict=True)
    ]


def test_per_host_slices_cover_each_global_batch_once(processor):
    source = numbered_examples(24)
    common = dict(global_batch_size=4, seed=3, num_epochs=1)
    whole = take(iter(make_train_dataset(source, processor, process_index=0, process_count=1, **common)), 6)
    hosts = [
        take(iter(make_train_dataset(source, processor, process_index=p, process_count=2, **common)), 6)
        for p in range(2)
    ]
    for full, first, second in zip(whole, *hosts, strict=True):
        assert first["input_ids"].shape[0] == second["input_ids"].shape[0] == 2
        rows = row_keys(full)
        assert len(set(rows)) == 4 and row_keys(first) + row_keys(second) == rows
    # One epoch: every example exactly once.
    lengths = [int(n) for batch in whole for n in batch["words_valid"].sum(1)]
    assert sorted(lengths) == sorted(len(ex["tokenized_text"]) for ex in source)
    with pytest.raises(ValueError, match="not divisible"):
        make_train_dataset(source, processor, global_batch_size=5, seed=0, process_index=0, process_count=2)


def test_iterator_state_restores_the_same_batches(processor, caplog):
    source = numbered_examples(10)
    source[4] = {"tokenized_text": ["x"], "ner": [[0, 3, "bad"]]}  # skipped, never raised
    dataset = make_train_dataset(source, processor, global_batch_size=4, seed=7, process_index=0, process_count=1)
    iterator = iter(dataset)
    with caplog.at_level(logging.WARNING):
        first = take(iterator, 3)
    assert any("skipping record 4" in message for message in caplog.messages)
    # 12 positions cover the 10 records once: 11 good rows and the bad record's row left as padding.
    assert sum(int(batch["words_valid"].any(1).sum()) for batch in first) == 11
    expected = assert_state_restores(dataset, iterator, 2)
    # Different batches follow from a different position.
    assert row_keys(take(iter(dataset), 1)[0]) != row_keys(expected[0])


def test_a_stream_of_batches_has_few_shapes(processor):
    source = numbered_examples(48, seed=1)
    iterator = iter(
        make_train_dataset(source, processor, global_batch_size=4, seed=0, process_count=1, process_index=0)
    )
    signatures = set()
    for batch in take(iterator, 32):
        (b, t), (_, w), (_, c), (_, e, _) = (
            batch["input_ids"].shape,
            batch["words_valid"].shape,
            batch["labels_valid"].shape,
            batch["entities"].shape,
        )
        assert (
            b == 4
            and t % 32 == 0
            and w in (32, processor.max_len)
            and c in (4, 6, 8, 12, 16, 24, 32)
            and e in (8, 16, 32)
        )
        assert batch["span_idx"].shape == (4, w * MAX_WIDTH, 2) and batch["span_mask"].shape == (4, w * MAX_WIDTH)
        signatures.add(tuple((key, value.shape) for key, value in sorted(batch.items())))
    assert len(signatures) <= 16  # 32 batches: token, word, label and entity buckets combined
