"""Data on disk and in memory: GLiNER JSON / JSONL records, CoNLL / BIO files, label maps, and plain-text readers.

A record is {"tokenized_text": [word, ...], "ner": [[start, end, label], ...]} with inclusive word indices, and
optionally "ner_labels" (the example's label list, used verbatim) and "ner_negatives" (its negative labels).
Texts to label come as plain lines, JSONL records with a "text" string or a "tokenized_text" word list, or a JSON
list of such records.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import yaml

from gliner_jax.text.words import Word, split_words, word_strings

Example = dict[str, Any]
Split = Callable[[str], list[Word]]  # a word splitter (`text.splitters.WordSplitter`): a text's (word, start, end)
CONLL_SUFFIXES = (".conll", ".txt", ".bio")
JSON_SUFFIXES = (".json", ".jsonl")
TEXT_FORMATS = ("auto", "text", "jsonl", "json")  # what a user names; "auto" resolves to one of them or "lines"
EVAL_FORMATS = ("auto", "conll", "jsonl", "json")
DOCSTART = "-DOCSTART-"


@dataclasses.dataclass(frozen=True)
class RecordProblem:
    """A record that is not a valid training example: its 0-based index in the source and why."""

    index: int
    reason: str


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def check_record(record: Any) -> str | None:
    """Why `record` is not a valid training example, or None when it is."""
    if not isinstance(record, dict):
        return f"expected an object, got {type(record).__name__}"
    for key in ("tokenized_text", "ner"):
        if key not in record:
            return f"missing key {key!r}"
    tokens, ner = record["tokenized_text"], record["ner"]
    if not _is_str_list(tokens):
        return "'tokenized_text' must be a list of strings"
    if not isinstance(ner, list):
        return "'ner' must be a list of [start, end, label]"
    for j, entity in enumerate(ner):
        if not isinstance(entity, list | tuple) or len(entity) != 3:
            return f"ner[{j}] must be [start, end, label], got {entity!r}"
        start, end, label = entity
        if not (_is_int(start) and _is_int(end)):
            return f"ner[{j}]: start and end must be integers, got {start!r}, {end!r}"
        if not isinstance(label, str):
            return f"ner[{j}]: the label must be a string, got {label!r}"
        if end < start:
            return f"ner[{j}]: end {end} < start {start}"
        if start < 0 or end >= len(tokens):
            return f"ner[{j}]: span [{start}, {end}] is out of range for {len(tokens)} words"
    for key in ("ner_labels", "ner_negatives", "rel_labels", "rel_negatives"):
        if key in record and not _is_str_list(record[key]):
            return f"{key!r} must be a list of strings"
    return _check_relations(record.get("relations", []), len(ner))


def _check_relations(relations: Any, num_entities: int) -> str | None:
    """Why a record's "relations" (gliner's relation records: [head, tail, type], head and tail indexing "ner") are
    invalid, or None."""
    if not isinstance(relations, list):
        return "'relations' must be a list of [head, tail, type]"
    for j, relation in enumerate(relations):
        if not isinstance(relation, list | tuple) or len(relation) != 3:
            return f"relations[{j}] must be [head, tail, type], got {relation!r}"
        head, tail, kind = relation
        if not (_is_int(head) and _is_int(tail)):
            return f"relations[{j}]: head and tail must be integers, got {head!r}, {tail!r}"
        if not isinstance(kind, str):
            return f"relations[{j}]: the type must be a string, got {kind!r}"
        if not (0 <= head < num_entities and 0 <= tail < num_entities):
            return f"relations[{j}]: head {head} or tail {tail} is not an index of the {num_entities} 'ner' entities"
    return None


def normalize_record(record: dict) -> Example:
    """A valid record reduced to the known keys, with plain-int indices (JSON-serialisable)."""
    example = {
        "tokenized_text": list(record["tokenized_text"]),
        "ner": [[int(start), int(end), label] for start, end, label in record["ner"]],
    }
    for key in ("ner_labels", "ner_negatives", "rel_labels", "rel_negatives"):
        if key in record:
            example[key] = list(record[key])
    if "relations" in record:
        example["relations"] = [[int(head), int(tail), kind] for head, tail, kind in record["relations"]]
    return example


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """The text of a file; ValueError naming the file and line of the first byte that is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line, column = data.count(b"\n", 0, error.start) + 1, error.start - data.rfind(b"\n", 0, error.start)
        raise ValueError(f"{path}:{line}: not UTF-8 (byte 0x{data[error.start]:02x} at column {column})") from None


