"""GLiNER heads: the prompt projection, the markerV0 span head (with its fused fast path), the token-level scorer.
The other span modes are in `span_modes`."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from gliner_jax.modeling import axes
from gliner_jax.modeling.dropout import Dropout
from gliner_jax.modeling.layers import rows_matmul, torch_linear


class ProjectionMLP(nnx.Module):
    """Linear(d_in -> e d_out), ReLU, Dropout, Linear(e d_out -> d_out): gliner's `create_projection_layer` (e = 4),
    or with `expansion=2` the start / end projections of its `marker` span mode."""

    def __init__(self, d_in: int, d_out: int, dropout: float, dtype: jnp.dtype, rngs: nnx.Rngs, *, expansion: int = 4):
        self.linear_in = torch_linear(d_in, expansion * d_out, (axes.EMBED, axes.MLP), dtype, rngs)
        self.dropout = Dropout(dropout, rngs=rngs)
        self.linear_out = torch_linear(expansion * d_out, d_out, (axes.MLP, axes.EMBED), dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_out(self.dropout(jax.nn.relu(self.linear_in(x))))


def by_row(fn: Callable[..., jax.Array], *rows: jax.Array) -> jax.Array:
    """`jax.vmap(fn)(*rows)`, computed on CPU one row of the leading axis at a time (`lax.map`).

    On XLA:CPU a batch-sized intermediate is written to freshly mapped memory on every call, and its page
    faults cost more than the arithmetic of a cheap per-element function; one row at a time reuses one
    cache-sized buffer (the span scores of a [8, 1920, 3072] batch: 54 -> 12 ms). Other platforms vmap.
    """
    return jax.lax.platform_dependent(*rows, cpu=lambda *r: jax.lax.map(lambda row: fn(*row), r), default=jax.vmap(fn))


def _span_hidden(start: jax.Array, end: jax.Array, span_idx: jax.Array) -> jax.Array:
    """One row's span features ReLU(start[i] + end[j]) for each span (i, j) of span_idx [N, 2]: [N, 4H]."""
    return jax.nn.relu(start[span_idx[:, 0]] + end[span_idx[:, 1]])


def _span_scores(start: jax.Array, end: jax.Array, span_idx: jax.Array, label_weights: jax.Array) -> jax.Array:
    """One row's span scores before the label bias: span features . label_weights [4H, C] -> [N, C]."""
    return _span_hidden(start, end, span_idx) @ label_weights


