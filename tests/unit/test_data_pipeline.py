"""The training data pipeline without a reference: shared label pools, records, ArrayRecord / TFDS sources,
per-host slicing, iterator checkpoints and shape buckets (against gliner's collator:
tests/parity/test_data_vs_gliner.py)."""

from __future__ import annotations

import json
import logging
import random

import pytest

from gliner_jax import cli
from gliner_jax.data_formats import read_examples
from gliner_jax.training.data import (
    ArrayRecordExamples,
    make_train_dataset,
    open_source,
    sample_shared_labels,
    tfds_source,
)
from tests.utils.batches import BATCH, assert_state_restores, example, numbered_examples, row_keys, take

MAX_WIDTH = 3


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
    assert summary["records"] == len(BATCH) + 1 and summary["skipped"] == 0  # the file's bad record: warned above
    assert [(s["name"], s["examples"], s["written"]) for s in summary["sources"]] == [("train", 9, 9)]
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
