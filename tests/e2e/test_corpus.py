"""`gliner-jax predict --file IN --output OUT`: streamed, one output line per text in input order, bad lines reported
and skipped (or refused with --strict), resumed after a SIGKILL with the file of an uninterrupted run, and shared by
two processes (jax.distributed on CPU) into the file of a one-process run."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from gliner_jax import GLiNER, annotate
from gliner_jax.annotate import PROGRESS_SUFFIX, part_path
from gliner_jax.cli import main
from gliner_jax.data_formats import read_text_lines
from gliner_jax.testing.builders import CORPUS, build_reference, quantile_thresholds, relation_thresholds
from tests.utils import fresh
from tests.utils.fresh import CLI

LABELS = ["person", "location", "date"]


@pytest.fixture(scope="module")
def model_dir(gliner_backbone, tmp_path_factory) -> tuple[Path, float]:
    """A saved span model (scaled head) and a threshold that finds entities in CORPUS."""
    directory = tmp_path_factory.mktemp("model")
    config = dict(span_mode="markerV0", hidden_size=48, max_width=4, max_len=48)
    reference = build_reference(gliner_backbone, directory, logit_scale=4.0, **config)
    return directory, quantile_thresholds(reference, CORPUS, LABELS, (0.97,))[0]


def corpus_lines(count: int) -> list[str]:
    """`count` JSONL records of different lengths, with an id field and a unicode tail."""
    lines = []
    for i in range(count):
        text = " ".join(CORPUS[j % len(CORPUS)] for j in range(i, i + 1 + i % 3)) + f" ({i} Zürich)"
        lines.append(json.dumps({"id": i, "text": text}, ensure_ascii=False))
    return lines


def predict_args(model: Path, threshold: float, source: Path, output: Path, *extra: str) -> list[str]:
    return [
        "predict",
        "--model",
        str(model),
        "--labels",
        ",".join(LABELS),
        "--threshold",
        str(threshold),
        "--file",
        str(source),
        "--output",
        str(output),
        "--block-lines",
        "8",
        "--batch-size",
        "4",
        *extra,
    ]


def test_bad_lines_are_reported_skipped_and_counted(model_dir, tmp_path, capsys):
    """Not UTF-8, not JSON, no text: each named by its line number and skipped; every other line gives one output
    line in input order (its fields plus the entities `inference` finds); --strict refuses the file at the first."""
    directory, threshold = model_dir
    good = corpus_lines(12)
    raw = [line.encode() for line in good]
    raw[3:3] = [b'{"id": "latin-1", "text": "Z\xfcrich"}']  # line 4
    raw[6:6] = [b'{"id": 7, "text": "unterminated}']  # line 7
    raw[8:8] = [b"", b"   "]  # blank lines 9, 10: neither texts nor problems
    raw[11:11] = [b'{"id": 12, "words": ["no", "text"]}']  # line 12
    raw.append(b"a plain line about Marie Curie in Paris")
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(raw) + b"\n")
    output = tmp_path / "out.jsonl"

    assert main(predict_args(directory, threshold, source, output)) == 0
    err = capsys.readouterr().err
    assert f"{source}:4: not UTF-8 (byte 0xfc at column 29); skipped" in err
    assert f"{source}:7: invalid JSON" in err
    assert f"{source}:12: a JSON record needs a string 'text'" in err
    assert "13 texts; skipped 3 bad line(s): 4, 7, 12" in err
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    texts = [json.loads(line)["text"] for line in good] + ["a plain line about Marie Curie in Paris"]
    assert [r["text"] for r in records] == texts
    assert [r.get("id") for r in records] == [*range(12), None]
    expected = GLiNER.from_pretrained(directory).inference(texts, LABELS, threshold=threshold)
    assert sum(map(len, expected)) > 0
    for record, entities in zip(records, expected, strict=True):  # batched otherwise: scores within rounding
        assert [{**e, "score": None} for e in record["entities"]] == [{**e, "score": None} for e in entities]
        assert [e["score"] for e in record["entities"]] == pytest.approx([e["score"] for e in entities], abs=1e-6)
    assert not (tmp_path / ("out.jsonl" + PROGRESS_SUFFIX)).exists()

    with pytest.raises(SystemExit, match="exists: remove it, choose another output, or pass --overwrite"):
        main(predict_args(directory, threshold, source, output))
    with pytest.raises(SystemExit, match=rf"error: {source}:4: not UTF-8"):
        main(predict_args(directory, threshold, source, tmp_path / "strict.jsonl", "--strict"))


def test_a_bi_encoder_streams_a_file(gliner_backbone, labels_backbone, tmp_path):
    """A bi-encoder takes the same streamed path: one output line per text, the entities `inference` finds."""
    directory = tmp_path / "bi"
    config = dict(span_mode="markerV0", hidden_size=64, max_width=4, max_len=48, num_rnn_layers=1)
    reference = build_reference(
        gliner_backbone, directory, labels_encoder=str(labels_backbone), logit_scale=5.0, **config
    )
    threshold = quantile_thresholds(reference, CORPUS, LABELS, (0.97,))[0]
    good = corpus_lines(12)
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(good) + "\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"

    assert main(predict_args(directory, threshold, source, output)) == 0
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    texts = [json.loads(line)["text"] for line in good]
    assert [r["text"] for r in records] == texts
    expected = GLiNER.from_pretrained(directory).inference(texts, LABELS, threshold=threshold)
    assert sum(map(len, expected)) > 0
    for record, entities in zip(records, expected, strict=True):  # batched otherwise: scores within rounding
        assert [{**e, "score": None} for e in record["entities"]] == [{**e, "score": None} for e in entities]
        assert [e["score"] for e in record["entities"]] == pytest.approx([e["score"] for e in entities], abs=1e-5)


def test_a_relation_model_writes_relations(gliner_backbone, model_dir, tmp_path, monkeypatch):
    """`--relations`: each record gets the entities and relations of gliner's inference over the same texts in the
    same batches (blocks of 8 lines, batches of 4), also when a run that failed after its first block is resumed; a
    relation model without --relations, and --relations for an entity model, are refused in one line before
    anything is written."""
    directory = tmp_path / "relex"
    config = dict(span_mode="markerV0", hidden_size=32, max_width=4, max_len=48, relations_layer="dot")
    reference = build_reference(gliner_backbone, directory, logit_scale=4.0, **config)
    relations = ["works at", "located in", "born in"]
    good = corpus_lines(12)
    texts = [json.loads(line)["text"] for line in good]
    options = relation_thresholds(reference, texts, LABELS, relations, 4, batch_size=4)
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(good) + "\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    thresholds = ("--adjacency-threshold", str(options["adjacency_threshold"]))
    thresholds += ("--relation-threshold", str(options["relation_threshold"]))
    args = predict_args(directory, options["threshold"], source, output, "--relations", ",".join(relations))

    written = []

    def fail_at_second_block(records: list[dict], numbers: list[int] | None) -> str:
        if written:
            raise RuntimeError("stopped")
        written.append(records)
        return jsonl(records, numbers)

    jsonl = annotate._jsonl
    monkeypatch.setattr(annotate, "_jsonl", fail_at_second_block)
    with pytest.raises(RuntimeError, match="stopped"):
        main([*args, *thresholds])
    progress = tmp_path / ("out.jsonl" + PROGRESS_SUFFIX)
    assert json.loads(progress.read_text())["next_line"] == 9
    monkeypatch.undo()
    assert main([*args, *thresholds]) == 0
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == list(range(12))
    assert records[:8] == written[0]
    entities, found = reference.inference(texts, LABELS, relations=relations, batch_size=4, **options)
    assert sum(map(len, found)) >= 3
    for record, text_entities, text_relations in zip(records, entities, found, strict=True):
        for key, expected in (("entities", text_entities), ("relations", text_relations)):
            assert [{**item, "score": None} for item in record[key]] == [{**item, "score": None} for item in expected]
            assert [item["score"] for item in record[key]] == pytest.approx([item["score"] for item in expected])

    with pytest.raises(SystemExit, match=r"^error: the model extracts relations: pass --relations"):
        main(predict_args(directory, options["threshold"], source, tmp_path / "no.jsonl"))
    entity_model, threshold = model_dir
    refused = predict_args(entity_model, threshold, source, tmp_path / "no.jsonl", "--relations", "born in")
    with pytest.raises(SystemExit, match=r"^error: --relations: the model is not a relation extraction model"):
        main(refused)
    assert not list(tmp_path.glob("no.jsonl*"))


def test_text_lines_resume_where_a_line_ends(tmp_path):
    """Reading from a line's `end` offset (and the next line number) gives exactly the lines after it."""
    source = tmp_path / "in"  # no suffix: lines, those starting with "{" read as JSON
    source.write_bytes(b'\xef\xbb\xbfHello Z\xc3\xbcrich\r\n\n{"text": "J\xe2\x80\xa8son"}\nbad \xff\nlast')
    lines = list(read_text_lines(source))
    assert [(line.number, line.record, line.problem) for line in lines] == [
        (1, {"text": "Hello Zürich"}, None),
        (3, {"text": "J\u2028son"}, None),
        (4, None, "not UTF-8 (byte 0xff at column 5)"),
        (5, {"text": "last"}, None),
    ]
    for i, line in enumerate(lines):
        assert list(read_text_lines(source, first=line.number + 1, offset=line.end)) == lines[i + 1 :]


