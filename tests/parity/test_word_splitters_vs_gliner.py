"""Every words_splitter_type whose library works offline against gliner's WordsSplitter of that type: the same words
and character offsets on texts in Chinese, Japanese, Korean, Arabic, Hindi and English; the stanza splitter's
missing-model error; a jieba model's entities against gliner's."""

from __future__ import annotations

import importlib.util
import json
import pickle

import pytest
from gliner.data_processing.tokenizer import SpaCyTokenSplitter, WordsSplitter

from gliner_jax import GLiNER
from gliner_jax.cli import main
from gliner_jax.config import WORDS_SPLITTER_TYPES
from gliner_jax.testing.builders import build_reference, quantile_thresholds
from gliner_jax.text.splitters import REQUIREMENTS, WordSplitter, check_available
from gliner_jax.training.config import ModelSection
from gliner_jax.training.data import ArrayRecordExamples, open_source
from gliner_jax.training.model_init import ModelWordSplitter
from tests.utils.entities import assert_same_entities

# One text per language, with a repeated word (placed after the previous one, not at its first occurrence), digits,
# punctuation and a run of spaces; then mixed scripts and the texts without words.
TEXTS = {
    "zh": "北京大学的王小明教授说：北京的冬天很冷，但北京的烤鸭很好吃。2024年3月，他去了上海  和香港。",  # noqa: RUF001
    "ja": "東京大学の山田太郎教授は、2023年に京都で講演を行いました。東京に戻った後、山田さんは  休みました。",
    "ko": "삼성전자는 서울에 본사를 둔 한국의 기업입니다. 삼성전자의 이재용 회장은  2024년에 서울에서 발표했다.",
    "ar": "زار الرئيس محمد بن سلمان مدينة القاهرة يوم الخميس، ثم عاد الرئيس إلى  الرياض في 12 مارس.",
    "hi": "नरेंद्र मोदी ने नई दिल्ली में 15 अगस्त को भाषण दिया। मोदी ने कहा कि  दिल्ली भारत की राजधानी है।",
    "en": "Tim Cook, Apple's CEO, visited Beijing in March 2024 (state-of-the-art!); Cook  met Apple's staff.",
    "mixed": "GLiNER 在东京 (Tokyo) で発表された — «مرحبا» नमस्ते 안녕하세요 ok.",
    "empty": "",
    "spaces": "   ",
}
# The types built on libraries that need no download (stanza and hanlp fetch their models from the internet).
OFFLINE = ["spacy", "mecab", "jieba", "janome", "camel", "hindi", "universal"]
# gliner's jieba splitter checks for the `jieba` package before it imports `jieba3`.
REFERENCE_MODULES = {"jieba": ("jieba",), "universal": ("jieba",)}


def require(splitter_type: str) -> None:
    """Skip unless both our splitter's library and the reference's are installed."""
    modules = REQUIREMENTS[splitter_type][0] + REFERENCE_MODULES.get(splitter_type, ())
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")


@pytest.mark.parametrize("splitter_type", OFFLINE)
def test_words_and_offsets_match_reference(splitter_type):
    require(splitter_type)
    reference, ours = WordsSplitter(splitter_type), WordSplitter(splitter_type)
    for language, text in TEXTS.items():
        assert ours(text) == list(reference(text)), language
    copy = pickle.loads(pickle.dumps(ours))  # a copy rebuilds its library tokenizer when first called
    assert copy(TEXTS["zh"]) == ours(TEXTS["zh"])


def test_texts_reach_every_branch_of_reference_universal():
    """gliner's universal splitter reads each text above with its language's splitter (the spaCy fallback for
    English and the texts without words), so the comparison above covers each branch."""
    require("universal")
    universal = WordsSplitter("universal")
    branches = {"zh": "jieba", "ja": "janome", "ko": "mecab", "hi": "hindi", "ar": "camel"}
    for language, splitter_type in branches.items():
        assert list(universal(TEXTS[language])) == list(WordsSplitter(splitter_type)(TEXTS[language])), language
        assert list(universal(TEXTS[language])) != list(SpaCyTokenSplitter(lang="xx")(TEXTS[language])), language
    assert list(universal(TEXTS["en"])) == list(SpaCyTokenSplitter(lang="xx")(TEXTS["en"]))


