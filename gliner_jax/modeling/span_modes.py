"""Every `span_mode` of gliner 0.2.29's span representation layer (`SpanRepLayer`), scored against labels.

A span mode maps word states [B, W, H] (zero past each row's length) to one representation per span, the span
(i, i + k) at [:, i, k] of [B, W, K, H], and the logit of (span, label) is their dot product (gliner's einsum
"BLKD,BCD->BLKC" with the projected labels). `markerV0`, the default, lives in `heads` with its fused fast path.

Two modes read beyond a row: `markerV1` appends the mean of the batch's word states (over the padded width: a
row's own padding counts) and `markerV2` the projected state of the batch's last word slot. gliner pads words to
the longest row of its batch; here W may be padded further (buckets), so both take that width from `words_valid`
(the longest row's length), which gives gliner's numbers for gliner's batches whatever W is.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from gliner_jax.modeling import axes
from gliner_jax.modeling.heads import ProjectionMLP, SpanMarkerV0
from gliner_jax.modeling.layers import logical_axes, torch_linear

CAT_QUERY_SIZE = 128  # the width of `cat`'s learned per-width queries, fixed in gliner


def batch_width(words: jax.Array, words_valid: jax.Array | None) -> jax.Array:
    """The word width gliner's batch would have: the longest row's length (W when `words_valid` is None)."""
    return jnp.asarray(words.shape[1]) if words_valid is None else words_valid.sum(axis=1).max()


class SpanRepresentation(nnx.Module):
    """A span mode: `spans` gives the span representations; calling it scores them against the labels."""

    def spans(self, words: jax.Array, span_idx: jax.Array, words_valid: jax.Array | None) -> jax.Array:
        """words [B, W, H], span_idx [B, W*K, 2], words_valid [B, W] -> span representations [B, W, K, H]."""
        raise NotImplementedError

    def __call__(
        self, words: jax.Array, span_idx: jax.Array, labels: jax.Array, words_valid: jax.Array | None = None
    ) -> jax.Array:
        """Logits [B, W, K, C] of every span against labels [B, C, H]."""
        return jnp.einsum("bwkh,bch->bwkc", self.spans(words, span_idx, words_valid), labels)


class EndpointSpans(SpanRepresentation):
    """The marker family: out_project(ReLU([project_start(w_start) || project_end(w_end) || context])), where
    `context` (a [B, H] vector per row, or nothing) is what each subclass adds."""

    def __init__(self, max_width: int, project_start: nnx.Module, project_end: nnx.Module, out_project: nnx.Module):
        self.max_width = max_width
        self.project_start = project_start
        self.project_end = project_end
        self.out_project = out_project

    def context(self, words: jax.Array, words_valid: jax.Array | None) -> jax.Array | None:
        return None

    def spans(self, words: jax.Array, span_idx: jax.Array, words_valid: jax.Array | None) -> jax.Array:
        start = jnp.take_along_axis(self.project_start(words), span_idx[..., :1], axis=1)  # [B, W*K, H]
        end = jnp.take_along_axis(self.project_end(words), span_idx[..., 1:], axis=1)
        parts = [start, end]
        context = self.context(words, words_valid)
        if context is not None:
            parts.append(jnp.broadcast_to(context[:, None], start.shape))
        out = self.out_project(jax.nn.relu(jnp.concatenate(parts, axis=-1)))
        batch, num_spans, hidden = out.shape
        return out.reshape(batch, num_spans // self.max_width, self.max_width, hidden)


class SpanMarker(EndpointSpans):
    """`marker`: start / end projections of width 2H (Linear, ReLU, Dropout, Linear) and one Linear(2H -> H)."""

    def __init__(self, hidden: int, max_width: int, dropout: float, dtype: jnp.dtype, rngs: nnx.Rngs):
        mlp = functools.partial(ProjectionMLP, hidden, hidden, dropout, dtype, rngs, expansion=2)
        out_project = torch_linear(2 * hidden, hidden, (axes.MLP, axes.EMBED), dtype, rngs)
        super().__init__(max_width, mlp(), mlp(), out_project)


class SpanMarkerV1(EndpointSpans):
    """`markerV1`: the context is the mean of the batch's raw word states over its padded width.

    `project_first` is gliner's parameter that its forward pass never applies; it is kept so checkpoints match.
    """

    def __init__(self, hidden: int, max_width: int, dropout: float, dtype: jnp.dtype, rngs: nnx.Rngs):
        mlp = functools.partial(ProjectionMLP, dropout=dropout, dtype=dtype, rngs=rngs)
        super().__init__(max_width, mlp(hidden, hidden), mlp(hidden, hidden), mlp(3 * hidden, hidden))
        self.project_first = mlp(hidden, hidden)

    def context(self, words: jax.Array, words_valid: jax.Array | None) -> jax.Array:
        return words.sum(axis=1) / batch_width(words, words_valid).astype(words.dtype)


class SpanMarkerV2(EndpointSpans):
    """`markerV2`: the context is project_context of the batch's last word slot (a padding slot, so zeros, for
    every row shorter than the longest). With `row_context` (gliner's streaming model, which gives it each row's word
    mask) it is each row's own last word instead (zeros for a row without words)."""

    def __init__(self, hidden: int, max_width: int, dropout: float, dtype: jnp.dtype, rngs: nnx.Rngs):
        mlp = functools.partial(ProjectionMLP, dropout=dropout, dtype=dtype, rngs=rngs)
        super().__init__(max_width, mlp(hidden, hidden), mlp(hidden, hidden), mlp(3 * hidden, hidden))
        self.project_context = mlp(hidden, hidden)
        self.row_context = False

    def context(self, words: jax.Array, words_valid: jax.Array | None) -> jax.Array:
        if self.row_context and words_valid is not None:
            count = words_valid.sum(axis=1)
            last = jnp.take_along_axis(words, jnp.maximum(count - 1, 0)[:, None, None], axis=1)[:, 0]
            return self.project_context(last) * (count > 0)[:, None].astype(words.dtype)
        last = jnp.maximum(batch_width(words, words_valid) - 1, 0)
        return self.project_context(jax.lax.dynamic_index_in_dim(words, last, axis=1, keepdims=False))


