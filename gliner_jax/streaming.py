"""Sessions of a streaming span model (gliner's `StreamingSpanGLiNER.inference(..., session_id=[...])`): text fed
chunk by chunk under a session id, each chunk read against the session's cached decoder keys and values.

As in gliner 0.2.29: a session's first chunk (or any chunk with `recompute=True`) runs the label prompt and the
whole text so far, and scores every span; a later chunk runs only its own words (split alone, their offsets after
the text so far), attending to the cache, and rescores the spans ending within `right_context_width` words of the
newest word (every span ending in the chunk at least; every span when a span context encoder reads all words).
Each call returns the session's whole entity list so far (spans may be revised or dropped by the new context).
Labels are fixed per session: other labels need `recompute=True` or `clear`. A session may hold at most the
config's `context_limit` decoder tokens (ValueError beyond: clear it).

A session's state is a `SessionState`, a JAX pytree (its arrays the leaves, the text and labels static), which can
be read (`Sessions.get`), saved, moved to other devices and put back (`Sessions.put`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from gliner_jax.buckets import label_bucket, length_bucket
from gliner_jax.config_streaming import StreamingSpanConfig
from gliner_jax.decoding import decode_span_batch
from gliner_jax.modeling.decoders.causal import KVCache
from gliner_jax.modeling.streaming import StreamingSpanModel
from gliner_jax.text.collate import Processor
from gliner_jax.text.labels import Labels, normalize_labels
from gliner_jax.text.words import Word, word_strings


@struct.dataclass
class SessionState:
    """One session: the decoder's cache (`cache`, [layers, 1, S, ...], its first `num_tokens` slots filled), the raw
    word states `words` [1, W, H] (the first `num_words`), the raw label prompts `prompts` [1, C, H], and the span
    logits so far, `span_logits` [W, K, labels] where `span_seen` [W, K]; static: the text so far, its words with
    their offsets, the label prompts and the labels returned."""

    cache: KVCache
    words: jax.Array
    prompts: jax.Array
    span_logits: np.ndarray
    span_seen: np.ndarray
    num_tokens: int = struct.field(pytree_node=False)
    num_words: int = struct.field(pytree_node=False)
    text: str = struct.field(pytree_node=False)
    word_offsets: tuple[Word, ...] = struct.field(pytree_node=False)
    labels: tuple[str, ...] = struct.field(pytree_node=False)
    label_names: tuple[str, ...] = struct.field(pytree_node=False)


@functools.partial(jax.jit, static_argnums=(0, 10))
def _step(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    words_mask: jax.Array,
    cache: KVCache,
    index: jax.Array,
    words: jax.Array,
    num_words: jax.Array,
    new_words: jax.Array,
    num_labels: int,
    prompts: jax.Array | None,
) -> tuple[jax.Array, KVCache, jax.Array, jax.Array]:
    """`StreamingSpanModel.step`, compiled per shape."""
    model = nnx.merge(graphdef, state)
    return model.step(
        input_ids, attention_mask, words_mask, cache, index, words, num_words, new_words, prompts, num_labels
    )


def _padded(array: jax.Array, axis: int, size: int) -> jax.Array:
    """`array` zero-padded along `axis` up to `size`."""
    pad = [(0, 0)] * array.ndim
    pad[axis] = (0, size - array.shape[axis])
    return jnp.pad(array, pad)


class Sessions:
    """The sessions of one streaming span model (see the module doc), by session id."""

    def __init__(self, model: StreamingSpanModel, config: StreamingSpanConfig, processor: Processor):
        self.model = model
        self.config = config
        self.processor = processor
        self._states: dict[str, SessionState] = {}

    def __len__(self) -> int:
        return len(self._states)

    def get(self, session_id: str) -> SessionState | None:
        """The state of a session, None for an unknown one."""
        return self._states.get(session_id)

    def put(self, session_id: str, state: SessionState) -> None:
        """Set a session's state (one read with `get`, possibly saved and restored since)."""
        self._states[session_id] = state

    def clear(self, session_ids: str | Iterable[str] | None = None) -> None:
        """Forget one session, several, or (None) all."""
        if session_ids is None:
            self._states.clear()
            return
        for session_id in [session_ids] if isinstance(session_ids, str) else session_ids:
            self._states.pop(session_id, None)

    def infer(
        self,
        texts: str | Sequence[str],
        labels: Labels,
        session_ids: Sequence[str],
        *,
        threshold: float = 0.5,
        flat_ner: bool = True,
        multi_label: bool = False,
        recompute: bool = False,
    ) -> list[list[dict]]:
        """Append each text to its session (`session_ids`, one per text) and return each session's entities so far,
        as gliner's session inference: {start, end, text, label, score} with offsets in the session's whole text. An
        empty or whitespace-only text returns [] and leaves its session as it was."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not isinstance(session_ids, list) or not all(isinstance(value, str) for value in session_ids):
            raise TypeError("session_id must be a list of strings")
        if len(session_ids) != len(texts):
            raise ValueError(f"session_id must have one value per input text: {len(session_ids)} for {len(texts)}")
        if len(set(session_ids)) != len(session_ids):
            raise ValueError("Duplicate session IDs in one inference call are ambiguous")
        if not isinstance(recompute, bool):
            raise TypeError(f"recompute must be a boolean, got {recompute!r}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        label_sets = normalize_labels(labels, len(texts))
        outputs: list[list[dict]] = []
        for text, session_id, label_set in zip(texts, session_ids, label_sets, strict=True):
            if not isinstance(text, str) or not text.strip():
                outputs.append([])
                continue
            state = self._append(session_id, text, label_set, recompute)
            self._states[session_id] = state
            outputs.append(_entities(state, threshold, flat_ner, multi_label))
        return outputs

    def _append(self, session_id: str, text: str, label_set: dict[str, str], recompute: bool) -> SessionState:
        """The session's state after reading `text`."""
        state = self._states.get(session_id)
        labels, names = tuple(label_set), tuple(label_set.values())
        if state is not None and not recompute and (state.labels, state.label_names) != (labels, names):
            raise ValueError(f"Labels for session {session_id!r} changed. Pass recompute=True or clear the session.")
        shift = len(state.text) if state is not None else 0
        chunk = [(word, start + shift, end + shift) for word, start, end in self.processor.split_words(text)]
        previous = () if state is None else state.word_offsets
        full = state is None or recompute
        row = list(previous) + chunk if full else chunk
        prompt = self.processor.prompt(list(labels)) if full else []
        past_tokens = 0 if full else state.num_tokens
        count = past_tokens + int(self.processor.tokens_per_word(prompt + word_strings(row)).sum())
        limit = self.config.context_limit
        if count > limit:
            raise ValueError(
                f"Session {session_id!r} would contain {count} decoder tokens, exceeding the configured context limit "
                f"of {limit}. Clear the session before continuing."
            )
        ids, mask, marks = self.processor.pieces.encode(
            [prompt + word_strings(row)], [len(prompt)], self.processor.subtoken_pooling
        )
        past_words = 0 if full else state.num_words
        total_words = past_words + len(row)
        # few shapes: the chunk padded to a token bucket, the cache to a power of two that holds it (cut at the limit)
        width = length_bucket(ids.shape[1])
        capacity = min(_capacity(past_tokens + width), limit)
        width = min(width, capacity - past_tokens)
        arrays = [np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in (ids, mask, marks)]
        arrays[0][:, ids.shape[1] :] = self.processor.tokenizer.pad_token_id
        word_capacity = _capacity(total_words)
        hidden = self.config.hidden_size
        if full:
            cache = self.model.encoder.init_cache(1, capacity)
            words, prompts = jnp.zeros((1, word_capacity, hidden)), None
        else:
            cache = KVCache(*(_padded(a, 2, capacity) for a in state.cache))
            words, prompts = _padded(state.words, 1, word_capacity), state.prompts
        graphdef, params = nnx.split(self.model)
        logits, cache, words, prompts = _step(
            graphdef,
            params,
            *map(jnp.asarray, arrays),
            cache,
            jnp.asarray(past_tokens),
            words,
            jnp.asarray([past_words]),
            jnp.asarray([len(row)]),
            label_bucket(len(labels)),
            prompts,
        )
        logits = np.asarray(logits, np.float32)[0, :, :, : len(labels)]
        scored = _candidates(self.config, past_words, len(row), word_capacity, full or self._recomputes_all)
        if full:
            span_logits, seen = np.zeros_like(logits), np.zeros(scored.shape, bool)
        else:
            span_logits, seen = _grown(state.span_logits, word_capacity), _grown(state.span_seen, word_capacity)
        span_logits[scored] = logits[scored]
        return SessionState(
            cache=cache,
            words=words,
            prompts=prompts,
            span_logits=span_logits,
            span_seen=seen | scored,
            num_tokens=count,
            num_words=total_words,
            text=(state.text if state is not None else "") + text,
            word_offsets=tuple(previous) + tuple(chunk),
            labels=labels,
            label_names=names,
        )

    @property
    def _recomputes_all(self) -> bool:
        """Whether every span is rescored on each chunk: a span context encoder reads all words (gliner's
        `uses_bidirectional_context`)."""
        return self.config.span_encoder_config is not None


