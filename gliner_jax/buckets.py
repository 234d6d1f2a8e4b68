"""The one static-shape policy: the sizes that batch dimensions are padded up to, so that a jit-compiled model sees
few distinct shapes (each new shape is a new program to compile) while padding stays small.

- tokens T and words W: multiples of 32 up to 512, then multiples of 128 (32, 64, ..., 512, 640, 768, ...);
  padding costs encoder time in proportion, so it stays under 32 tokens up to 512;
- labels C: powers of two and 1.5 times them, from 4 (4, 6, 8, 12, 16, 24, ...): at most a third padding, which
  the token head pays for per (word, label) pair;
- training targets E (entities per row): powers of two from 8; they only feed the loss's scatter, so fewer
  programs matter more than padding there;
- rows B: the caller's batch size; packed training rows (`gliner_jax.packing`): `count_bucket` rows per data
  shard, each row `row_bucket`; examples per packed row (slots S): `count_bucket`. Both counts vary little from
  batch to batch, so a finer grid (at most 1/8 padding past 8) costs few programs;
- packed row length: `length_bucket` of the longest filled row, at most the configured row length unless one
  example is longer.
"""

from __future__ import annotations

# transformers sets model_max_length to int(1e30) when a tokenizer declares none: no limit.
NO_LIMIT = 10**18


def length_bucket(n: int) -> int:
    """Smallest token / word bucket >= n: multiples of 32 up to 512, then multiples of 128."""
    step = 32 if n <= 512 else 128
    return max(32, -(-n // step) * step)


def label_bucket(n: int) -> int:
    """Smallest label bucket >= n: 4, 6, 8, 12, 16, 24, ... (powers of two and 1.5 times them)."""
    n = max(n, 4)
    power = 1 << (n - 1).bit_length()
    return power * 3 // 4 if n <= power * 3 // 4 else power


def entity_bucket(n: int) -> int:
    """Smallest entity-target bucket >= n: a power of two, at least 8."""
    return max(8, 1 << (n - 1).bit_length())


def count_bucket(n: int) -> int:
    """Smallest row / slot count bucket >= n: every count up to 8, then 4 per octave (10, 12, 14, 16, 20, 24, ...)."""
    if n <= 8:
        return max(n, 1)
    step = 1 << ((n - 1).bit_length() - 3)
    return -(-n // step) * step


def row_bucket(n: int, multiple: int = 1) -> int:
    """Packed rows for n rows' worth of examples split over `multiple` data shards: `count_bucket` rows per shard."""
    return count_bucket(-(-n // multiple)) * multiple
