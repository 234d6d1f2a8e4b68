"""The input pipeline against gliner's own `prepare_batch` + `collate_batch` (span and token models)."""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
import transformers
from gliner.data_processing.tokenizer import WhitespaceTokenSplitter
from gliner.model import _normalize_labels
from hypothesis import given, settings
from hypothesis import strategies as st

from gliner_jax.testing.builders import build_reference
from gliner_jax.text.collate import Batch, Processor
from gliner_jax.text.labels import normalize_labels
from gliner_jax.text.wire import from_wire
from gliner_jax.text.words import joined_word_offsets, split_words

MAX_LEN = 24
MAX_WIDTH = 5

TEXTS = [
    "Barack Obama was born in Honolulu, Hawaii, on August 4, 1961.",
    "Zürich, São Paulo and Kraków are cities; Müller-Lüdenscheidt works at state_of_the_art labs.",
    "Dr. Smith-Jones paid $1,200.50 (approx.) on 3/14/2015 — naïve café «déjà vu» 東京 😀.",
    " ".join(f"w{i}-x_{i}" for i in range(MAX_LEN + 9)),  # longer than max_len words
    "Hi",
    "tab\tseparated\nnew-line   spaces__and--dashes",
]
SHARED_LABELS = ["person", "city", "organisation name", "date of birth", "person"]  # with a duplicate
PER_TEXT_LABELS = [
    ["person", "location"],
    ["city", "person", "research lab", "person"],
    ["monetary amount"],
    ["code", "identifier of a thing"],
    [],
    ["a", "b", "c", "d", "e", "f"],
]
TRICKY = [
    "",
    "   ",
    "state-of-the-art foo_bar-baz -x- a--b __init__ _x_ x_",
    "Zürich São Paulo Kraków İstanbul ǅemal ﬁnal",
    "1,000.50 3/14 e=mc² ½ ٣٤ ०१",
    "東京タワー 😀👍🏽 e\u0301 a\u200bb c\u00a0d\te\u3000f\u2028g",
    "«quotes» “curly” (paren) [brack] {brace} <a@b.c> #tag @user",
]


@pytest.fixture(scope="module", params=["markerV0", "token_level"])
def setup(request, gliner_backbone, tmp_path_factory):
    """(reference GLiNER, our Processor on the tokenizer saved with it) for one span mode."""
    directory = tmp_path_factory.mktemp(request.param)
    ref = build_reference(gliner_backbone, directory, span_mode=request.param, max_width=MAX_WIDTH, max_len=MAX_LEN)
    return ref, Processor.from_config(ref.config, transformers.AutoTokenizer.from_pretrained(directory))


