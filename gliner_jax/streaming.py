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

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class _Append:
    """One text to append to a session: its words (offsets in the session's text), the row the step reads (the
    label prompt and every word for a new or recomputed session; the new words otherwise), and the session's token
    count before and after."""

    session_id: str
    state: SessionState | None
    text: str
    chunk: list[Word]
    row: list[Word]
    prompt: list[str]
    labels: tuple[str, ...]
    names: tuple[str, ...]
    full: bool
    past_tokens: int
    count: int


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
        batch_size: int = 8,
        return_class_probs: bool = False,
        snapshots: bool = False,
        return_exceptions: bool = False,
    ) -> list[list[dict] | Exception]:
        """Append each text to its session (`session_ids`, one per text) and return each session's entities so far,
        as gliner's session inference: {start, end, text, label, score} with offsets in the session's whole text
        (and "class_probs", a span's 5 best labels, with `return_class_probs`). An empty or whitespace-only text
        returns [] and leaves its session as it was; with `snapshots` (gliner's `StreamingBatch`) it returns its
        session's entities so far, and with `recompute` rereads the session's text. As in gliner, `batch_size` texts
        at a time, in order, their new (or recomputed) sessions run as one batch and the others by cached length;
        a session whose labels changed (without `recompute`) or that would pass the context limit raises ValueError
        once the other sessions have read their texts (with `return_exceptions`, the error is that text's result)."""
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
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        label_sets = normalize_labels(labels, len(texts))
        results: list[list[dict] | Exception] = [[] for _ in texts]

        def reads(i: int) -> bool:
            reread = snapshots and recompute and session_ids[i] in self._states
            return isinstance(texts[i], str) and (bool(texts[i].strip()) or reread)

        live = [i for i in range(len(texts)) if reads(i)]
        for begin in range(0, len(live), batch_size):  # gliner's batches of requests, in order
            groups: dict[tuple[bool, int], list[tuple[int, _Append]]] = {}
            for i in live[begin : begin + batch_size]:
                try:
                    item = self._prepare(session_ids[i], texts[i], label_sets[i], recompute)
                except ValueError as error:  # this session only, as gliner reports it
                    results[i] = error
                    continue
                groups.setdefault((item.full, item.past_tokens), []).append((i, item))
            for group in groups.values():  # new or recomputed sessions together; the others by cached length
                states = self._run([item for _, item in group])
                for (i, item), state in zip(group, states, strict=True):
                    self._states[item.session_id] = state
                    results[i] = _entities(state, threshold, flat_ner, multi_label, return_class_probs)
        if snapshots:
            for i in set(range(len(texts))) - set(live):
                state = self._states.get(session_ids[i])
                found = [] if state is None else _entities(state, threshold, flat_ner, multi_label, return_class_probs)
                results[i] = found
        for result in results:
            if isinstance(result, Exception) and not return_exceptions:
                raise result
        return results

    def _prepare(self, session_id: str, text: str, label_set: dict[str, str], recompute: bool) -> _Append:
        """What appending `text` to the session needs; ValueError for changed labels or a session past the limit."""
        state = self._states.get(session_id)
        labels, names = tuple(label_set), tuple(label_set.values())
        if state is not None and not recompute and (state.labels, state.label_names) != (labels, names):
            raise ValueError(f"Labels for session {session_id!r} changed. Pass recompute=True or clear the session.")
        shift = len(state.text) if state is not None else 0
        chunk = [(word, start + shift, end + shift) for word, start, end in self.processor.split_words(text)]
        full = state is None or recompute
        row = ([] if state is None else list(state.word_offsets)) + chunk if full else chunk
        prompt = self.processor.prompt(list(labels)) if full else []
        past_tokens = 0 if full else state.num_tokens
        count = past_tokens + int(self.processor.tokens_per_word(prompt + word_strings(row)).sum())
        limit = self.config.context_limit
        if count > limit:
            raise ValueError(
                f"Session {session_id!r} would contain {count} decoder tokens, exceeding the configured context limit "
                f"of {limit}. Clear the session before continuing."
            )
        return _Append(session_id, state, text, chunk, row, prompt, labels, names, full, past_tokens, count)

    def _run(self, items: list[_Append]) -> list[SessionState]:
        """One model step for sessions appended together (all new or recomputed, or all holding as many tokens): their
        rows batched, then each session's new state."""
        ids, mask, marks = self.processor.pieces.encode(
            [item.prompt + word_strings(item.row) for item in items],
            [len(item.prompt) for item in items],
            self.processor.subtoken_pooling,
        )
        past_tokens, full = items[0].past_tokens, items[0].full
        past_words = [0 if full else item.state.num_words for item in items]
        totals = [past + len(item.row) for past, item in zip(past_words, items, strict=True)]
        # few shapes: the chunk padded to a token bucket, the cache to a power of two that holds it (cut at the
        # limit), the words to a power of two, the labels to a label bucket
        # (never below what a session already holds: it may have run in a wider batch)
        states = [] if full else [item.state for item in items]
        width = length_bucket(ids.shape[1])
        capacity = min(_capacity(past_tokens + width), self.config.context_limit)
        capacity = max([capacity, *(s.cache.keys.shape[2] for s in states)])
        width = min(width, capacity - past_tokens)
        arrays = [np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in (ids, mask, marks)]
        arrays[0][:, ids.shape[1] :] = self.processor.tokenizer.pad_token_id
        word_capacity = max([_capacity(max(totals)), *(s.words.shape[1] for s in states)])
        num_labels = max(label_bucket(len(item.labels)) for item in items)
        if full:
            cache = self.model.encoder.init_cache(len(items), capacity)
            words, prompts = jnp.zeros((len(items), word_capacity, self.config.hidden_size)), None
        else:
            cache = KVCache(*(jnp.concatenate([_padded(s.cache[k], 2, capacity) for s in states], 1) for k in (0, 1)))
            words = jnp.concatenate([_padded(s.words, 1, word_capacity) for s in states])
            prompts = jnp.concatenate([_padded(s.prompts, 1, num_labels) for s in states])
        graphdef, params = nnx.split(self.model)
        logits, cache, words, prompts = _step(
            graphdef,
            params,
            *map(jnp.asarray, arrays),
            cache,
            jnp.asarray(past_tokens),
            words,
            jnp.asarray(past_words),
            jnp.asarray([len(item.row) for item in items]),
            num_labels,
            prompts,
        )
        logits = np.asarray(logits, np.float32)
        new_states = []
        for b, (item, past) in enumerate(zip(items, past_words, strict=True)):
            row_logits = logits[b, :, :, : len(item.labels)]
            scored = _candidates(self.config, past, len(item.row), word_capacity, full or self._recomputes_all)
            if full:
                span_logits, seen = np.zeros_like(row_logits), np.zeros(scored.shape, bool)
            else:
                span_logits = _grown(item.state.span_logits, word_capacity)
                seen = _grown(item.state.span_seen, word_capacity)
            span_logits[scored] = row_logits[scored]
            previous = item.state.text if item.state is not None else ""
            offsets = () if item.state is None else item.state.word_offsets
            new_states.append(
                SessionState(
                    cache=KVCache(cache.keys[:, b : b + 1], cache.values[:, b : b + 1]),
                    words=words[b : b + 1],
                    prompts=prompts[b : b + 1, : label_bucket(len(item.labels))],
                    span_logits=span_logits,
                    span_seen=seen | scored,
                    num_tokens=item.count,
                    num_words=past + len(item.row),
                    text=previous + item.text,
                    word_offsets=offsets + tuple(item.chunk),
                    labels=item.labels,
                    label_names=item.names,
                )
            )
        return new_states

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


def _entities(
    state: SessionState, threshold: float, flat_ner: bool, multi_label: bool, class_probs: bool = False
) -> list[dict]:
    """A session's entities from its span logits so far, as gliner decodes them; with `class_probs`, each with its
    span's 5 best labels {label: probability} (gliner's `return_class_probs`)."""
    probs = (1.0 / (1.0 + np.exp(-state.span_logits)))[None]
    options = dict(threshold=threshold, flat_ner=flat_ner, multi_label=multi_label)
    num_labels = len(state.labels)
    found = decode_span_batch(probs, [state.num_words], [num_labels], allowed=state.span_seen[None], **options)
    words = state.word_offsets
    entities = []
    for start, end, label, score in found[0]:
        entity = {
            "start": words[start][1],
            "end": words[end][2],
            "text": state.text[words[start][1] : words[end][2]],
            "label": state.label_names[label],
            "score": float(score),
        }
        if class_probs:
            scores = probs[0, start, end - start, :num_labels]
            best = np.argsort(-scores, kind="stable")[:5]
            entity["class_probs"] = {state.label_names[c]: float(scores[c]) for c in best}
        entities.append(entity)
    return entities