def _loads(text: str, path: Path) -> Any:
    """The JSON value of `text`, the contents of `path`; ValueError naming path:line for invalid JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: invalid JSON: {error.msg} (column {error.colno})") from None


def read_json(path: Path) -> Any:
    """The JSON value of a UTF-8 file; ValueError naming path:line for invalid JSON or text that is not UTF-8."""
    return _loads(read_text(path), path)


def _parse(path: Path) -> list[tuple[Any, str | None]]:
    """(record, JSON error) per record of a JSON list or a JSONL file (blank lines skipped)."""
    text = read_text(path)
    if text.lstrip().startswith("["):
        return [(record, None) for record in _loads(text, path)]
    parsed = []
    for line in text.splitlines():
        if line.strip():
            try:
                parsed.append((json.loads(line), None))
            except json.JSONDecodeError as error:
                parsed.append((None, f"invalid JSON: {error.msg} (column {error.colno})"))
    return parsed


def read_examples(path: str | Path, *, strict: bool = False) -> tuple[list[Example], list[RecordProblem]]:
    """Valid examples of a JSON list or JSONL file, and the problems of the records skipped.

    Every record is checked up front, so a bad one never stops a run halfway. With `strict`, the first bad record
    raises ValueError (naming its index and reason) instead of being skipped with a warning; a file whose records
    are all bad raises ValueError too.
    """
    examples, problems = [], []
    for index, (record, error) in enumerate(_parse(Path(path))):
        reason = error or check_record(record)
        if reason is None:
            examples.append(normalize_record(record))
            continue
        if strict:
            raise ValueError(f"{path}: record {index}: {reason}")
        problems.append(RecordProblem(index, reason))
    _report(path, examples, problems)
    return examples, problems


def _report(path: str | Path, examples: list[Example], problems: list[RecordProblem]) -> None:
    """Warn of skipped records; ValueError when no record is valid."""
    if problems:
        first = "; ".join(f"record {p.index}: {p.reason}" for p in problems[:3])
        if not examples:
            raise ValueError(f"{path}: no valid record among {len(problems)}: {first}")
        warnings.warn(
            f"{path}: skipped {len(problems)} bad record(s) of {len(examples) + len(problems)}: {first}", stacklevel=3
        )


def labels_of(examples: Iterable[Example]) -> list[str]:
    """The sorted set of the entity labels of `examples`."""
    return sorted({label for example in examples for _, _, label in example["ner"]})


def bio_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Entity spans (start, end inclusive, type) of BIO or IOB1 tags: "B-X" starts an entity; "I-X" continues an
    entity of type X, or starts one after "O" or another type; "O" is outside."""
    spans, start, kind = [], 0, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, entity = tag.partition("-")
        if kind is not None and (tag == "O" or prefix == "B" or entity != kind):
            spans.append((start, i - 1, kind))
            kind = None
        if tag == "O":
            continue
        if prefix not in ("B", "I") or not entity:
            raise ValueError(f"not a BIO tag: {tag!r}")
        if kind is None:
            start, kind = i, entity
    return spans


