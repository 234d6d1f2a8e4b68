"""gliner's word splitters, one per `words_splitter_type`: each gives a text's words as (word, char_start, char_end),
as gliner 0.2.29's splitter of that name does, with the same library (an optional extra, imported when the splitter
is built; a missing one is named with the extra that installs it).

Where a library gives token strings without offsets, each token is placed, as gliner places it, at its first
occurrence in the text from the end of the previous token (`str.find`; a token not found gets start -1, and the search
goes on from its length - 1). The "hindi" splitter skips a token not found instead.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Iterable
from typing import Any

from gliner_jax.text.words import Word, split_words

Splitter = Callable[[str], list[Word]]

# words_splitter_type (every one gliner 0.2.29 accepts, as config.WORDS_SPLITTER_TYPES lists them) -> (the modules it
# imports, the pip extra of gliner-jax that installs them). gliner checks for `jieba` but imports `jieba3`; we need
# only `jieba3`.
REQUIREMENTS: dict[str, tuple[tuple[str, ...], str]] = {
    "whitespace": ((), ""),
    "spacy": (("spacy",), "spacy"),
    "mecab": (("mecab",), "mecab"),
    "jieba": (("jieba3",), "jieba"),
    "hanlp": (("hanlp",), "hanlp"),
    "janome": (("janome",), "janome"),
    "camel": (("camel_tools",), "camel"),
    "hindi": (("indicnlp",), "hindi"),
    "stanza": (("stanza", "langdetect"), "stanza"),
    "universal": (("langdetect", "spacy", "mecab", "janome", "indicnlp", "jieba3", "camel_tools"), "universal"),
}

# The universal splitter's language (langdetect's code) -> splitter; any other language, or none detected, gets
# spaCy's multi-language tokenizer.
UNIVERSAL_LANGUAGES = {
    "ko": "mecab",
    "ja": "janome",
    "hi": "hindi",
    "zh-cn": "jieba",
    "zh-tw": "jieba",
    "zh": "jieba",
    "ar": "camel",
}
UNIVERSAL_SEED = 0  # gliner's langdetect seed for the universal splitter
STANZA_SEED = 42  # and for the stanza splitter
STANZA_DEFAULT_LANGUAGE = "en"
HANLP_MODEL = "FINE_ELECTRA_SMALL_ZH"


def _placed(text: str, tokens: Iterable[str], skip_missing: bool = False) -> list[Word]:
    """Each token at its first occurrence in `text` from the end of the previous one (see the module docstring)."""
    words, cursor = [], 0
    for token in tokens:
        start = text.find(token, cursor)
        if start < 0 and skip_missing:
            continue
        cursor = start + len(token)
        words.append((token, start, cursor))
    return words


def check_available(splitter_type: str) -> None:
    """ValueError for an unknown `splitter_type`; ModuleNotFoundError naming the extra when its library is missing."""
    if splitter_type not in REQUIREMENTS:
        raise ValueError(f"unknown GLiNER config words_splitter_type={splitter_type!r}; known: {tuple(REQUIREMENTS)}")
    modules, extra = REQUIREMENTS[splitter_type]
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        raise ModuleNotFoundError(
            f"words_splitter_type={splitter_type!r} needs {', '.join(missing)}: pip install 'gliner-jax[{extra}]'"
        )


def _spacy(language: str = "en") -> Splitter:
    import spacy

    nlp = spacy.blank(language)
    return lambda text: [(token.text, token.idx, token.idx + len(token.text)) for token in nlp(text)]


def _mecab() -> Splitter:
    import mecab

    tagger = mecab.MeCab()
    return lambda text: _placed(text, tagger.morphs(text))


def _jieba() -> Splitter:
    import jieba3

    tagger = jieba3.jieba3()
    return lambda text: _placed(text, tagger.cut_text(text))


def _janome() -> Splitter:
    from janome.tokenizer import Tokenizer

    tokenizer = Tokenizer()
    return lambda text: _placed(text, tokenizer.tokenize(text, wakati=True))


def _camel() -> Splitter:
    from camel_tools.tokenizers.word import simple_word_tokenize

    return lambda text: _placed(text, simple_word_tokenize(text))


def _hindi() -> Splitter:
    from indicnlp.tokenize.indic_tokenize import trivial_tokenize

    return lambda text: _placed(text, trivial_tokenize(text, lang="hi"), skip_missing=True)


def _hanlp() -> Splitter:
    import hanlp
    import hanlp.pretrained

    tagger = hanlp.load(hanlp.pretrained.tok.ALL[HANLP_MODEL])  # downloaded on first use
    return lambda text: _placed(text, tagger(text))


def _detector(seed: int) -> Callable[[str], str | None]:
    """langdetect's language of a text (None where it finds none), seeded as gliner seeds it."""
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    def language(text: str) -> str | None:
        DetectorFactory.seed = seed  # a class attribute langdetect reads at each detection
        try:
            return detect(text)
        except LangDetectException:
            return None

    return language