def _capacity(n: int) -> int:
    """The power of two (at least 32) that holds `n`: a session's cache and word arrays grow so, compiling a program
    per doubling."""
    return max(32, 1 << (n - 1).bit_length())


def _grown(array: np.ndarray, rows: int) -> np.ndarray:
    """A copy of `array` with zero rows appended up to `rows`."""
    return np.concatenate([array, np.zeros((rows - len(array), *array.shape[1:]), array.dtype)])


def _candidates(config: StreamingSpanConfig, past: int, new: int, capacity: int, every: bool) -> np.ndarray:
    """The spans [W, K] a chunk of `new` words after `past` scores (gliner's `prepare_streaming_span_idx`): every
    span of the words so far (`every`), else those ending at or after min(past, newest word - right_context_width)."""
    total = past + new
    ends = np.arange(capacity)[:, None] + np.arange(config.max_width)[None, :]
    lowest = 0 if every else min(past, max(0, total - 1 - config.right_context_width))
    return (ends < total) & (ends >= lowest) & (new > 0)


def _entities(state: SessionState, threshold: float, flat_ner: bool, multi_label: bool) -> list[dict]:
    """A session's entities from its span logits so far, as gliner decodes them."""
    probs = (1.0 / (1.0 + np.exp(-state.span_logits)))[None]
    options = dict(threshold=threshold, flat_ner=flat_ner, multi_label=multi_label)
    found = decode_span_batch(probs, [state.num_words], [len(state.labels)], allowed=state.span_seen[None], **options)
    words = state.word_offsets
    return [
        {
            "start": words[start][1],
            "end": words[end][2],
            "text": state.text[words[start][1] : words[end][2]],
            "label": state.label_names[label],
            "score": float(score),
        }
        for start, end, label, score in found[0]
    ]