class SpanQuery(SpanRepresentation):
    """`query`: span (i, i + k) = ReLU(Linear(w_i * query_seg[:, k])); the span's end is not read."""

    def __init__(self, hidden: int, max_width: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        init = nnx.initializers.uniform(2.0)
        self.query_seg = nnx.Param(init(rngs.params(), (hidden, max_width)) - 1.0, **logical_axes(axes.EMBED, None))
        self.project = torch_linear(hidden, hidden, (axes.EMBED, axes.MLP), dtype, rngs)

    def spans(self, words: jax.Array, span_idx: jax.Array, words_valid: jax.Array | None) -> jax.Array:
        queries = self.query_seg[...].T.astype(words.dtype)  # [K, H]
        return jax.nn.relu(self.project(words[:, :, None, :] * queries))


class SpanMLP(SpanRepresentation):
    """`mlp`: span (i, i + k) = ReLU of features k*H:(k+1)*H of Linear(H -> K*H)(w_i)."""

    def __init__(self, hidden: int, max_width: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.max_width = max_width
        self.mlp = torch_linear(hidden, max_width * hidden, (axes.EMBED, axes.MLP), dtype, rngs)

    def spans(self, words: jax.Array, span_idx: jax.Array, words_valid: jax.Array | None) -> jax.Array:
        batch, width, hidden = words.shape
        return jax.nn.relu(self.mlp(words).reshape(batch, width, self.max_width, hidden))


class SpanCat(SpanRepresentation):
    """`cat`: span (i, i + k) = ReLU(Linear([w_i || q_k])), q_k being row k of `query_seg` [128, K] read in memory
    order as [K, 128] (gliner's `view`, not a transpose)."""

    def __init__(self, hidden: int, max_width: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        normal = nnx.initializers.normal(1.0)
        self.query_seg = nnx.Param(normal(rngs.params(), (CAT_QUERY_SIZE, max_width)), **logical_axes(None, None))
        self.project = torch_linear(hidden + CAT_QUERY_SIZE, hidden, (axes.EMBED, axes.MLP), dtype, rngs)

    def spans(self, words: jax.Array, span_idx: jax.Array, words_valid: jax.Array | None) -> jax.Array:
        batch, width, hidden = words.shape
        queries = self.query_seg[...].astype(words.dtype).reshape(-1, CAT_QUERY_SIZE)  # [K, 128]
        shape = (batch, width, len(queries))
        both = jnp.concatenate(
            [
                jnp.broadcast_to(words[:, :, None], (*shape, hidden)),
                jnp.broadcast_to(queries, (*shape, CAT_QUERY_SIZE)),
            ],
            axis=-1,
        )
        return jax.nn.relu(self.project(both))


def shifted_words(words: jax.Array, max_width: int) -> jax.Array:
    """[K, B, W, H]: entry j holds w_{i+j} at word i, zeros past the padded width (gliner's right padding)."""
    width = words.shape[1]
    padded = jnp.pad(words, ((0, 0), (0, max_width - 1), (0, 0)))
    return jnp.stack([padded[:, j : j + width] for j in range(max_width)])


def _conv_param(rngs: nnx.Rngs, shape: tuple[int, ...], fan_in: int, dtype: jnp.dtype) -> nnx.Param:
    """A conv weight [k, H_in, H_out] (torch's [H_out, H_in, k] transposed) with torch's Kaiming-uniform (ReLU)
    init, or a bias [H_out] with torch's uniform bias init."""
    bound = (6.0 / fan_in) ** 0.5 if len(shape) == 3 else fan_in**-0.5
    names = (None, axes.EMBED, axes.MLP) if len(shape) == 3 else (axes.MLP,)
    return nnx.Param(jax.random.uniform(rngs.params(), shape, dtype, -bound, bound), **logical_axes(*names))


class ConvBlock(nnx.Module):
    """One torch Conv1d(H, H, kernel_size) over words: out_i = sum_j kernel[j] . w_{i+j} + bias."""

    def __init__(self, hidden: int, kernel_size: int, rngs: nnx.Rngs):
        fan_in = hidden * kernel_size
        self.kernel = _conv_param(rngs, (kernel_size, hidden, hidden), fan_in, jnp.float32)
        self.bias = _conv_param(rngs, (hidden,), fan_in, jnp.float32)

    def __call__(self, shifted: jax.Array) -> jax.Array:
        """shifted [k, B, W, H] (`shifted_words`, first k entries) -> [B, W, H]."""
        kernel = self.kernel[...].astype(shifted.dtype)
        return jnp.einsum("jbwh,jho->bwo", shifted, kernel) + self.bias[...].astype(shifted.dtype)


class SpanConv(SpanRepresentation):
    """`conv_conv` / `conv_max` / `conv_mean` / `conv_sum`: width 0 is the word itself, width k the Conv1d of
    kernel k + 1 (`conv_conv`, its own weights per width), or the max / mean / sum of w_i .. w_{i+k} (padding zeros
    counted); then Linear(ReLU(.)). The sum is the mean times k + 1, as gliner computes it."""

    POOLS = ("conv", "max", "mean", "sum")

    def __init__(self, hidden: int, max_width: int, pool: str, dtype: jnp.dtype, rngs: nnx.Rngs):
        if pool not in self.POOLS:
            raise ValueError(f"unknown convolution {pool!r}; known: {self.POOLS}")
        self.max_width = max_width
        self.pool = pool
        kernels = range(2, max_width + 1) if pool == "conv" else ()
        self.convs = nnx.List([ConvBlock(hidden, k, rngs) for k in kernels])
        self.project = torch_linear(hidden, hidden, (axes.EMBED, axes.MLP), dtype, rngs)

    def spans(self, words: jax.Array, span_idx: jax.Array, words_valid: jax.Array | None) -> jax.Array:
        shifted = shifted_words(words, self.max_width)
        if self.pool == "conv":
            widths = jnp.stack([words] + [conv(shifted[: i + 2]) for i, conv in enumerate(self.convs)])
        elif self.pool == "max":
            widths = jax.lax.cummax(shifted, axis=0)
        else:
            counts = jnp.arange(1, self.max_width + 1, dtype=words.dtype)[:, None, None, None]
            widths = jnp.cumsum(shifted, axis=0) / counts
            widths = widths * counts if self.pool == "sum" else widths
        return self.project(jax.nn.relu(jnp.moveaxis(widths, 0, 2)))


class ConvShare(SpanRepresentation):
    """`conv_share`: width k = sum_{j <= k} conv_weight[j] . w_{i+j} (one weight shared by all widths, no bias),
    then Linear(ReLU(.)). gliner spells the parameter `conv_weigth`."""

    def __init__(self, hidden: int, max_width: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.conv_weight = _conv_param(rngs, (max_width, hidden, hidden), hidden * max_width, jnp.float32)
        self.project = torch_linear(hidden, hidden, (axes.EMBED, axes.MLP), dtype, rngs)

    def spans(self, words: jax.Array, span_idx: jax.Array, words_valid: jax.Array | None) -> jax.Array:
        shifted = shifted_words(words, self.conv_weight.shape[0])
        terms = jnp.einsum("jbwh,jho->jbwo", shifted, self.conv_weight[...].astype(words.dtype))
        return self.project(jax.nn.relu(jnp.moveaxis(jnp.cumsum(terms, axis=0), 0, 2)))


SpanBuilder = Callable[[int, int, float, jnp.dtype, nnx.Rngs], nnx.Module]

SPAN_MODES: dict[str, SpanBuilder] = {
    "marker": SpanMarker,
    "markerV0": SpanMarkerV0,
    "markerV1": SpanMarkerV1,
    "markerV2": SpanMarkerV2,
    "query": lambda h, k, dropout, dtype, rngs: SpanQuery(h, k, dtype, rngs),
    "mlp": lambda h, k, dropout, dtype, rngs: SpanMLP(h, k, dtype, rngs),
    "cat": lambda h, k, dropout, dtype, rngs: SpanCat(h, k, dtype, rngs),
    **{
        f"conv_{pool}": lambda h, k, dropout, dtype, rngs, pool=pool: SpanConv(h, k, pool, dtype, rngs)
        for pool in SpanConv.POOLS
    },
    "conv_share": lambda h, k, dropout, dtype, rngs: ConvShare(h, k, dtype, rngs),
}
"""span_mode -> builder(hidden_size, max_width, dropout, dtype, rngs); gliner gives dropout to the marker modes."""
BATCH_DEPENDENT_MODES = ("markerV1", "markerV2")  # their spans read the batch's padded width


def build_span_mode(
    span_mode: str, hidden: int, max_width: int, dropout: float, dtype: jnp.dtype, rngs: nnx.Rngs
) -> nnx.Module:
    """The span mode module of `span_mode` (a key of SPAN_MODES), called as (words, span_idx, labels, words_valid)."""
    if span_mode not in SPAN_MODES:
        raise ValueError(f"unknown span_mode {span_mode!r}; known: {list(SPAN_MODES)}")
    return SPAN_MODES[span_mode](hidden, max_width, dropout, dtype, rngs)
