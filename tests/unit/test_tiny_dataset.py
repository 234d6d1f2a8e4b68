"""The committed tiny dataset (data/tiny): reproducible from its script, valid GLiNER training records, words as
gliner's own splitter yields them (our `split_words`, which test_processing_vs_gliner.py holds to gliner's splitter),
and a tokenizer that keeps every word (and label name) whole."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import pytest
import sentencepiece as spm
import transformers

from gliner_jax.text.words import split_words

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "tiny"
LABELS = {"person", "organization", "location", "date", "product", "event"}


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    """The script's output for the default seed, written afresh."""
    spec = importlib.util.spec_from_file_location("make_tiny_dataset", ROOT / "scripts" / "make_tiny_dataset.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path_factory.mktemp("tiny")
    script.main(["--out", str(out)])
    return out


@pytest.mark.parametrize("name", ["train.jsonl", "dev.jsonl"])
def test_committed_records_are_the_scripts_output(regenerated, name):
    assert (regenerated / name).read_bytes() == (DATA / name).read_bytes()


def test_committed_tokenizer_is_the_scripts_output(regenerated):
    # spm.model embeds the output path, so compare what it holds rather than its bytes.
    models = [spm.SentencePieceProcessor(model_file=str(d / "tokenizer" / "spm.model")) for d in (DATA, regenerated)]
    committed, fresh = ([(m.id_to_piece(i), m.get_score(i)) for i in range(m.get_piece_size())] for m in models)
    assert committed == fresh
    committed, fresh = (transformers.AutoTokenizer.from_pretrained(d / "tokenizer") for d in (DATA, regenerated))
    assert committed.get_vocab() == fresh.get_vocab()
    words = [r["tokenized_text"] for r in read(DATA / "train.jsonl")[:50]]
    assert committed(words, is_split_into_words=True).input_ids == fresh(words, is_split_into_words=True).input_ids


def test_records_are_valid_training_examples():
    train, dev = read(DATA / "train.jsonl"), read(DATA / "dev.jsonl")
    assert (len(train), len(dev)) == (400, 100)
    texts = [" ".join(r["tokenized_text"]) for r in train + dev]
    assert len(set(texts)) == len(texts)  # distinct sentences, so train and dev are disjoint
    for record, text in zip(train + dev, texts, strict=True):
        assert set(record) == {"tokenized_text", "ner"}
        words = record["tokenized_text"]
        assert [token for token, _, _ in split_words(text)] == words
        assert 8 <= len(words) <= 30 and len(record["ner"]) <= 4
        for start, end, label in record["ner"]:
            assert 0 <= start <= end < len(words) and end - start < 12 and label in LABELS
        spans = sorted((s, e) for s, e, _ in record["ner"])
        assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))  # flat: no overlaps
    counts = [len(r["ner"]) for r in train]
    assert {*counts} == {0, 1, 2, 3, 4} and {e[2] for r in train for e in r["ner"]} == LABELS
    # Multi-word entities, as in "Buenos Aires" or "12 March 2021".
    assert sum(e - s >= 1 for r in train for s, e, _ in r["ner"]) > len(train) // 2


def test_tokenizer_keeps_every_word_whole():
    tokenizer = transformers.DebertaV2Tokenizer.from_pretrained(DATA / "tokenizer")
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]
    words = sorted({w for f in ("train.jsonl", "dev.jsonl") for r in read(DATA / f) for w in r["tokenized_text"]})
    ids = tokenizer([[w] for w in [*words, *LABELS]], is_split_into_words=True, add_special_tokens=False).input_ids
    assert all(len(i) == 1 and i[0] != tokenizer.unk_token_id for i in ids)
    assert sum(f.stat().st_size for f in (DATA / "tokenizer").iterdir()) < 1_000_000