def read_conll(path: str | Path, *, strict_iob2: bool = False) -> list[Example]:
    """Sentences of a CoNLL-style file as examples: a token in the first column and a BIO / IOB1 / IOB2 tag in the
    last (columns split by tabs when the line has one, else by whitespace), a blank line between sentences,
    "-DOCSTART-" lines skipped. Entity types are the tags' suffixes ("B-geo-loc" -> "geo-loc").

    `strict_iob2` refuses an "I-X" that does not continue an X entity (IOB1 files use that to start one).
    Errors name the file and line.
    """
    path = Path(path)
    examples: list[Example] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines = read_text(path, "utf-8-sig").splitlines()
    for number, line in enumerate([*lines, ""], 1):
        if not line.strip():
            if tokens:
                examples.append({"tokenized_text": tokens, "ner": [list(span) for span in bio_spans(tags)]})
            tokens, tags = [], []
            continue
        columns = [column.strip() for column in line.split("\t")] if "\t" in line else line.split()
        if columns[0] == DOCSTART:
            continue
        if len(columns) < 2 or not columns[0] or not columns[-1]:
            raise ValueError(f"{path}:{number}: expected a token and a tag, got {line!r}")
        tag = columns[-1]
        prefix, _, kind = tag.partition("-")
        if tag != "O" and (prefix not in ("B", "I") or not kind):
            raise ValueError(f"{path}:{number}: not a BIO tag: {tag!r} (expected O, B-TYPE or I-TYPE)")
        if strict_iob2 and prefix == "I" and (not tags or tags[-1] not in (f"B-{kind}", f"I-{kind}")):
            raise ValueError(f"{path}:{number}: {tag!r} continues no {kind!r} entity (strict IOB2)")
        tokens.append(columns[0])
        tags.append(tag)
    return examples


def load_label_map(path: str | Path) -> dict[str, str | None]:
    """A {type: label} mapping from a JSON or YAML file; a type mapped to null is dropped."""
    path = Path(path)
    text = read_text(path)
    try:
        mapping = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: not valid JSON / YAML: {error}") from None
    if not isinstance(mapping, dict) or not all(
        isinstance(key, str) and (value is None or (isinstance(value, str) and value.strip()))
        for key, value in mapping.items()
    ):
        raise ValueError(f"{path}: a label map must be a {{type: label}} mapping of strings (null drops a type)")
    return mapping


def rename_labels(examples: Sequence[Example], label_map: Mapping[str, str | None]) -> list[Example]:
    """The examples with their entity labels renamed by `label_map`: unmapped labels kept, those mapped to None
    dropped."""
    renamed = []
    for example in examples:
        ner = [[s, e, label_map.get(label, label)] for s, e, label in example["ner"]]
        renamed.append({**example, "ner": [entity for entity in ner if entity[2] is not None]})
    return renamed


def _is_conll(path: Path) -> bool:
    """By extension (.conll / .txt / .bio vs .json / .jsonl), else by content (JSON starts with [ or {)."""
    if path.suffix.lower() in CONLL_SUFFIXES:
        return True
    if path.suffix.lower() in JSON_SUFFIXES:
        return False
    with path.open("rb") as file:
        head = file.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip()
    return not head.startswith((b"[", b"{"))


def read_eval_data(
    data: str | Path | Sequence[Mapping[str, Any]],
    label_map: Mapping[str, str | None] | None = None,
    *,
    strict_iob2: bool = False,
    data_format: str = "auto",
) -> list[Example]:
    """Gold examples from a JSON / JSONL / CoNLL file (see `read_conll`; `data_format` one of EVAL_FORMATS, "auto"
    going by suffix, then content) or a list of records, labels renamed by `label_map`. Every record must be valid: a
    bad one, or a file without any, raises ValueError naming it."""
    if isinstance(data, str | Path):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        if data_format not in EVAL_FORMATS:
            raise ValueError(f"unknown data format {data_format!r}; known: {', '.join(EVAL_FORMATS)}")
        conll = data_format == "conll" or (data_format == "auto" and _is_conll(path))
        examples = read_conll(path, strict_iob2=strict_iob2) if conll else read_examples(path, strict=True)[0]
        if not examples:
            raise ValueError(f"{path}: no examples")
    else:
        examples = []
        for index, record in enumerate(data):
            reason = check_record(record)
            if reason is not None:
                raise ValueError(f"example {index}: {reason}")
            examples.append({"tokenized_text": list(record["tokenized_text"]), "ner": list(record["ner"])})
    return rename_labels(examples, label_map) if label_map else examples


