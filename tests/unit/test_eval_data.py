"""Evaluation without a model: span scores' refusals, reading gold data (CoNLL, JSON), label maps."""

from __future__ import annotations

import json

import pytest

from gliner_jax.data_formats import load_label_map, read_conll, read_eval_data
from gliner_jax.evaluation import span_scores


def test_span_scores_refuses_unequal_text_counts():
    with pytest.raises(ValueError, match="2 predicted texts but 1 gold texts"):
        span_scores([[], []], [[]])


# --- reading gold data -------------------------------------------------------------------------------------------

CONLL_2003 = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER



BRUSSELS NNP B-NP B-LOC
"""


def test_read_conll_bio_with_docstart_columns_and_trailing_blank_lines(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text(CONLL_2003 + "\n\n\n")
    assert read_conll(path) == [
        {"tokenized_text": ["EU", "rejects", "German", "call", "."], "ner": [[0, 0, "ORG"], [2, 2, "MISC"]]},
        {"tokenized_text": ["Peter", "Blackburn"], "ner": [[0, 1, "PER"]]},
        {"tokenized_text": ["BRUSSELS"], "ner": [[0, 0, "LOC"]]},
    ]


def test_read_conll_tabs_iob2_and_types_with_dashes(tmp_path):
    """Tab-separated (a token may hold a space there), CRLF line ends, B- after I- of the same type starts anew."""
    lines = ["New York\tB-geo-loc", "City\tI-geo-loc", "and\tO", "Ann\tB-person", "Bo\tB-person", "Li\tI-person"]
    path = tmp_path / "wnut.txt"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    assert read_conll(path) == [
        {
            "tokenized_text": ["New York", "City", "and", "Ann", "Bo", "Li"],
            "ner": [[0, 1, "geo-loc"], [3, 3, "person"], [4, 5, "person"]],
        }
    ]


def test_read_conll_iob1(tmp_path):
    """IOB1: I- begins an entity after O or another type; B- only separates two adjacent entities of one type."""
    tags = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "I-ORG", "O", "I-MISC"]
    path = tmp_path / "iob1.bio"
    path.write_text("".join(f"w{i} {tag}\n" for i, tag in enumerate(tags)))
    (example,) = read_conll(path)
    assert example["ner"] == [[0, 1, "PER"], [2, 2, "PER"], [4, 4, "LOC"], [5, 6, "ORG"], [8, 8, "MISC"]]
    with pytest.raises(ValueError, match=r"iob1\.bio:1: 'I-PER' continues no 'PER' entity \(strict IOB2\)"):
        read_conll(path, strict_iob2=True)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a O\nb\n", r"bad\.conll:2: expected a token and a tag, got 'b'"),
        ("a O\n\nb\t\n", r"bad\.conll:3: expected a token and a tag"),
        ("a O\nb PER\n", r"bad\.conll:2: not a BIO tag: 'PER'"),
        ("a B-\n", r"bad\.conll:1: not a BIO tag: 'B-'"),
        ("a E-PER\n", r"bad\.conll:1: not a BIO tag: 'E-PER'"),
    ],
)
def test_read_conll_errors_name_file_and_line(tmp_path, content, message):
    (tmp_path / "bad.conll").write_text(content)
    with pytest.raises(ValueError, match=message):
        read_conll(tmp_path / "bad.conll")


def test_strict_iob2_refuses_a_type_change_inside_an_entity(tmp_path):
    (tmp_path / "x.conll").write_text("a B-PER\nb I-PER\nc I-LOC\n")
    assert read_conll(tmp_path / "x.conll")[0]["ner"] == [[0, 1, "PER"], [2, 2, "LOC"]]
    with pytest.raises(ValueError, match=r"x\.conll:3: 'I-LOC' continues no 'LOC' entity"):
        read_conll(tmp_path / "x.conll", strict_iob2=True)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_label_map_renames_keeps_and_drops(tmp_path, suffix):
    path = tmp_path / f"map{suffix}"
    path.write_text(
        '{"PER": "person", "LOC": "location", "MISC": null}'
        if suffix == ".json"
        else "PER: person\nLOC: location\nMISC: null\n"
    )
    (tmp_path / "d.conll").write_text(CONLL_2003)
    examples = read_eval_data(tmp_path / "d.conll", load_label_map(path))
    assert [example["ner"] for example in examples] == [[[0, 0, "ORG"]], [[0, 1, "person"]], [[0, 0, "location"]]]


@pytest.mark.parametrize("content", ["[1, 2]", '{"PER": 3}', '{"PER": ""}', "PER: [person]", "a: b: c"])
def test_bad_label_map_is_refused(tmp_path, content):
    path = tmp_path / "map.yaml"
    path.write_text(content)
    with pytest.raises(ValueError, match=r"map\.yaml: "):
        load_label_map(path)


def test_format_detection_and_json_inputs(tmp_path):
    examples = [
        {"tokenized_text": ["Peter", "Blackburn", "spoke"], "ner": [[0, 1, "PER"]]},
        {"tokenized_text": ["BRUSSELS"], "ner": [[0, 0, "LOC"]]},
    ]
    (tmp_path / "a.jsonl").write_text("\n".join(map(json.dumps, examples)) + "\n")
    (tmp_path / "a.data").write_text(json.dumps(examples, indent=1))  # unknown extension: JSON by content
    (tmp_path / "b.data").write_text("Peter B-PER\nBlackburn I-PER\nspoke O\n\nBRUSSELS B-LOC\n")  # CoNLL by content
    for name in ("a.jsonl", "a.data", "b.data"):
        assert read_eval_data(tmp_path / name) == examples, name
    assert read_eval_data(examples, {"PER": "person"})[0]["ner"] == [[0, 1, "person"]]


def test_bad_gold_data_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.conll: no such file"):
        read_eval_data(tmp_path / "missing.conll")
    (tmp_path / "bad.json").write_text('[\n{"tokenized_text": ["a"], "ner": []},\n{"tokenized_text": \n]')
    with pytest.raises(ValueError, match=r"bad\.json:4: invalid JSON"):
        read_eval_data(tmp_path / "bad.json")
    (tmp_path / "bad.jsonl").write_text('{"tokenized_text": ["a"], "ner": [[0, 3, "x"]]}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl: record 0: ner\[0\]: span \[0, 3\] is out of range"):
        read_eval_data(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="example 1: missing key 'ner'"):
        read_eval_data([{"tokenized_text": ["a"], "ner": []}, {"tokenized_text": ["a"]}])