def reference_batch(ref, texts=None, labels=None, word_lists=None) -> dict:
    """gliner's collated batch as NumPy arrays, for texts or (like training data) pre-split words."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if word_lists is None:
            prepared = ref.prepare_batch(texts, labels)
            input_x, labels = prepared["input_x"], prepared["entity_types"]
        else:
            prepared, input_x = {}, [{"tokenized_text": words, "ner": None} for words in word_lists]
        batch = ref.collate_batch(input_x, labels)
    out = {k: v.numpy() if hasattr(v, "numpy") else v for k, v in batch.items()}
    id_to_classes = out["id_to_classes"]
    mappings = id_to_classes if isinstance(id_to_classes, list) else [id_to_classes] * len(input_x)
    out["labels"] = [[mapping[c] for c in sorted(mapping)] for mapping in mappings]
    return {**prepared, **out}


def prepare(processor: Processor, *args, **kwargs) -> Batch:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return processor.prepare(*args, **kwargs)


def is_length_bucket(n: int, cap: int | None = None) -> bool:
    return (n <= 512 and n % 32 == 0) or n % 128 == 0 or n == cap


def assert_matches(ours: Batch, ref: dict, processor: Processor, rows: list[int] | None = None) -> None:
    """Our arrays equal the reference's on its rows (`rows`, default all) and region, and are neutral elsewhere."""
    rows = list(range(len(ref["tokens"]))) if rows is None else rows
    other = np.setdiff1d(np.arange(ours.input_ids.shape[0]), rows)
    ref_ids = ref["input_ids"]
    t = ref_ids.shape[1]
    expected = {
        "input_ids": ref_ids,
        "attention_mask": ref["attention_mask"],
        "words_mask": ref["words_mask"],
        "text_lengths": ref["text_lengths"].reshape(-1),
    }
    if processor.span_mode == "token_level":
        assert ours.span_idx is None and ours.span_mask is None and "span_idx" not in ref
    else:
        expected |= {"span_idx": ref["span_idx"], "span_mask": ref["span_mask"]}
    neutral = {"input_ids": processor.tokenizer.pad_token_id, "span_idx": 0, "span_mask": False}
    for key, want in expected.items():
        got = getattr(ours, key)
        region = (rows, *(slice(0, n) for n in want.shape[1:]))
        np.testing.assert_array_equal(got[region], want, err_msg=key)
        rest = np.ones(got.shape, bool)
        rest[region] = False
        rest[other] = True
        assert (got[rest] == neutral.get(key, 0)).all(), key
    assert ours.input_ids.dtype == ours.attention_mask.dtype == ours.words_mask.dtype == np.int32
    assert ours.text_lengths.dtype == np.int32
    assert ours.input_ids.shape[1] >= t

    lengths = ours.text_lengths
    np.testing.assert_array_equal(ours.words_valid, np.arange(ours.words_valid.shape[1]) < lengths[:, None])
    assert ours.words_valid.shape[1] >= lengths.max(initial=0)
    if ours.span_idx is not None:
        assert ours.span_idx.shape[1] == ours.span_mask.shape[1] == ours.words_valid.shape[1] * processor.max_width
    counts = np.zeros(len(ours.input_ids), int)
    counts[rows] = [len(labels) for labels in ref["labels"]]
    np.testing.assert_array_equal(ours.labels_valid, np.arange(ours.labels_valid.shape[1]) < counts[:, None])
    assert [ours.words[i] for i in rows] == ref["tokens"]
    assert [ours.labels[i] for i in rows] == ref["labels"]


def assert_bucketed(ours: Batch, processor: Processor, num_rows: int) -> None:
    batch, tokens = ours.input_ids.shape
    assert batch == num_rows and is_length_bucket(tokens)
    assert is_length_bucket(ours.words_valid.shape[1], cap=processor.max_len)
    c = ours.labels_valid.shape[1]
    assert c in (4, 6, 8, 12, 16, 24, 32)


@pytest.mark.parametrize("labels", [SHARED_LABELS, PER_TEXT_LABELS], ids=["shared", "per-text"])
@pytest.mark.parametrize("bucket", [False, True])
def test_prepare_matches_reference(setup, labels, bucket):
    ref, processor = setup
    want = reference_batch(ref, TEXTS, labels)
    ours = prepare(processor, TEXTS, labels, bucket=bucket)
    if bucket:
        assert_bucketed(ours, processor, len(TEXTS))
    else:
        assert ours.input_ids.shape == want["input_ids"].shape
        assert ours.labels_valid.shape[1] == max(len(labels) for labels in want["labels"])
        assert ours.words_valid.shape[1] == MAX_LEN  # the longest text, truncated
    assert_matches(ours, want, processor)
    for i, words in enumerate(ours.words):
        assert ours.word_starts[i] == want["start_token_map"][i][: len(words)]
        assert ours.word_ends[i] == want["end_token_map"][i][: len(words)]
        assert [TEXTS[i][s:e] for s, e in zip(ours.word_starts[i], ours.word_ends[i], strict=True)] == words


