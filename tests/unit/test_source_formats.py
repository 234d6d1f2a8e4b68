"""Training files as they come: gliner JSON, character-offset records (objects or triples), the multi-task paper's
prompted records and CoNLL, behind `read_source`, against hand-checked words and spans."""

from __future__ import annotations

import json

import pytest

from gliner_jax.data_formats import read_source


def write_lines(path, records) -> str:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return str(path)


def test_char_records_map_offsets_to_words_and_count_misaligned(tmp_path):
    text = "Dr. Jean-Luc Picard visits New York."
    # words: Dr(0,2) .(2,3) Jean-Luc(4,12) Picard(13,19) visits(20,26) New(27,30) York(31,35) .(35,36)
    records = [
        {"text": text, "entities": [{"start": 4, "end": 19, "label": "person"}, [27, 35, "city"]]},
        # "ean-Luc Pic" cuts into two words: both taken; "New York." ends on a word boundary: aligned.
        {"text": text, "entities": [[5, 16, "person"], [27, 36, "place"]]},
        {"text": text, "entities": [[19, 20, "space"]]},  # only a space: no word, a bad record
        {"text": text, "entities": [[30, 99, "far"]]},  # past the text: a bad record
    ]
    path = write_lines(tmp_path / "char.jsonl", records)
    with pytest.warns(UserWarning) as caught:
        examples, problems, misaligned = read_source(path)  # auto: "text" without "tokenized_text"
    assert ["skipped 2 bad record(s) of 4" in str(w.message) for w in caught] == [True, False]
    assert "1 entities not on word boundaries took the words they overlap" in str(caught[1].message)
    words = ["Dr", ".", "Jean-Luc", "Picard", "visits", "New", "York", "."]
    assert examples == [
        {"tokenized_text": words, "ner": [[2, 3, "person"], [5, 6, "city"]]},
        {"tokenized_text": words, "ner": [[2, 3, "person"], [5, 7, "place"]]},
    ]
    assert misaligned == 1
    assert [(p.index, p.reason) for p in problems] == [
        (2, "entity [19, 20) 'space' covers no word"),
        (3, "entities[0]: [30, 99) is not a non-empty range of the 36 characters"),
    ]
    with pytest.raises(ValueError, match=r"char.jsonl: record 2: entity \[19, 20\) 'space' covers no word"):
        read_source(path, "char", strict=True)


def test_prompted_records_put_the_prompt_before_the_text(tmp_path):
    record = {"prompt": "Answer the following question: Who?", "text": "Ada wrote it.", "entities": [[0, 3, "answer"]]}
    path = write_lines(tmp_path / "qa.json", [json.dumps([record])])
    examples, problems, misaligned = read_source(path)  # auto: a "prompt" key
    prompt = ["Answer", "the", "following", "question", ":", "Who", "?"]
    assert examples == [{"tokenized_text": [*prompt, "Ada", "wrote", "it", "."], "ner": [[7, 7, "answer"]]}]
    assert (problems, misaligned) == ([], 0)


def test_gliner_and_conll_sources_and_format_errors(tmp_path):
    gliner = write_lines(tmp_path / "g.jsonl", [{"tokenized_text": ["Paris", "!"], "ner": [[0, 0, "city"]]}])
    assert read_source(gliner) == ([{"tokenized_text": ["Paris", "!"], "ner": [[0, 0, "city"]]}], [], 0)
    conll = tmp_path / "d.bio"
    conll.write_text("New B-LOC\nYork I-LOC\nrocks O\n\nBo B-PER\n", encoding="utf-8")
    assert read_source(conll)[0] == [
        {"tokenized_text": ["New", "York", "rocks"], "ner": [[0, 1, "LOC"]]},
        {"tokenized_text": ["Bo"], "ner": [[0, 0, "PER"]]},
    ]
    conll.write_text("New B-LOC\nYork X-LOC\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"d.bio:2: not a BIO tag"):
        read_source(conll)
    with pytest.raises(ValueError, match="unknown data format 'csv'"):
        read_source(gliner, "csv")
    # A gliner record read as "char" is bad, and a file without a valid record is refused.
    with pytest.raises(ValueError, match="no valid record among 1: record 0: missing string 'text'"):
        read_source(gliner, "char")