@dataclasses.dataclass(frozen=True)
class TextLine:
    """A non-blank line of a text file: its 1-based number (in a JSON list, the record's), its record, or why it
    cannot be read (then `record` is None), and where the next line starts (byte offset; in a JSON list, the
    record's number) to resume from."""

    number: int
    record: Example | None
    problem: str | None
    end: int


def resolve_text_format(path: str | Path | None, text_format: str = "auto") -> str:
    """The format of a file of texts (TEXT_FORMATS): "text", plain lines, each its own text; "jsonl", a JSON record
    per line; "json", a JSON list of records; or "lines", a JSON record where a line starts with "{" and a plain
    text elsewhere. "auto" is "text" for a .txt file, else "json" when the file's first non-blank character is "[",
    else "lines"."""
    if text_format not in (*TEXT_FORMATS, "lines"):
        raise ValueError(f"unknown text format {text_format!r}; known: {', '.join(TEXT_FORMATS)}")
    if text_format != "auto":
        return text_format
    if path is not None and Path(path).suffix.lower() == ".txt":
        return "text"
    return "json" if path is not None and Path(path).is_file() and is_json_list(path) else "lines"


def parse_text_line(line: str, text_format: str = "lines") -> tuple[Example | None, str | None]:
    """(record, None) for a text line, or (None, why not). In "text" format every line is the text {"text": line};
    in "jsonl" format every line is a JSON record, which needs a "text" string or a "tokenized_text" word list; in
    "lines" format a line starting with "{" is a JSON record and any other line a text."""
    if text_format == "text" or (text_format == "lines" and not line.lstrip().startswith("{")):
        return {"text": line}, None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        return None, f"invalid JSON: {error.msg} (column {error.colno})"
    reason = _text_record_problem(record)
    return (record, None) if reason is None else (None, reason)


def text_lines(file: BinaryIO, *, first: int = 1, offset: int = 0, text_format: str = "lines") -> Iterator[TextLine]:
    """The non-blank lines of a binary file (a line ends at a line feed; a carriage return before it and a leading
    byte-order mark are dropped), each with its record or its problem: not UTF-8, or those of `parse_text_line` in
    `text_format`. The file is read from its current position, which is byte `offset`, line `first`; memory holds
    one line."""
    for number, raw in enumerate(file, first):
        offset += len(raw)
        try:
            line = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
        except UnicodeDecodeError as error:
            problem = f"not UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1})"
            yield TextLine(number, None, problem, offset)
            continue
        if offset == len(raw):
            line = line.removeprefix("\ufeff")
        if line.strip():
            yield TextLine(number, *parse_text_line(line, text_format), offset)