class SpanMarkerV0(nnx.Module):
    """gliner's markerV0 span head scored against labels: logit(span, label) = out_project(span) . label.

    span = out_project(ReLU([project_start(w_start) || project_end(w_end)])), out_project being
    Linear(2H -> 4H), ReLU, Dropout, Linear(4H -> H). The same numbers (up to float rounding) are computed
    without running the MLP per span: the first Linear splits over the two halves, so it runs per word;
    the second Linear folds into each label (W2 . label, b2 . label). Per span, only an add, a ReLU
    and a 4H x C product remain, instead of 2H x 4H + 4H x H + H x C multiply-adds. In eval mode the span
    scores are computed one batch row at a time on CPU (`by_row`).
    """

    def __init__(self, hidden_size: int, max_width: int, dropout: float, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.max_width = max_width
        self.project_start = ProjectionMLP(hidden_size, hidden_size, dropout, dtype, rngs)
        self.project_end = ProjectionMLP(hidden_size, hidden_size, dropout, dtype, rngs)
        self.out_project = ProjectionMLP(2 * hidden_size, hidden_size, dropout, dtype, rngs)

    def fold_labels(self, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The labels [..., C, H] folded into the last Linear: its weights W2 . label [..., 4H, C] and biases
        b2 . label [..., C]. Labels shared by several rows (a bi-encoder's label table) are folded once."""
        second = self.out_project.linear_out
        weights = jnp.einsum("fh,...ch->...fc", second.kernel[...].astype(labels.dtype), labels)
        return weights, jnp.einsum("h,...ch->...c", second.bias[...].astype(labels.dtype), labels)

    def endpoints(self, words: jax.Array, span_idx: jax.Array) -> jax.Array:
        """The representations [B, N, H] of any spans span_idx [B, N, 2] (first and last word), the MLP run per span
        (gliner's markerV0 before its reshape, and its TokenMarker)."""
        start = jnp.take_along_axis(self.project_start(words), span_idx[..., :1], axis=1)  # [B, N, H]
        end = jnp.take_along_axis(self.project_end(words), span_idx[..., 1:], axis=1)
        return self.out_project(jax.nn.relu(jnp.concatenate([start, end], axis=-1)))

    def spans(self, words: jax.Array, span_idx: jax.Array, words_valid: jax.Array | None = None) -> jax.Array:
        """The span representations [B, W, K, H] themselves (the MLP run per span), for what reads them beyond the
        label scores (relation extraction)."""
        out = self.endpoints(words, span_idx)
        batch, num_spans, hidden = out.shape
        return out.reshape(batch, num_spans // self.max_width, self.max_width, hidden)

    def __call__(
        self,
        words: jax.Array,
        span_idx: jax.Array,
        labels: jax.Array | None = None,
        words_valid: jax.Array | None = None,
        *,
        folded: tuple[jax.Array, jax.Array] | None = None,
    ) -> jax.Array:
        """words [B, W, H], span_idx [B, W*K, 2], and labels [B, C, H] or their `fold_labels` ([B, 4H, C], [B, C])
        -> logits [B, W, K, C] (`words_valid`: unused here, taken as every span mode takes it)."""
        first = self.out_project.linear_in
        dtype, hidden = words.dtype, words.shape[-1]
        w1 = first.kernel[...].astype(dtype)  # [2H, 4H]: rows for the start half, then the end half
        start = rows_matmul(jax.nn.relu(self.project_start(words)), w1[:hidden])  # [B, W, 4H]
        end = rows_matmul(jax.nn.relu(self.project_end(words)), w1[hidden:])
        start = start + first.bias[...].astype(dtype)
        label_weights, label_bias = self.fold_labels(labels) if folded is None else folded  # [B, 4H, C], [B, C]
        dropout = self.out_project.dropout
        if dropout.deterministic:
            logits = by_row(_span_scores, start, end, span_idx, label_weights)
        else:  # the dropout mask is drawn for the whole batch at once
            inner = dropout(jax.vmap(_span_hidden)(start, end, span_idx))  # [B, W*K, 4H]
            logits = jnp.einsum("bnf,bfc->bnc", inner, label_weights)
        logits = logits + label_bias[:, None]
        batch, num_spans, num_labels = logits.shape
        return logits.reshape(batch, num_spans // self.max_width, self.max_width, num_labels)


class TokenScorer(nnx.Module):
    """Per (word, label): MLP([t0 || l0 || t1 * l1]) -> (start, end, inside) logits, as gliner's `Scorer`.

    The MLP's first Linear (3H -> 4H) splits over the three blocks: the t0 block runs per word, the l0
    block per label, and only the t1 * l1 block per (word, label) pair; the 3H features are never built.
    """

    def __init__(self, hidden_size: int, dropout: float, dtype: jnp.dtype, rngs: nnx.Rngs):
        h = hidden_size
        self.proj_token = torch_linear(h, 2 * h, (axes.EMBED, axes.MLP), dtype, rngs)
        self.proj_label = torch_linear(h, 2 * h, (axes.EMBED, axes.MLP), dtype, rngs)
        self.linear_in = torch_linear(3 * h, 4 * h, (axes.EMBED, axes.MLP), dtype, rngs)
        self.dropout = Dropout(dropout, rngs=rngs)
        self.linear_out = torch_linear(4 * h, 3, (axes.MLP, axes.EMBED), dtype, rngs)

    def __call__(self, words: jax.Array, labels: jax.Array) -> jax.Array:
        """words [B, W, H], labels [B, C, H] -> logits [B, W, C, 3]."""
        t0, t1 = jnp.split(self.proj_token(words), 2, axis=-1)  # [B, W, H] each
        l0, l1 = jnp.split(self.proj_label(labels), 2, axis=-1)  # [B, C, H] each
        w_token, w_label, w_pair = jnp.split(self.linear_in.kernel[...].astype(words.dtype), 3, axis=0)
        per_label = rows_matmul(l0, w_label) + self.linear_in.bias[...].astype(words.dtype)  # [B, C, 4H]
        pairs = rows_matmul(t1[:, :, None] * l1[:, None], w_pair)  # [B, W, C, 4H]
        hidden = rows_matmul(t0, w_token)[:, :, None] + per_label[:, None] + pairs
        return self.linear_out(jax.nn.relu(self.dropout(hidden)))