def test_truncation_warns_at_the_caller(setup):
    _, processor = setup
    with pytest.warns(UserWarning, match=f"length {MAX_LEN + 9} has been truncated to {MAX_LEN}") as record:
        ours = processor.prepare(TEXTS[3:5], ["thing"])
    assert [w.filename for w in record] == [__file__]
    assert ours.text_lengths.tolist() == [MAX_LEN, 1]
    assert ours.words[0] == [word for word, _, _ in split_words(TEXTS[3])[:MAX_LEN]]


@pytest.mark.parametrize("bucket", [False, True])
def test_words_mask_counts_words_without_subwords(setup, bucket):
    """A whitespace label is a prompt word with no subword: the reference's ordinal count shifts the text words."""
    ref, processor = setup
    texts, labels = ["Alice met Bob in Paris.", "Hi"], ["person", " ", "", "city"]
    want = reference_batch(ref, texts, labels)
    ours = prepare(processor, texts, labels, bucket=bucket)
    assert_matches(ours, want, processor)
    first_words = want["words_mask"].max(axis=1)
    assert (first_words == want["text_lengths"].reshape(-1) - 1).all()  # the quirk happened: one word lost


@pytest.mark.parametrize("bucket", [False, True])
def test_texts_without_words_get_neutral_rows(setup, bucket):
    ref, processor = setup
    texts, labels = ["", "Alice met Bob.", " \n\t\u3000", "Paris"], [["x"], ["person"], [], ["city", "country"]]
    want = reference_batch(ref, texts, labels)  # gliner skips the empty texts
    ours = prepare(processor, texts, labels, bucket=bucket)
    assert_matches(ours, want, processor, rows=[1, 3])
    assert ours.words[0] == ours.words[2] == [] and ours.text_lengths[[0, 2]].tolist() == [0, 0]


@pytest.mark.parametrize("bucket", [False, True])
def test_collate_words_matches_reference_collator(setup, bucket):
    ref, processor = setup
    word_lists = [["Alice", "met", "Bob"], [], ["a", " ", "b", "\u00a0", "c"], [f"t{i}" for i in range(MAX_LEN + 3)]]
    labels = ["person", "place", "person"]
    want = reference_batch(ref, labels=labels, word_lists=word_lists)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = processor.collate_words(word_lists, labels, bucket=bucket)
    assert_matches(ours, want, processor)
    assert ours.words[1] == ["[PAD]"]
    for words, starts, ends in zip(ours.words, ours.word_starts, ours.word_ends, strict=True):
        joined = " ".join(words)
        assert [joined[s:e] for s, e in zip(starts, ends, strict=True)] == words


def test_batch_size_pads_with_neutral_rows(setup):
    ref, processor = setup
    want = reference_batch(ref, TEXTS[:3], SHARED_LABELS)
    ours = prepare(processor, TEXTS[:3], SHARED_LABELS, batch_size=8)
    assert_bucketed(ours, processor, 8)
    assert_matches(ours, want, processor)
    assert len(ours.words) == len(ours.labels) == 3
    exact = prepare(processor, TEXTS[:3], SHARED_LABELS, bucket=False, batch_size=5)
    assert exact.input_ids.shape == (5, want["input_ids"].shape[1])
    assert_matches(exact, want, processor)
    with pytest.raises(ValueError, match="batch_size=2"):
        prepare(processor, TEXTS[:3], SHARED_LABELS, batch_size=2)


def test_left_padding_tokenizer(setup):
    ref, processor = setup
    texts = TEXTS[:2]
    ref_tokenizer = ref.data_processor.transformer_tokenizer
    ref_tokenizer.padding_side = processor.tokenizer.padding_side = "left"
    try:
        want = reference_batch(ref, texts, SHARED_LABELS)
        exact = prepare(processor, texts, SHARED_LABELS, bucket=False)
        padded = prepare(processor, texts, SHARED_LABELS)
    finally:
        ref_tokenizer.padding_side = processor.tokenizer.padding_side = "right"
    assert (want["attention_mask"][:, 0] == 0).any()  # the reference really padded on the left
    t = want["input_ids"].shape[1]
    for key in ("input_ids", "attention_mask", "words_mask"):
        np.testing.assert_array_equal(getattr(exact, key), want[key])
        np.testing.assert_array_equal(getattr(padded, key)[:, -t:], want[key])
    assert (padded.input_ids[:, :-t] == processor.tokenizer.pad_token_id).all()
    assert not padded.attention_mask[:, :-t].any() and not padded.words_mask[:, :-t].any()