@pytest.mark.slow
def test_sigkilled_predict_resumes_to_the_uninterrupted_file(model_dir, tmp_path, capsys):
    directory, threshold = model_dir
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(corpus_lines(240)) + "\n", encoding="utf-8")
    expected = tmp_path / "uninterrupted.jsonl"
    assert main(predict_args(directory, threshold, source, expected)) == 0

    output = tmp_path / "out.jsonl"
    progress = tmp_path / ("out.jsonl" + PROGRESS_SUFFIX)
    command = [str(CLI), *predict_args(directory, threshold, source, output)]
    env = fresh.fresh_env(cache=tmp_path / "cache")
    process = fresh.start(command, env, stderr=None)
    deadline = time.monotonic() + 300
    while not (progress.exists() and json.loads(progress.read_text())["next_line"] > 40):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = json.loads(progress.read_text())["next_line"]
    assert 40 < killed_at <= 240  # killed mid-way: the progress file is still there

    fresh.run(command, env)
    assert output.read_bytes() == expected.read_bytes()
    assert len(output.read_text(encoding="utf-8").splitlines()) == 240
    assert not progress.exists()


@pytest.mark.slow
def test_two_processes_write_the_file_of_one(model_dir, tmp_path):
    """Two processes (jax.distributed over gloo, one CPU device each) take alternate blocks and process 0 merges
    their parts: the file equals a one-process run's, bad lines skipped by whichever process owns them."""
    directory, threshold = model_dir
    lines = corpus_lines(60)
    lines[20] = "{broken"
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = fresh.fresh_env(cache=tmp_path / "cache")
    single = tmp_path / "single.jsonl"
    fresh.run([str(CLI), *predict_args(directory, threshold, source, single)], env)

    output = tmp_path / "out.jsonl"
    address = f"127.0.0.1:{fresh.free_port()}"
    processes = [
        fresh.start(
            [
                str(CLI),
                *predict_args(directory, threshold, source, output),
                *("--coordinator-address", address, "--num-processes", "2", "--process-id", str(index)),
            ],
            dict(env, JAX_COMPILATION_CACHE_DIR=str(tmp_path / f"cache-{index}")),
        )
        for index in range(2)
    ]
    errors = fresh.finish(processes)
    assert output.read_bytes() == single.read_bytes()
    assert len(single.read_text(encoding="utf-8").splitlines()) == 59
    assert "in.jsonl:21: invalid JSON" in errors[0]  # line 21 is in block 2 (lines 17-24), process 0's
    assert not any(path.name.startswith("out.jsonl.") for path in tmp_path.iterdir())
    assert not part_path(output, 0, 2).exists()
