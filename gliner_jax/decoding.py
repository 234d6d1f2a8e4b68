"""Host-side NumPy decoders: model probabilities -> entity spans, output identical to gliner 0.2.29.

Span model: every (start, width, class) cell with prob > threshold and start + width < num_words is a candidate, in
row-major (start, width, class) order. Token model: every start position (prob > threshold) is paired with each end
position >= start of the same class (prob > threshold) whose inside probs on [start..end] are all >= threshold; the
score is the minimum of those inside probs and the start and end probs; candidates come in (start, class, end) order.
Both then go through gliner's greedy search: stable sort by descending score, keep a span unless it conflicts with
one kept before, then stable sort of the kept spans by start.

Threshold comparisons follow the reference exactly: `probs > threshold` is done in the dtype of `probs` (as torch
does for a tensor against a Python float), the token model's inside check `inside < threshold` in float64 (as the
reference does on Python floats). Probabilities must not be NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gliner_jax.buckets import entity_bucket

Entity = tuple[int, int, int, float]


def greedy_select(
    starts: np.ndarray, ends: np.ndarray, scores: np.ndarray, *, flat_ner: bool = True, multi_label: bool = False
) -> np.ndarray:
    """Indices (into the candidate arrays) of the spans gliner's greedy_search keeps, in gliner's output order.

    Spans are inclusive integer intervals [starts[i], ends[i]] with starts <= ends. Two spans with the same bounds
    conflict unless `multi_label`; otherwise, with `flat_ner` any overlap conflicts, without it only crossing
    (overlapping, neither containing the other) does. O(N log N) for N candidates.
    """
    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    ends = np.asarray(ends, dtype=np.int64).reshape(-1)
    scores = np.asarray(scores).reshape(-1)
    if not len(starts) == len(ends) == len(scores):
        raise ValueError("starts, ends and scores must have the same length")
    if np.any(ends < starts):
        raise ValueError("every span needs start <= end")
    order = np.argsort(-scores, kind="stable")
    select = _select_flat if flat_ner else _select_nested
    kept = np.asarray(select(starts, ends, order, multi_label), dtype=np.int64)
    return kept[np.argsort(starts[kept], kind="stable")]


def _select_flat(starts: np.ndarray, ends: np.ndarray, order: np.ndarray, multi_label: bool) -> list[int]:
    """Greedy pass when kept spans must be disjoint (identical bounds allowed with `multi_label`).

    Kept spans are pairwise disjoint, so [s, e] overlaps one of them iff the kept span with the largest start <= e
    ends at or after s. A Fenwick tree over the ranks of the distinct start values answers "largest kept start rank
    <= rank(e)" in O(log N).
    """
    keys = np.unique(starts)
    rank = np.searchsorted(keys, starts)
    upto = np.searchsorted(keys, ends, side="right")  # number of distinct start values <= end
    size = len(keys)
    tree = [0] * (size + 1)  # prefix max of (1 + start rank) over kept spans
    end_at = [0] * size  # end of the kept span whose start has this rank
    kept = []
    cols = (rank, upto, starts, ends)
    for i, r, u, s, e in zip(order.tolist(), *(col[order].tolist() for col in cols), strict=True):
        best = 0
        while u:
            if tree[u] > best:
                best = tree[u]
            u &= u - 1
        if best:
            other_end = end_at[best - 1]
            if other_end >= s and not (multi_label and best - 1 == r and other_end == e):
                continue
        kept.append(i)
        end_at[r] = e
        j = value = r + 1
        while j <= size:
            if tree[j] < value:
                tree[j] = value
            j += j & -j
    return kept


def _select_nested(starts: np.ndarray, ends: np.ndarray, order: np.ndarray, multi_label: bool) -> list[int]:
    """Greedy pass when kept spans may nest but not cross (identical bounds allowed with `multi_label`).

    Kept spans form a laminar family, so the kept spans covering a boundary p|p+1 (start <= p < end) form a chain
    whose innermost member has the largest start and the smallest end. [s, e] crosses a kept span iff the innermost
    one covering s-1|s ends before e, or the innermost one covering e|e+1 starts after s. A segment tree over the
    boundaries (range "max" insert, point query) stores each kept span's rank in (start asc, end desc) order, in
    which the innermost member of a chain is the maximum.
    """
    n = len(starts)
    keys = np.unique(np.concatenate([starts - 1, ends]))
    size = len(keys)
    # Leaves size + rank(p) of the tree: queried at s-1 and e, a span covers the leaves of keys in [s, e).
    left_q = np.searchsorted(keys, starts - 1) + size
    right_q = np.searchsorted(keys, ends) + size
    cover_lo = np.searchsorted(keys, starts) + size
    by_nesting = np.lexsort((-ends, starts))
    code = np.empty(n, dtype=np.int64)
    code[by_nesting] = np.arange(1, n + 1)
    span_of = [-1, *by_nesting.tolist()]  # code -> candidate index
    start_list, end_list = starts.tolist(), ends.tolist()
    tree = [0] * (2 * size)
    seen = set()
    kept = []
    cols = (left_q, right_q, cover_lo, code)
    for i, lq, rq, l, c in zip(order.tolist(), *(col[order].tolist() for col in cols), strict=True):
        s, e = start_list[i], end_list[i]
        if not multi_label and (s, e) in seen:
            continue
        h = rq
        inner = 0
        while lq:
            if tree[lq] > inner:
                inner = tree[lq]
            lq >>= 1
        if inner and end_list[span_of[inner]] < e:
            continue
        inner = 0
        while rq:
            if tree[rq] > inner:
                inner = tree[rq]
            rq >>= 1
        if inner and start_list[span_of[inner]] > s:
            continue
        kept.append(i)
        seen.add((s, e))
        while l < h:
            if l & 1:
                if tree[l] < c:
                    tree[l] = c
                l += 1
            if h & 1:
                h -= 1
                if tree[h] < c:
                    tree[h] = c
            l >>= 1
            h >>= 1
    return kept


def decode_span_batch(
    probs: np.ndarray,
    num_words: np.ndarray,
    num_labels: np.ndarray,
    *,
    threshold: float = 0.5,
    flat_ner: bool = True,
    multi_label: bool = False,
    allowed: np.ndarray | None = None,
) -> list[list[Entity]]:
    """Rows of the span model at once: probs [B, W, K, C] (sigmoid applied; W and C padded beyond each row's
    num_words[b] / num_labels[b]) -> per row, (start_word, end_word_inclusive, class_index_0_based, score) in
    gliner's order. Identical to decoding each row alone: one greedy pass serves the whole batch, its rows laid
    end to end on one word axis so that spans of different rows never conflict. `allowed` [B, W, K] (bool): only
    those spans are candidates (gliner's `input_spans`)."""
    probs = np.asarray(probs)
    num_rows, words, widths, labels = probs.shape
    num_words, num_labels = _row_sizes(num_words, num_rows), _row_sizes(num_labels, num_rows)
    inside_text = np.arange(words)[:, None] + np.arange(widths)[None, :] < num_words[:, None, None]  # [B, W, K]
    real_label = np.arange(labels) < num_labels[:, None]  # [B, C]
    hit = (probs > probs.dtype.type(threshold)) & inside_text[..., None] & real_label[:, None, None, :]
    if allowed is not None:
        hit &= allowed[..., None]
    row, start, span_width, label = np.nonzero(hit)  # per row, row-major: the order of torch.where
    scores = probs[row, start, span_width, label]
    return _select_rows(row, start, start + span_width, label, scores, words, num_rows, flat_ner, multi_label)


def decode_token_batch(
    probs: np.ndarray,
    num_words: np.ndarray,
    num_labels: np.ndarray,
    *,
    threshold: float = 0.5,
    flat_ner: bool = True,
    multi_label: bool = False,
    allowed: np.ndarray | None = None,
) -> list[list[Entity]]:
    """Rows of the token model at once: probs [B, W, C, 3] (start, end, inside; sigmoid applied; padded as in
    `decode_span_batch`) -> per row, entities as `decode_span_batch` gives them. `allowed` [B, W, W] (bool, by start
    and end word): only those spans are candidates (gliner's `input_spans`)."""
    probs = np.asarray(probs)
    num_rows, words, labels, _ = probs.shape
    num_words, num_labels = _row_sizes(num_words, num_rows), _row_sizes(num_labels, num_rows)
    positions = np.arange(words)
    real = (positions[None, :, None] < num_words[:, None, None]) & (np.arange(labels) < num_labels[:, None, None])
    above = probs > probs.dtype.type(threshold)
    below = probs[..., 2].astype(np.float64) < threshold  # the reference checks inside probs as Python floats
    row, start, label = np.nonzero(above[..., 0] & real)  # per row, (position, class) row-major: torch.where's order
    # One line per start candidate over its row's positions: an end must lie in [start, num_words) ...
    after_start = (positions[None, :] >= start[:, None]) & (positions[None, :] < num_words[row, None])  # [S, W]
    inside = probs[row, :, label, 2]  # [S, W]
    inside_min = np.minimum.accumulate(np.where(after_start, inside, np.inf), axis=1)
    # ... with its end prob above threshold and no inside prob on [start..end] below it.
    broken = np.logical_or.accumulate(after_start & below[row, :, label], axis=1)
    ok = after_start & above[row, :, label, 1] & ~broken
    candidate, end = np.nonzero(ok)  # per start, ends ascending
    row, start, label = row[candidate], start[candidate], label[candidate]
    if allowed is not None:
        kept = allowed[row, start, end]
        row, start, label, end, candidate = row[kept], start[kept], label[kept], end[kept], candidate[kept]
    scores = np.minimum(np.minimum(inside_min[candidate, end], probs[row, start, label, 0]), probs[row, end, label, 1])
    return _select_rows(row, start, end, label, scores, words, num_rows, flat_ner, multi_label)


def decode_span_probs(
    probs: np.ndarray,
    num_words: int,
    num_labels: int,
    *,
    threshold: float = 0.5,
    flat_ner: bool = True,
    multi_label: bool = False,
) -> list[Entity]:
    """One row of the span model: probs [W, K, C] (sigmoid already applied, W and C may be padded beyond
    num_words / num_labels) -> (start_word, end_word_inclusive, class_index_0_based, score) in gliner's order."""
    options = dict(threshold=threshold, flat_ner=flat_ner, multi_label=multi_label)
    return decode_span_batch(np.asarray(probs)[None], [num_words], [num_labels], **options)[0]


def decode_token_probs(
    probs: np.ndarray,
    num_words: int,
    num_labels: int,
    *,
    threshold: float = 0.5,
    flat_ner: bool = True,
    multi_label: bool = False,
) -> list[Entity]:
    """One row of the token model: probs [W, C, 3] (start, end, inside; sigmoid applied; padded as above)."""
    options = dict(threshold=threshold, flat_ner=flat_ner, multi_label=multi_label)
    return decode_token_batch(np.asarray(probs)[None], [num_words], [num_labels], **options)[0]


def _row_sizes(sizes: np.ndarray | list[int], num_rows: int) -> np.ndarray:
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1)
    if len(sizes) != num_rows:
        raise ValueError(f"got {len(sizes)} row sizes for {num_rows} rows")
    return sizes