def test_label_validation(setup):
    """The processor checks labels as the model's entry points do (one `normalize_labels`), keeping what training
    rows need: an empty label list and gliner's blank label of an example without entities."""
    _, processor = setup
    with pytest.raises(ValueError, match="got 1 label lists for 2 texts"):
        processor.prepare(["a", "b"], [["x"]])
    with pytest.raises(ValueError, match="not the string 'person'"):
        processor.prepare(["a"], "person")
    assert processor.prepare(["a"], [{"person": "a human"}]).labels == [["a human"]]  # the model reads descriptions
    with pytest.raises(ValueError, match="non-empty strings; got 3"):
        processor.prepare(["a"], ["x", 3])
    assert processor.prepare(["a b", "c"], [["x", "x", "y"], [""]]).labels == [["x", "y"], [""]]
    assert processor.prepare(["a b"], [[]]).labels == [[]]


@pytest.mark.parametrize(
    "labels",
    [
        ["person", "city", "person"],
        {"person": "a human being", "city": "a city name", "org": "person"},
        [["person", "date"], {"city": "a city name"}, ["x", "y", "x"]],
        [{"a": "first"}, {"b": "second", "c": "third"}, []],
    ],
)
def test_normalize_labels_matches_reference(labels):
    """{prompt: label} per text, as gliner's own label normalisation pairs its model prompts with label names."""
    expected_prompts, expected_names = _normalize_labels(labels, 3, [0, 1, 2])
    if not isinstance(expected_prompts[0], list):  # one label set for every text
        expected_prompts, expected_names = [expected_prompts] * 3, [expected_names] * 3
    got = normalize_labels(labels, 3, strict=False)
    assert [list(s) for s in got] == [list(p) for p in expected_prompts]
    assert [list(s.values()) for s in got] == [list(n) for n in expected_names]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("person", "not the string 'person'"),
        (["person", " "], "non-empty strings; got ' '"),
        ([], "list is empty"),
        ({"person": "a human", "man": "a human"}, "each label needs its own description"),
        ({"person": " "}, "labels and descriptions must be non-empty strings; got ' '"),
        ({"person": 3}, "labels and descriptions must be non-empty strings; got 3"),
        ([{"person": "a human"}, ["x"]], "got 2 label lists for 1 texts"),
    ],
)
def test_user_facing_label_checks_are_strict(labels, message):
    with pytest.raises(ValueError, match=message):
        normalize_labels(labels, 1)


def test_refusals(setup):
    _, processor = setup
    with pytest.raises(ValueError, match="words_splitter_type='spaces'"):
        Processor(processor.tokenizer, words_splitter_type="spaces")
    with pytest.raises(ValueError, match="subtoken_pooling 'sum'"):
        Processor(processor.tokenizer, subtoken_pooling="sum")


@pytest.mark.parametrize("text", TRICKY)
def test_split_words_matches_reference(text):
    assert split_words(text) == list(WhitespaceTokenSplitter()(text))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.one_of(st.characters(), st.sampled_from(" \t\n-_.,'\u00a0\u200b")), max_size=40))
def test_split_words_property(text):
    words = split_words(text)
    assert words == list(WhitespaceTokenSplitter()(text))
    assert bool(words) == bool(text.strip())  # gliner skips exactly the texts that have no words