def _universal() -> Splitter:
    language = _detector(UNIVERSAL_SEED)
    splitters = {name: _BUILDERS[name]() for name in dict.fromkeys(UNIVERSAL_LANGUAGES.values())}
    fallback = _spacy("xx")
    return lambda text: splitters.get(UNIVERSAL_LANGUAGES.get(language(text)), fallback)(text)


class _Stanza:
    """gliner's stanza splitter: a tokenize pipeline per detected language (zh-cn read as zh), a model downloaded
    when it is missing; the default language's pipeline where detection fails or its language has none."""

    def __init__(self) -> None:
        import stanza

        self.stanza = stanza
        self.language = _detector(STANZA_SEED)
        self.pipelines: dict[str, Any] = {}
        self.pipeline(STANZA_DEFAULT_LANGUAGE)

    def pipeline(self, language: str) -> Any:
        if language not in self.pipelines:
            options = {"processors": "tokenize", "verbose": False}
            try:
                self.pipelines[language] = self.stanza.Pipeline(language, download_method=None, **options)
            except Exception:  # no model on disk (or none for the language): download it, as gliner does
                try:
                    self.stanza.download(language, **options)
                    self.pipelines[language] = self.stanza.Pipeline(language, **options)
                except Exception:
                    self.pipelines[language] = None
        return self.pipelines[language]

    def __call__(self, text: str) -> list[Word]:
        language = self.language(text) or STANZA_DEFAULT_LANGUAGE
        language = "zh" if language == "zh-cn" else language
        pipeline = self.pipeline(language) or self.pipeline(STANZA_DEFAULT_LANGUAGE)
        if pipeline is None:
            tried = " or ".join(map(repr, dict.fromkeys([language, STANZA_DEFAULT_LANGUAGE])))
            raise FileNotFoundError(
                f"words_splitter_type='stanza': no stanza tokenize model for {tried} could be loaded or downloaded "
                f"(stanza.download({language!r}, processors='tokenize') fetches one)"
            )
        return [
            (word.text, word.start_char, word.end_char)
            for sentence in pipeline(text).sentences
            for word in sentence.words
        ]


_BUILDERS: dict[str, Callable[[], Splitter]] = {
    "whitespace": lambda: split_words,
    "spacy": _spacy,
    "mecab": _mecab,
    "jieba": _jieba,
    "hanlp": _hanlp,
    "janome": _janome,
    "camel": _camel,
    "hindi": _hindi,
    "stanza": _Stanza,
    "universal": _universal,
}


class WordSplitter:
    """The word splitter of a `words_splitter_type`: called on a text, its (word, char_start, char_end) words.

    Built eagerly: a missing library (or HanLP's model, which cannot be downloaded) fails here; a missing Stanza
    model fails at the first text of its language, as in gliner (FileNotFoundError; gliner's RuntimeError). Calls are
    serialised, since the libraries' tokenizers are not all thread-safe. A pickled copy carries only the type and
    rebuilds the library's tokenizer at its first call."""

    def __init__(self, splitter_type: str = "whitespace") -> None:
        check_available(splitter_type)
        self.splitter_type = splitter_type
        self._lock = threading.Lock()
        self._split: Splitter | None = _BUILDERS[splitter_type]()

    def __call__(self, text: str) -> list[Word]:
        """The words of `text` with their character offsets, in order."""
        if self.splitter_type == "whitespace":
            return split_words(text)
        with self._lock:
            if self._split is None:
                self._split = _BUILDERS[self.splitter_type]()
            return self._split(text)

    def __getstate__(self) -> dict[str, Any]:
        return {"splitter_type": self.splitter_type}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.splitter_type = state["splitter_type"]
        self._lock = threading.Lock()
        self._split = None

    def __repr__(self) -> str:
        return f"WordSplitter({self.splitter_type!r})"