def _select_rows(
    row: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    label: np.ndarray,
    scores: np.ndarray,
    words: int,
    num_rows: int,
    flat_ner: bool,
    multi_label: bool,
) -> list[list[Entity]]:
    """Greedy selection within each row, all rows in one pass: row b's words are shifted to b * (words + 1), so no
    span of one row meets a span of another; a stable sort keeps each row's candidates in their own order, so each
    row keeps what it would keep alone. Returns (start, end, label, score) Python tuples per row."""
    shift = row * (words + 1)
    keep = greedy_select(start + shift, end + shift, scores, flat_ner=flat_ner, multi_label=multi_label)
    columns = (start[keep].tolist(), end[keep].tolist(), label[keep].tolist(), scores[keep].tolist())
    entities = list(zip(*columns, strict=True))
    bounds = np.searchsorted(row[keep], np.arange(num_rows + 1)).tolist()  # kept spans come row by row
    return [entities[bounds[b] : bounds[b + 1]] for b in range(num_rows)]


def merge_spans(
    spans: list[tuple[int, int, str, float]],
    labels: Sequence[str],
    flat_ner: bool,
    multi_label: bool,
    *,
    token_level: bool = False,
) -> list[tuple[int, int, str, float]]:
    """Merge the spans of one text found in several windows or label passes: each (start, end, label) once, with
    its best score, then greedy selection again.

    Candidates enter the greedy search in the order gliner's decoder would generate them from one row holding
    all the words and `labels` (the text's labels, in prompt order): by (start, end, label position) for a span
    model, (start, label position, end) for the token model. So of candidates with exactly equal scores, the one
    gliner keeps is kept: the earlier start, then the shorter span or the label listed first."""
    best: dict[tuple[int, int, str], float] = {}
    for start, end, label, score in spans:
        best[(start, end, label)] = max(float(score), best.get((start, end, label), -math.inf))
    position = {label: i for i, label in enumerate(dict.fromkeys(labels))}
    if token_level:
        keys = sorted(best, key=lambda k: (k[0], position[k[2]], k[1]))
    else:
        keys = sorted(best, key=lambda k: (k[0], k[1], position[k[2]]))
    order = greedy_select(
        np.array([k[0] for k in keys], np.int64),
        np.array([k[1] for k in keys], np.int64),
        np.array([best[k] for k in keys], np.float64),
        flat_ner=flat_ner,
        multi_label=multi_label,
    )
    return [(*keys[i], best[keys[i]]) for i in order]