def gliner_tokenization(
    tokenizer, word_lists: list[list[str]], labels: list[list[str]], pooling: str = "first"
) -> dict[str, np.ndarray]:
    """input_ids, attention_mask and words_mask of gliner's span processor (its own tokenizer call and word mask)
    on pre-split words, with `pooling` as the config's subtoken_pooling."""
    from gliner.data_processing.processor import UniEncoderSpanProcessor

    config = types.SimpleNamespace(
        ent_token="<<ENT>>", sep_token="<<SEP>>", words_splitter_type="whitespace", subtoken_pooling=pooling
    )
    inputs = UniEncoderSpanProcessor(config, tokenizer, None).tokenize_inputs(word_lists, labels)
    return {key: inputs[key].numpy() for key in ("input_ids", "attention_mask", "words_mask")}


# Words some tokenizer reads as nothing (zero-width space, a lone combining accent, a control character), accents,
# CJK, emoji, gliner's own prompt tokens, and a label the tokenizer drops.
ODD_WORDS = [
    ["Zürich", "\u200b", "met", "東京タワー", "😀👍🏽", "e\u0301", "naïve", "\u0301", "x\x07y"],
    ["<<ENT>>", "state-of-the-art", "$1,200.50", "«déjà»", "\x07"],
    ["Hi"],
]
ODD_LABELS = [["person", "city name"], ["\u200b", "date"], ["organisation", "thing", "x"]]
# The same prompts, the last row's as {label: description}: the model reads the descriptions.
ODD_DESCRIBED = [*ODD_LABELS[:2], {"org": "organisation", "kind": "thing", "y": "x"}]


@pytest.mark.parametrize("kind", ["wordpiece", "byte_level_bpe", "metaspace_bos_only"])
@pytest.mark.parametrize("limit", [None, 14, 9])
@pytest.mark.parametrize("pooling", ["first", "last", "mean"])  # "max" marks the subtokens "mean" marks
def test_cached_word_pieces_equal_the_tokenizer(kind, limit, pooling):
    """Rows assembled from cached per-word subwords equal gliner's own tokenization and words_mask for every
    subtoken_pooling, for WordPiece, byte-level BPE and a bos-only Metaspace tokenizer padded and truncated on the
    left, with and without truncation (words cut in the middle), twice (from an empty cache, then a full one); a
    {label: description} row reads its descriptions."""
    from tests.utils.tokenizers import trained

    tokenizer = trained(kind)
    if limit is not None:
        tokenizer.model_max_length = limit
    processor = Processor(tokenizer, max_len=100, subtoken_pooling=pooling)
    rows = [joined_word_offsets(words) for words in ODD_WORDS]
    want = gliner_tokenization(tokenizer, ODD_WORDS, ODD_LABELS, pooling)
    for _ in range(2):
        ours = processor.collate_rows(rows, ODD_DESCRIBED, bucket=False)
        for key, expected in want.items():
            np.testing.assert_array_equal(getattr(ours, key), expected, err_msg=key)
    if limit is not None:
        assert want["attention_mask"].sum(axis=1).max() == limit  # the tokenizer did cut
    assert processor.tokens_per_word(ODD_WORDS[0]).tolist() == [
        len(tokenizer([word], is_split_into_words=True, add_special_tokens=False)["input_ids"]) for word in ODD_WORDS[0]
    ]


@pytest.mark.parametrize("bucket", [False, True])
def test_wire_array_gives_the_model_arrays(setup, bucket):
    """One int32 array per batch travels to the devices; taken apart, it gives the arrays that match gliner's."""
    _, processor = setup
    ours = prepare(processor, [*TEXTS, "", " "], [*PER_TEXT_LABELS, ["x"], ["y", "z"]], bucket=bucket, batch_size=9)
    wire = ours.to_wire()
    assert wire.dtype == np.int32 and wire.shape[0] == 9
    unpacked = from_wire(wire, ours.wire_sizes)
    expected = ours.model_arrays()
    assert unpacked.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(unpacked[key], value, err_msg=key)
        assert unpacked[key].dtype == value.dtype, key
