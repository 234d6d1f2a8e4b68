"""A weighted mixture of training sources (`data.sources`): Grain's proportions, the same stream for a seed, a
restored iterator continuing it, the per-source counts the batches carry, the config's refusals, and `gliner-jax data
prepare` writing a mixture into ArrayRecord shards."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from gliner_jax import cli
from gliner_jax.training.config import load_train_config
from gliner_jax.training.data import (
    SOURCE_COUNTS,
    ArrayRecordExamples,
    WeightedSource,
    make_train_dataset,
    open_source,
)
from tests.utils.batches import assert_state_restores, row_keys, take

BATCH, STEPS = 8, 50


def words(n: int, word: str) -> dict:
    return {"tokenized_text": [word] * n, "ner": [[0, 0, "thing"]]}


# Rows tell their source by their number of words: "news" has 1 to 7 words, "web" 11 to 15.
NEWS = [words(n, "Paris") for n in range(1, 8)]
WEB = [words(n, "Apple") for n in range(11, 16)]


def mixture(processor, seed: int = 0):
    sources = [WeightedSource("news", NEWS, 3.0), WeightedSource("web", WEB, 1.0)]
    return make_train_dataset(sources, processor, global_batch_size=BATCH, seed=seed, process_index=0, process_count=1)


def test_mixture_follows_the_weights_and_counts_its_sources(processor):
    batches = take(iter(mixture(processor)), STEPS)
    lengths = [int(n) for batch in batches for n in batch["words_valid"].sum(1)]
    news = sum(length < 10 for length in lengths)
    total = BATCH * STEPS
    # 3:1 is 3/4 news; allow three binomial standard deviations.
    assert abs(news - 0.75 * total) <= 3 * math.sqrt(total * 0.75 * 0.25)
    assert sum(length > 10 for length in lengths) == total - news
    # Each batch carries the records drawn from each source so far.
    assert batches[-1][SOURCE_COUNTS].tolist() == [news, total - news]
    first = batches[0]["words_valid"].sum(1)
    assert batches[0][SOURCE_COUNTS].tolist() == [int((first < 10).sum()), int((first > 10).sum())]
    # Both sources are read whole, shuffled, epoch after epoch: every example of each comes up.
    assert set(lengths) == {*range(1, 8), *range(11, 16)}


def test_mixture_stream_is_fixed_by_the_seed_and_restores(processor):
    dataset = mixture(processor, seed=5)
    iterator = iter(dataset)
    first = take(iterator, 3)
    assert [row_keys(b) for b in first] == [row_keys(b) for b in take(iter(mixture(processor, seed=5)), 3)]
    assert [row_keys(b) for b in first] != [row_keys(b) for b in take(iter(mixture(processor, seed=6)), 3)]
    assert_state_restores(dataset, iterator, 4)  # the counts included


def write_config(path, data: dict) -> str:
    config = {"model": {"init_from": "some/model"}, "data": data}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return str(path)


def test_config_takes_train_or_sources(tmp_path):
    sources = [{"path": "a.jsonl", "weight": 0.5, "format": "char"}, {"path": "b/", "name": "web"}]
    config = load_train_config(write_config(tmp_path / "ok.yaml", {"sources": sources}))
    assert config.data.sources == tuple(sources) and config.data.train is None
    refusals = {
        "exactly one of `train`": {"train": "a.jsonl", "sources": sources},
        r"exactly one of `train` \(one source\) or `sources`": {},
        r"data.sources\[0\].weight must be a number > 0, got 0": {"sources": [{"path": "a", "weight": 0}]},
        r"data.sources\[1\]: a second source named 'a'": {"sources": [{"path": "x/a.json"}, {"path": "a.jsonl"}]},
        r"data.sources\[0\].format must be one of": {"sources": [{"path": "a", "format": "csv"}]},
        r"unknown key 'wieght' in data.sources\[0\] \(did you mean 'weight'\?\)": {
            "sources": [{"path": "a", "wieght": 2}]
        },
    }
    for message, data in refusals.items():
        with pytest.raises(ValueError, match=message):
            load_train_config(write_config(tmp_path / "bad.yaml", data))


def test_data_prepare_writes_a_mixture_into_a_new_folder(tmp_path, capsys):
    news = [{"text": f"Story {i} in Oslo", "entities": [{"start": 11, "end": 15, "label": "city"}]} for i in range(3)]
    (tmp_path / "news.jsonl").write_text("\n".join(json.dumps(r) for r in news) + "\n", encoding="utf-8")
    web = [{"tokenized_text": ["Page", str(i)], "ner": [[0, 0, "thing"]]} for i in range(2)]
    (tmp_path / "web.json").write_text(json.dumps(web), encoding="utf-8")
    sources = [f"{tmp_path / 'news.jsonl'}:char@2", f"{tmp_path / 'web.json'}@1"]

    # One pass, 2:1: the 3 news stories, and 1 web page (a second would need a fourth story).
    assert cli.main(["data", "prepare", *sources, str(tmp_path / "pass")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [(s["name"], s["weight"], s["examples"], s["written"]) for s in summary["sources"]] == [
        ("news", 2.0, 3, 3),
        ("web", 1.0, 2, 1),
    ]
    stories = {("Story", str(i), "in", "Oslo") for i in range(3)}
    written = ArrayRecordExamples(tmp_path / "pass")
    rows = [written[i] for i in range(len(written))]
    assert {tuple(row["tokenized_text"]) for row in rows} - stories in ({("Page", "0")}, {("Page", "1")})
    assert sorted(map(str, (row["ner"] for row in rows))) == ["[[0, 0, 'thing']]", *["[[3, 3, 'city']]"] * 3]

    # A fixed number: 9 records, 6 news and 3 web, over two shards that data.train reads.
    assert cli.main(["data", "prepare", *sources, str(tmp_path / "nine"), "--examples", "9", "--shards", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [s["written"] for s in summary["sources"]] == [6, 3] and len(summary["shards"]) == 2
    assert len(open_source(str(tmp_path / "nine"))) == 9
    assert (tmp_path / "nine").stat().st_mode & 0o777 == 0o755  # readable by the other hosts of a shared filesystem

    # A folder that holds anything is never written into; nothing is left aside.
    with pytest.raises(SystemExit, match=r"^error: .*nine: exists and is not empty; give a new output folder$"):
        cli.main(["data", "prepare", *sources, str(tmp_path / "nine")])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["news.jsonl", "nine", "pass", "web.json"]
    with pytest.raises(SystemExit, match=r"data.sources\[1\].weight must be a number > 0"):
        cli.main(["data", "prepare", sources[0], f"{tmp_path / 'web.json'}@0", str(tmp_path / "zero")])
