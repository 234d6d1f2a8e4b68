"""Packing: several examples per encoder row, so that the encoder spends less time on padding.

A collated batch of one example per row (`Processor.collate_*`, training `collate`) is laid out again in R rows of
T tokens. Each example keeps its whole tokenization (its own label prompt and words, special tokens included) as
one contiguous segment of a row; `attention_mask` holds the segment ids (1, 2, ... in each row, 0 for padding),
which the encoders read as block-diagonal attention with positions restarting in each segment, so every segment is
encoded exactly as its example alone. Slot s of row r is segment s + 1: every per-example array gains a slot axis
after the row axis (words_valid [R, S, W], labels_valid [R, S, C], span_idx [R, S, W*K, 2], span_mask [R, S, W*K],
the training targets entities [R, S, E, 3]); unused slots are neutral padding. `GLiNERModel` takes such a batch
and returns per-example logits [R, S, ...]; the training loss reads them as R * S example rows. A decoder model's
arrays over its gold spans (`SPAN_KEYS`) stay as they are, each span naming its example's slot r * S + s.

Shapes come from `gliner_jax.buckets`: R from `row_bucket` (a multiple of the data shards, so that each shard gets
whole rows and the slot axis never crosses a shard), S from `count_bucket`, T the `length_bucket` of the fullest
row. W, C and E stay those of the unpacked batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from gliner_jax.buckets import NO_LIMIT, count_bucket, length_bucket, row_bucket

TOKEN_KEYS = ("input_ids", "attention_mask", "words_mask")  # [rows, tokens]; every other array is per example
# A decoder model's arrays over the batch's gold spans, not its examples: kept as they are, each span's example (the
# first column of `decoder_spans`) renumbered as its slot r * S + s.
SPAN_KEYS = ("decoder_spans", "decoder_labels_ids", "decoder_labels_mask", "decoder_labels")


def _place(
    order: Sequence[int], lengths: Sequence[int], rows: int, capacity: int, slots: int, *, spread: bool
) -> list[list[int]] | None:
    """Put the examples of `order` into `rows` rows of at most `capacity` tokens and `slots` examples each: each
    into the emptiest row with room (`spread`) or the first one; None if one does not fit."""
    fill, members = [0] * rows, [[] for _ in range(rows)]
    for index in order:
        open_rows = [r for r in range(rows) if len(members[r]) < slots and fill[r] + lengths[index] <= capacity]
        if not open_rows:
            return None
        row = min(open_rows, key=lambda r: fill[r]) if spread else open_rows[0]
        fill[row] += lengths[index]
        members[row].append(index)
    return members


def plan_packed_rows(lengths: Sequence[int], capacity: int, *, multiple: int = 1) -> list[list[int]]:
    """Which examples (indices into `lengths`, token counts) share each row: `row_bucket` of the rows that
    first-fit decreasing needs, a multiple of `multiple`; examples spread over them so that the fullest row (the
    row length T) and the most examples in a row (the slots S) stay small. Examples of length 0 are left out.
    Each row lists its examples in index order. Raises ValueError for an example longer than `capacity`."""
    lengths = [int(n) for n in lengths]
    if max(lengths, default=0) > capacity:
        raise ValueError(f"an example of {max(lengths)} tokens does not fit in rows of {capacity} tokens")
    order = sorted((i for i, n in enumerate(lengths) if n > 0), key=lambda i: (-lengths[i], i))
    needed = -(-sum(lengths) // capacity)  # no fewer rows hold the tokens
    while _place(order, lengths, needed, capacity, len(order), spread=False) is None:
        needed += 1
    rows = row_bucket(needed, multiple)
    for slots in range(-(-len(order) // rows), len(order)):
        for spread in (True, False):
            members = _place(order, lengths, rows, capacity, slots, spread=spread)
            if members is not None:
                return [sorted(row) for row in members]
    members = _place(order, lengths, rows, capacity, len(order), spread=False)  # fits: rows >= `needed`
    return [sorted(row) for row in members]


def pack(
    arrays: Mapping[str, np.ndarray],
    *,
    row_length: int,
    pad_id: int,
    multiple: int = 1,
    max_tokens: int | None = None,
) -> dict[str, np.ndarray]:
    """The packed layout (module docstring) of a collated batch of one example per row.

    Rows hold up to `row_length` tokens (more if one example alone is longer) and never more than `max_tokens` (an
    encoder with absolute positions; each example's own length is checked by the processor); rows without tokens
    are dropped; the number of rows is a multiple of `multiple`.
    """
    mask = np.asarray(arrays["attention_mask"]) > 0
    lengths = mask.sum(axis=1)
    limit = max_tokens or NO_LIMIT
    capacity = max(min(row_length, limit), int(lengths.max(initial=0)))
    rows = plan_packed_rows(lengths, capacity, multiple=multiple)
    fullest = max((int(lengths[row].sum()) for row in rows), default=0)
    num_tokens = min(length_bucket(fullest), max(limit, fullest))
    num_slots = count_bucket(max(map(len, rows)))
    packed = {
        "input_ids": np.full((len(rows), num_tokens), pad_id, np.int32),
        "attention_mask": np.zeros((len(rows), num_tokens), np.int32),
        "words_mask": np.zeros((len(rows), num_tokens), np.int32),
    }
    slot_of = np.zeros(len(lengths), np.int64)
    for name, value in arrays.items():
        if name in SPAN_KEYS:
            packed[name] = np.array(value)
        elif name not in TOKEN_KEYS:
            packed[name] = np.zeros((len(rows), num_slots, *value.shape[1:]), value.dtype)
    for r, row in enumerate(rows):
        offset = 0
        for s, index in enumerate(row):
            columns = np.flatnonzero(mask[index])
            segment = slice(offset, offset + len(columns))
            packed["input_ids"][r, segment] = arrays["input_ids"][index, columns]
            packed["attention_mask"][r, segment] = s + 1
            packed["words_mask"][r, segment] = arrays["words_mask"][index, columns]
            for name, value in arrays.items():
                if name not in TOKEN_KEYS and name not in SPAN_KEYS:
                    packed[name][r, s] = value[index]
            slot_of[index] = r * num_slots + s
            offset += len(columns)
    if "decoder_spans" in packed:
        packed["decoder_spans"][:, 0] = slot_of[packed["decoder_spans"][:, 0]]
    return packed