def _json_list_lines(path: Path, first: int = 1) -> Iterator[TextLine]:
    """The records of a JSON list file from record `first` on, as TextLines (read whole)."""
    try:
        records = json.loads(read_text(path, "utf-8-sig"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: a JSON file of texts holds a list of records")
    for number, record in enumerate(records[first - 1 :], first):
        reason = _text_record_problem(record)
        yield TextLine(number, None if reason else record, reason, number)


def is_json_list(path: str | Path) -> bool:
    """Whether a text file holds one JSON list (its first non-blank character is "["), not lines."""
    with Path(path).open("rb") as file:
        while block := file.read(4096):
            head = block.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()
            if head:
                return head.startswith(b"[")
    return False


def count_text_lines(path: str | Path, text_format: str = "auto") -> int:
    """How many lines `read_text_lines` numbers in a file (a last line without a newline counts; in a JSON list, its
    records): the total of a progress bar."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if resolve_text_format(path, text_format) == "json":
        return sum(1 for _ in _json_list_lines(path))
    count, last = 0, b"\n"
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def read_text_lines(
    path: str | Path, *, first: int = 1, offset: int = 0, text_format: str = "auto"
) -> Iterator[TextLine]:
    """The TextLines of a file of texts (`text_format`: see `resolve_text_format`), from line `first` at byte
    `offset` (`TextLine.end` of the line before; in a JSON list, from record `first`): lines, streamed; a JSON list
    of records, read whole."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    text_format = resolve_text_format(path, text_format)
    if text_format == "json":
        yield from _json_list_lines(path, first)
        return
    with path.open("rb") as file:
        file.seek(offset)
        yield from text_lines(file, first=first, offset=offset, text_format=text_format)


def _text_record_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"expected an object, got {type(record).__name__}"
    if isinstance(record.get("text"), str) or _is_str_list(record.get("tokenized_text")):
        return None
    return "a JSON record needs a string 'text' or a 'tokenized_text' list of strings"


def read_text_records(path: str | Path, text_format: str = "auto") -> list[Example]:
    """The text records of a file (`text_format`: see `resolve_text_format`): a JSON list of records, or lines (see
    `text_lines`). A bad line or record raises ValueError naming the file and the line (or record)."""
    json_list = Path(path).is_file() and resolve_text_format(path, text_format) == "json"
    records = []
    for line in read_text_lines(path, text_format=text_format):
        if line.problem is not None:
            where = f" record {line.number - 1}:" if json_list else f"{line.number}:"
            raise ValueError(f"{path}:{where} {line.problem}")
        records.append(line.record)
    return records


def record_words(record: Example, split: Split = split_words) -> list[str]:
    """A text record's words: its "tokenized_text", else its "text" split by `split` (the model's word splitter;
    gliner's default, whitespace, unless given)."""
    if "tokenized_text" in record and _is_str_list(record["tokenized_text"]):
        return list(record["tokenized_text"])
    return word_strings(split(record["text"]))


def record_text(record: Example) -> str:
    """A text record's text: its "text", else its "tokenized_text" joined by spaces."""
    return record["text"] if isinstance(record.get("text"), str) else " ".join(record["tokenized_text"])


SOURCE_FORMATS = ("auto", "gliner", "char", "prompted", "conll")
PROMPT_SEPARATOR = " \n "  # between a prompt and its text, as the multi-task helpers join them


def _char_entities(record: dict) -> list[tuple[int, int, str]] | str:
    """The (start, end exclusive, label) entities of a character-offset record, or why it has none valid."""
    if not isinstance(record.get("text"), str):
        return "missing string 'text'"
    entities = record.get("entities")
    if not isinstance(entities, list):
        return "'entities' must be a list of {start, end, label} or [start, end, label]"
    spans = []
    for j, entity in enumerate(entities):
        if isinstance(entity, dict) and {"start", "end", "label"} <= entity.keys():
            entity = (entity["start"], entity["end"], entity["label"])
        if not isinstance(entity, list | tuple) or len(entity) != 3:
            return f"entities[{j}] must be {{start, end, label}} or [start, end, label], got {entity!r}"
        start, end, label = entity
        if not (_is_int(start) and _is_int(end)) or not isinstance(label, str):
            return f"entities[{j}]: start and end must be integers and label a string, got {entity!r}"
        if not 0 <= start < end <= len(record["text"]):
            return f"entities[{j}]: [{start}, {end}) is not a non-empty range of the {len(record['text'])} characters"
        spans.append((int(start), int(end), label))
    return spans


def char_example(
    text: str, entities: Sequence[tuple[int, int, str]], skip: int = 0, split: Split = split_words
) -> tuple[Example, int] | str:
    """A character-offset record as an example: the text split into words as the model splits it (`split`),
    each entity [start, end) (offsets into `text[skip:]`) the words it overlaps; with the number of entities whose
    offsets do not fall on word boundaries. An entity that overlaps no word (only spaces) is a problem."""
    words = split(text)
    starts, ends = [start for _, start, _ in words], [end for _, _, end in words]
    ner, misaligned = [], 0
    for start, end, label in entities:
        start, end = start + skip, end + skip
        first = next((i for i, word_end in enumerate(ends) if word_end > start), len(words))
        last = next((i for i in range(len(words) - 1, -1, -1) if starts[i] < end), -1)
        if first > last:
            return f"entity [{start - skip}, {end - skip}) {label!r} covers no word"
        misaligned += starts[first] != start or ends[last] != end
        ner.append([first, last, label])
    return {"tokenized_text": word_strings(words), "ner": ner}, misaligned


def convert_record(record: Any, data_format: str, split: Split = split_words) -> tuple[Example, int] | str:
    """A record of `data_format` ("gliner", "char" or "prompted") as an example and its misaligned entities (see
    `char_example`; texts split into words by `split`), or why it is not valid.

    "gliner": {"tokenized_text", "ner"} (see `check_record`). "char": {"text", "entities"}, entities as
    {"start", "end", "label"} objects or [start, end, label] triples, character offsets, end exclusive.
    "prompted" (the multi-task paper's): a "char" record with a "prompt" string, read as the model reads a
    prompted text, `prompt + PROMPT_SEPARATOR + text` (offsets index the text)."""
    if data_format == "gliner":
        reason = check_record(record)
        return (normalize_record(record), 0) if reason is None else reason
    if not isinstance(record, dict):
        return f"expected an object, got {type(record).__name__}"
    entities = _char_entities(record)
    if isinstance(entities, str):
        return entities
    if data_format == "char":
        return char_example(record["text"], entities, split=split)
    if not isinstance(record.get("prompt"), str):
        return "missing string 'prompt'"
    head = record["prompt"] + PROMPT_SEPARATOR
    return char_example(head + record["text"], entities, len(head), split)


def _json_format(path: Path) -> str:
    """The record format of a JSON / JSONL file, from its first record's keys (gliner's when it has none)."""
    first = next((record for record, _ in _parse(path) if isinstance(record, dict)), {})
    if "tokenized_text" in first or "text" not in first:
        return "gliner"
    return "prompted" if "prompt" in first else "char"


def resolve_source_format(path: str | Path, data_format: str = "auto") -> str:
    """The format of a training file (SOURCE_FORMATS): "auto" is "conll" by suffix (.conll / .txt / .bio) or
    content (not starting with [ or {), else by the first record's keys: "prompt" -> "prompted", "text" (without
    "tokenized_text") -> "char", else "gliner"."""
    if data_format not in SOURCE_FORMATS:
        raise ValueError(f"unknown data format {data_format!r}; known: {', '.join(SOURCE_FORMATS)}")
    if data_format != "auto":
        return data_format
    return "conll" if _is_conll(Path(path)) else _json_format(Path(path))


def read_source(
    path: str | Path, data_format: str = "auto", *, strict: bool = False, split: Split = split_words
) -> tuple[list[Example], list[RecordProblem], int]:
    """The valid examples of a training file in `data_format` (see `resolve_source_format`, `convert_record`, whose
    texts `split` splits into words, and `read_conll`), the problems of the records skipped and the number of
    entities whose character offsets were widened to word boundaries. Bad records as in `read_examples` (`strict`
    raises on the first; a CoNLL file raises on any, naming its line)."""
    data_format = resolve_source_format(path, data_format)
    if data_format == "conll":
        return read_conll(path), [], 0
    if data_format == "gliner":
        return (*read_examples(path, strict=strict), 0)
    examples, problems, misaligned = [], [], 0
    for index, (record, error) in enumerate(_parse(Path(path))):
        converted = error or convert_record(record, data_format, split)
        if isinstance(converted, tuple):
            examples.append(converted[0])
            misaligned += converted[1]
            continue
        if strict:
            raise ValueError(f"{path}: record {index}: {converted}")
        problems.append(RecordProblem(index, converted))
    _report(path, examples, problems)
    if misaligned:
        warnings.warn(f"{path}: {misaligned} entities not on word boundaries took the words they overlap", stacklevel=2)
    return examples, problems, misaligned