def test_stanza_without_a_model_refuses_like_reference(monkeypatch, tmp_path):
    """Offline, with no model on disk: both splitters build and then refuse the first text (gliner: RuntimeError;
    ours: FileNotFoundError, which the CLI shows as one line). (A real
    stanza model cannot be fetched here; stanza.download is replaced by one that fails, as it does offline.)"""
    require("stanza")
    import stanza

    def no_network(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(stanza, "download", no_network)
    monkeypatch.setenv("STANZA_RESOURCES_DIR", str(tmp_path))
    ours, reference = WordSplitter("stanza"), WordsSplitter("stanza")
    with pytest.raises(RuntimeError, match="could not be loaded"):
        list(reference(TEXTS["en"]))
    with pytest.raises(FileNotFoundError, match=r"words_splitter_type='stanza': no stanza tokenize model for 'en'"):
        ours(TEXTS["en"])


def test_unknown_or_missing_splitter_is_named(monkeypatch):
    assert tuple(REQUIREMENTS) == WORDS_SPLITTER_TYPES  # the config accepts what the registry builds
    with pytest.raises(ValueError, match="words_splitter_type='spaces'"):
        WordSplitter("spaces")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"needs janome: pip install 'gliner-jax\[janome\]'$"):
        check_available("janome")


def test_jieba_model_predicts_reference_entities(gliner_backbone, tmp_path):
    """A gliner model saved with words_splitter_type='jieba' and loaded here finds gliner's entities in Chinese."""
    require("jieba")
    config = dict(span_mode="markerV0", hidden_size=48, max_width=4, max_len=64, words_splitter_type="jieba")
    reference = build_reference(gliner_backbone, tmp_path, logit_scale=4.0, **config)
    ours = GLiNER.from_pretrained(tmp_path)
    texts, labels = [TEXTS["zh"], TEXTS["mixed"]], ["person", "city", "organization"]
    (threshold,) = quantile_thresholds(reference, texts, labels, (0.9,))
    expected = reference.inference(texts, labels, threshold=threshold)
    assert sum(map(len, expected)) > 0  # the comparison is not between empty lists
    for ours_row, ref_row in zip(ours.inference(texts, labels, threshold=threshold), expected, strict=True):
        assert_same_entities(ours_row, ref_row)
    # Training from this model splits character-offset records with its splitter, read from its config.
    split = ModelWordSplitter(ModelSection(init_from=str(tmp_path)))
    assert split(TEXTS["zh"]) == list(WordsSplitter("jieba")(TEXTS["zh"]))


def test_character_offset_records_split_with_the_splitter(tmp_path):
    """A training file of character-offset records, read for a jieba model (as a training source, and written into
    shards by `data prepare --words-splitter jieba`): gliner's jieba words, each entity the words it covers."""
    require("jieba")
    text = TEXTS["zh"]
    entities = [[0, 4, "organization"], [5, 8, "person"], [text.index("上海"), text.index("上海") + 2, "city"]]
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"text": text, "entities": entities}, ensure_ascii=False) + "\n", encoding="utf-8")
    (example,) = open_source(str(path), data_format="char", split=WordSplitter("jieba"))
    words = list(WordsSplitter("jieba")(text))
    assert example["tokenized_text"] == [word for word, _, _ in words]
    starts, ends = [start for _, start, _ in words], [end for _, _, end in words]
    assert example["ner"] == [[starts.index(start), ends.index(end), label] for start, end, label in entities]
    assert main(["data", "prepare", f"{path}:char", str(tmp_path / "shards"), "--words-splitter", "jieba"]) == 0
    written = ArrayRecordExamples(tmp_path / "shards")
    assert [written[i] for i in range(len(written))] == [example]