Relation = tuple[int, int, int, float]  # (head entity index, relation class index 0-based, tail entity index, score)


def select_entities(
    probs: np.ndarray, span_mask: np.ndarray, threshold: float, num_labels: int
) -> tuple[np.ndarray, np.ndarray]:
    """The entities a span relation model's relation stage reads, chosen as gliner chooses them: every span (flat
    index start * K + width, in that order) whose best probability over the batch's first `num_labels` label columns
    exceeds `threshold`, span_mask set; no span when the batch has no label. probs [B, W, K, C], span_mask
    [B, W*K] -> entity_index [B, E] (E an entity bucket; padding 0), entity_mask [B, E] and the entities' first and
    last words [B, E, 2]."""
    rows, max_width = probs.shape[0], probs.shape[2]
    if num_labels:
        best = probs[..., :num_labels].reshape(rows, -1, num_labels).max(axis=-1)
        keep = (best > probs.dtype.type(threshold)) & span_mask.reshape(rows, -1)
    else:
        keep = np.zeros(span_mask.reshape(rows, -1).shape, bool)
    counts = keep.sum(axis=1)
    width = entity_bucket(int(counts.max(initial=0)) or 1)
    entity_mask = np.arange(width) < counts[:, None]
    entity_index = np.zeros((rows, width), np.int32)
    entity_index[entity_mask] = np.nonzero(keep)[1]
    bounds = np.stack([entity_index // max_width, entity_index // max_width + entity_index % max_width], axis=-1)
    return entity_index, entity_mask, bounds


def select_token_entities(
    probs: np.ndarray, threshold: float, num_words: int | np.ndarray, num_labels: int | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The spans gliner's `extract_spans_from_tokens` finds (a token relation model's entities, a token model's spans
    under `represent_spans`) in each row's first `num_words` word and `num_labels` label columns (one number for the
    batch, its padding included, as in a relation model's gliner batch; or one per row): every (start, end) of a start
    and an end of the same label, end >= start, with every word between inside, all three probabilities above
    `threshold` (one span per label: the same bounds may repeat), in the order of (start position, label) then (end
    position, label) pairs. probs [B, W, C, 3] -> bounds [B, E, 2] (E an entity bucket; padding (0, 0)), mask
    [B, E]."""
    words, labels = (np.broadcast_to(np.asarray(n, np.int64), len(probs)) for n in (num_words, num_labels))
    found = []
    for row in range(len(probs)):
        above = probs[row, : words[row], : labels[row]] > probs.dtype.type(threshold)
        inside_before = np.pad(np.cumsum(above[..., 2], axis=0), ((1, 0), (0, 0)))  # [W + 1, C]
        s_pos, s_cls = np.nonzero(above[..., 0])
        e_pos, e_cls = np.nonzero(above[..., 1])
        si, ei = np.nonzero((s_cls[:, None] == e_cls[None]) & (s_pos[:, None] <= e_pos[None]))
        first, last, label = s_pos[si], e_pos[ei], s_cls[si]
        full = inside_before[last + 1, label] - inside_before[first, label] == last - first + 1
        found.append(np.stack([first[full], last[full]], axis=-1))
    width = entity_bucket(max((len(f) for f in found), default=0) or 1)
    bounds = np.zeros((len(probs), width, 2), np.int32)
    mask = np.zeros((len(probs), width), bool)
    for row, spans in enumerate(found):
        bounds[row, : len(spans)] = spans
        mask[row, : len(spans)] = True
    return bounds, mask


def decode_token_spans(
    span_probs: np.ndarray,
    bounds: np.ndarray,
    span_mask: np.ndarray,
    num_labels: np.ndarray,
    *,
    threshold: float = 0.5,
    flat_ner: bool = True,
    multi_label: bool = False,
    allowed: np.ndarray | None = None,
) -> list[list[Entity]]:
    """A token model's entities under `represent_spans`, as gliner decodes its span logits: each selected span
    (bounds [B, N, 2], span_mask [B, N]: `select_token_entities`), in order, with each of the row's first
    num_labels[b] labels whose probability span_probs [B, N, C] exceeds `threshold` (compared as Python floats, as
    gliner does) is a candidate scored by that probability (a span selected twice gives its candidates twice); then
    gliner's greedy search. `allowed` [B, W, W] (by start and end word): only those spans (gliner's input_spans)."""
    span_probs = np.asarray(span_probs)
    num_rows, _, labels = span_probs.shape
    num_labels = _row_sizes(num_labels, num_rows)
    hit = (span_probs.astype(np.float64) > threshold) & span_mask[..., None]
    hit &= (np.arange(labels) < num_labels[:, None])[:, None, :]
    if allowed is not None:
        hit &= allowed[np.arange(num_rows)[:, None], bounds[..., 0], bounds[..., 1]][..., None]
    row, span, label = np.nonzero(hit)  # row-major: gliner's order of spans, then labels
    start, end = bounds[row, span, 0].astype(np.int64), bounds[row, span, 1].astype(np.int64)
    words = int(bounds[..., 1].max(initial=0)) + 1
    return _select_rows(row, start, end, label, span_probs[row, span, label], words, num_rows, flat_ner, multi_label)


def decode_relations(
    entities: Sequence[Sequence[Entity]],
    bounds: np.ndarray,
    entity_mask: np.ndarray,
    adjacency: np.ndarray | None,
    pair_probs: np.ndarray,
    num_relations: Sequence[int],
    *,
    adjacency_threshold: float,
    relation_threshold: float,
) -> list[list[Relation]]:
    """Relations of each row, as gliner's relation decoder gives them: the ordered pairs (head i, tail j), i != j, of
    the selected entities (their first and last words `bounds` [B, E, 2], entity_mask [B, E]) whose adjacency
    [B, E, E] exceeds `adjacency_threshold` (every pair when `adjacency` is None: relations_layer "none"), in
    row-major order; for each, every relation class c below
    the row's `num_relations` whose probability pair_probs [B, E, E, R] exceeds `relation_threshold`. Entities are
    referred to by their index in the row's decoded `entities`: the first decoded entity with the selected span's
    bounds; a pair with an entity not among them is skipped."""
    relations: list[list[Relation]] = []
    for row, decoded in enumerate(entities):
        count = int(entity_mask[row].sum())
        first: dict[tuple[int, int], int] = {}
        for i, (start, end, *_) in enumerate(decoded):
            first.setdefault((start, end), i)
        decoded_of = [first.get((start, end)) for start, end in bounds[row, :count].tolist()]
        pairs = ~np.eye(count, dtype=bool)
        if adjacency is not None:
            pairs &= adjacency[row, :count, :count] > adjacency.dtype.type(adjacency_threshold)
        found = []
        for head, tail in zip(*np.nonzero(pairs), strict=True):
            if decoded_of[head] is None or decoded_of[tail] is None:
                continue
            for c, prob in enumerate(pair_probs[row, head, tail, : num_relations[row]].tolist()):
                if prob > relation_threshold:
                    found.append((decoded_of[head], c, decoded_of[tail], prob))
        relations.append(found)
    return relations
