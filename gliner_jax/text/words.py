"""Words and their subword pieces: gliner's whitespace word splitter, word offsets, and `WordPieces`, rows of
pre-split words tokenized from a cache of each distinct word's subword ids."""

from __future__ import annotations

import itertools
import operator
import re
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

# gliner's WhitespaceTokenSplitter pattern (Python `re`, Unicode \w).
_WORD = re.compile(r"\w+(?:[-_]\w+)*|\S")

Word = tuple[str, int, int]  # a word and its character offsets (start, end exclusive) in its text


def word_strings(words: Sequence[Word]) -> list[str]:
    """The words of (word, char_start, char_end) tuples."""
    return list(map(operator.itemgetter(0), words))


def split_words(text: str) -> list[Word]:
    """gliner's default ("whitespace") word splitter: (word, char_start, char_end) of each word, in order."""
    return [(match.group(), match.start(), match.end()) for match in _WORD.finditer(text)]


def joined_word_offsets(words: Sequence[str]) -> list[Word]:
    """(word, char_start, char_end) of each word in `" ".join(words)`."""
    row, start = [], 0
    for word in words:
        row.append((word, start, start + len(word)))
        start += len(word) + 1
    return row


def _exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(counts) else np.zeros(0, np.int64)


class WordPieces:
    """Rows of pre-split words tokenized as `tokenizer(rows, is_split_into_words=True, truncation=True,
    padding="longest")` tokenizes them, with gliner's words_mask, from a cache of each distinct word's subword ids.

    A tokenizer reads pre-split words one at a time (each word is normalised, pre-tokenized and split on its own), so
    a row's ids are its words' ids laid end to end between the special tokens it adds to any single sequence; only
    words not seen before are sent to the tokenizer (in one call). The cache holds up to `max_words` distinct words
    and then starts again. Thread-safe. `add_special_tokens=False` leaves the tokenizer's special tokens out (gliner's
    streaming model tokenizes so).
    """

    def __init__(self, tokenizer: Any, max_words: int = 1 << 18, *, add_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.max_words = max_words
        self._lock = threading.Lock()
        none = np.zeros(0, np.int32)
        self._special: tuple[np.ndarray, np.ndarray] | None = None if add_special_tokens else (none, none)
        self._reset()

    def _reset(self) -> None:
        self._index: dict[str, int] = {}  # word -> its entry in the tables below
        self._starts = np.zeros(0, np.int64)  # first subword of each entry in _ids
        self._lengths = np.zeros(0, np.int64)  # subwords of each entry (0 for a word the tokenizer drops)
        self._ids = np.zeros(0, np.int32)

    def special_tokens(self) -> tuple[np.ndarray, np.ndarray]:
        """Ids the tokenizer puts before and after the words of one sequence (e.g. [CLS] and [SEP])."""
        if self._special is None:
            probe = self.tokenizer(["a", "b"], is_split_into_words=True)
            ids, word_ids = probe["input_ids"], probe.word_ids()
            inside = [i for i, word in enumerate(word_ids) if word is not None]
            if not inside or inside != list(range(inside[0], inside[-1] + 1)):
                raise NotImplementedError(f"the tokenizer puts special tokens between words: {word_ids}")
            self._special = np.array(ids[: inside[0]], np.int32), np.array(ids[inside[-1] + 1 :], np.int32)
        return self._special

    def entries(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(start into the id table, number of subwords) of each word; words new to the cache are tokenized."""
        with self._lock:
            missing = [word for word in dict.fromkeys(words) if word not in self._index]
            if missing:
                if len(self._index) + len(missing) > self.max_words:
                    self._reset()
                    missing = list(dict.fromkeys(words))
                encoding = self.tokenizer(missing, is_split_into_words=True, add_special_tokens=False, verbose=False)
                lengths = np.bincount(np.array(encoding.word_ids(), np.int64), minlength=len(missing))
                self._starts = np.concatenate([self._starts, len(self._ids) + _exclusive_cumsum(lengths)])
                self._lengths = np.concatenate([self._lengths, lengths])
                self._ids = np.concatenate([self._ids, np.array(encoding["input_ids"], np.int32)])
                self._index.update(zip(missing, range(len(self._index), len(self._index) + len(missing)), strict=True))
            entry = np.fromiter(map(self._index.__getitem__, words), np.int64, len(words))
            return self._starts[entry], self._lengths[entry]

    def encode(
        self, rows: Sequence[Sequence[str]], skip: Sequence[int], pooling: str = "first"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """input_ids, attention_mask and words_mask [len(rows), longest row] (int32) of the rows, `skip[r]` leading
        words of row r (its prompt) left out of its words_mask (gliner's): at the kept subwords of each word that
        `pooling` reads (its first for "first", its last for "last", all for "mean" / "max"), the word's ordinal
        among the row's words that have subwords, minus skip[r], where positive; 0 elsewhere."""
        tokenizer = self.tokenizer
        prefix, suffix = self.special_tokens()
        words_per_row = np.array([len(row) for row in rows], np.int64)
        starts, pieces = self.entries(list(itertools.chain.from_iterable(rows)))
        num_rows, total = len(rows), int(pieces.sum())
        # Per subword: its word, its row, its place among its row's subwords.
        token_word = np.repeat(np.arange(len(pieces)), pieces)
        token_ids = self._ids[np.repeat(starts, pieces) + np.arange(total) - _exclusive_cumsum(pieces)[token_word]]
        token_row = np.repeat(np.arange(num_rows), words_per_row)[token_word]
        row_tokens = np.bincount(token_row, minlength=num_rows)
        place = np.arange(total) - _exclusive_cumsum(row_tokens)[token_row]
        # truncation=True: a row keeps as many subwords as fit beside the special tokens, cut on truncation_side.
        room = tokenizer.model_max_length - len(prefix) - len(suffix)
        kept_tokens = np.minimum(row_tokens, max(room, 0)) if room < total else row_tokens
        cut = row_tokens - kept_tokens
        if getattr(tokenizer, "truncation_side", "right") == "left":
            place = place - cut[token_row]
        keep = (place >= 0) & (place < kept_tokens[token_row])
        token_word, token_ids, token_row, place = token_word[keep], token_ids[keep], token_row[keep], place[keep]
        # gliner's words_mask: a subword whose word differs from the previous kept subword's starts a word, one whose
        # word differs from the next kept subword's ends it (words are numbered across rows, so a row's end ends one).
        first = place == 0
        first[1:] |= token_word[1:] != token_word[:-1]
        seen = np.cumsum(first) - _exclusive_cumsum(np.bincount(token_row[first], minlength=num_rows))[token_row]
        skip = np.asarray(skip, np.int64)[token_row]
        if pooling == "first":
            read = first
        elif pooling == "last":
            read = np.append(token_word[:-1] != token_word[1:], True)
        else:  # mean, max: every subword
            read = np.ones_like(first)
        marks = np.where(read & (seen > skip), seen - skip, 0)

        lengths = len(prefix) + kept_tokens + len(suffix)
        width = int(lengths.max(initial=0))
        lead = width - lengths if tokenizer.padding_side == "left" else np.zeros(num_rows, np.int64)
        input_ids = np.full((num_rows, width), tokenizer.pad_token_id, np.int32)
        attention_mask = np.zeros((num_rows, width), np.int32)
        words_mask = np.zeros((num_rows, width), np.int32)
        columns = np.arange(width)
        attention_mask[(columns >= lead[:, None]) & (columns < (lead + lengths)[:, None])] = 1
        for offset, ids in ((0, prefix), (len(prefix) + kept_tokens, suffix)):
            for k, token in enumerate(ids):
                input_ids[np.arange(num_rows), lead + offset + k] = token
        column = lead[token_row] + len(prefix) + place
        input_ids[token_row, column] = token_ids
        words_mask[token_row, column] = marks
        return input_ids, attention_mask, words_mask


def prepare_tokenizer(tokenizer: Any) -> Any:
    """A missing pad token set to the eos token, as gliner sets it on its tokenizers; ValueError without either."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has neither a pad token nor an eos token")
    return tokenizer
