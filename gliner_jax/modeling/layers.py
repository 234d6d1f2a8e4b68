"""Building blocks shared by the encoders and the GLiNER heads: Linear / Embed / LayerNorm with logical axes,
row-flattened matmuls, torch's default Linear init, activations by their transformers name, segment-aware masks and
positions, and scaled dot-product attention."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from gliner_jax.modeling.axes import ALL_AXES, LAYERS


def logical_axes(*axes: str | None) -> dict:
    """Variable metadata naming each dimension's logical axis (None: never sharded); resolved to a mesh only in
    training. Raises ValueError for a name that `axes.ALL_AXES` does not list."""
    unknown = [axis for axis in axes if axis is not None and axis not in ALL_AXES]
    if unknown:
        raise ValueError(f"unknown logical axes {unknown}; known: {ALL_AXES}")
    return {"out_sharding": axes, "eager_sharding": False}


def rows_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """x [..., d_in] @ w [d_in, d_out] as one 2-D product over rows (the leading axes flattened).

    The same numbers as `x @ w` (bit for bit), but its weight gradient x^T g then contracts a single
    row axis: XLA:CPU reads the output gradient g in order instead of first writing it out transposed
    (with every elementwise op that produces it recomputed in column order), which made a
    [B, W, C, 4H] head's backward pass 1.6x slower.
    """
    return (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[-1])


def rows_dot_general(
    lhs: jax.Array,
    rhs: jax.Array,
    dimension_numbers: tuple,
    precision: jax.lax.PrecisionLike = None,
    out_sharding: None = None,
) -> jax.Array:
    """`nnx.Linear`'s dot_general (last axis of the input against the kernel's first) as `rows_matmul`."""
    if dimension_numbers != (((lhs.ndim - 1,), (0,)), ((), ())) or precision is not None or out_sharding is not None:
        raise ValueError("rows_dot_general contracts lhs's last axis with rhs's first, at default precision only")
    return rows_matmul(lhs, rhs)


def linear(
    d_in: int,
    d_out: int,
    axes: tuple[str, str],
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
    kernel_init: nnx.Initializer,
    bias_init: nnx.Initializer = nnx.initializers.zeros,
    *,
    use_bias: bool = True,
) -> nnx.Linear:
    """An `nnx.Linear` over rows (`rows_dot_general`) whose kernel and bias carry logical axes."""
    return nnx.Linear(
        d_in,
        d_out,
        use_bias=use_bias,
        dtype=dtype,
        kernel_init=kernel_init,
        bias_init=bias_init,
        dot_general=rows_dot_general,
        kernel_metadata=logical_axes(*axes),
        bias_metadata=logical_axes(axes[1]),
        rngs=rngs,
    )


def torch_linear(d_in: int, d_out: int, axes: tuple[str, str], dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.Linear:
    """A Linear with torch's default init (Kaiming-uniform weights, uniform bias) and logical axes."""
    bound = d_in**-0.5
    return linear(
        d_in,
        d_out,
        axes,
        dtype,
        rngs,
        kernel_init=nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
        bias_init=lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound),
    )


def layer_norm(size: int, epsilon: float, dtype: jnp.dtype, rngs: nnx.Rngs, *, use_bias: bool = True) -> nnx.LayerNorm:
    """LayerNorm over the model width whose statistics are E[(x - mean)^2], as torch computes them."""
    return nnx.LayerNorm(
        size,
        epsilon=epsilon,
        dtype=dtype,
        use_bias=use_bias,
        use_fast_variance=False,
        scale_metadata=logical_axes("embed"),
        bias_metadata=logical_axes("embed"),
        rngs=rngs,
    )


def embed(
    rows: int, width: int, axes: tuple[str, str], init: nnx.Initializer, dtype: jnp.dtype, rngs: nnx.Rngs
) -> nnx.Embed:
    """An embedding table [rows, width] with logical axes."""
    return nnx.Embed(rows, width, dtype=dtype, embedding_init=init, embedding_metadata=logical_axes(*axes), rngs=rngs)


def embed_padding_frozen(table: nnx.Embed, ids: jax.Array, padding_id: int | None) -> jax.Array:
    """`table(ids)` whose rows for `padding_id` (None: none) pass no gradient back, as torch's
    `nn.Embedding(padding_idx=...)`: that row stays untrained even where padding states reach the output (gliner's
    `fuse_layers`)."""
    out = table(ids)
    if padding_id is None:
        return out
    return jnp.where((ids == padding_id)[..., None], jax.lax.stop_gradient(out), out)


def segment_pair_mask(attention_mask: jax.Array, query_ids: jax.Array | None = None) -> jax.Array:
    """Which keys each query may attend to, [B, 1, Tq, T]: those of its own segment.

    `attention_mask` [B, T] holds segment ids: 0 for padding, 1, 2, ... for the examples packed into a row, each
    segment contiguous. A plain 0 / 1 mask is the one-segment case: every real token attends to every real token.
    `query_ids` [B, Tq] are the ids of a block of queries (default: every position's, Tq = T).
    """
    queries = attention_mask if query_ids is None else query_ids
    return (queries[:, None, :, None] == attention_mask[:, None, None, :]) & (queries > 0)[:, None, :, None]


def padding_reads_row(pair_mask: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """`segment_pair_mask`'s `pair_mask` [B, 1, T, T] with padding queries allowed every real key of their row, as
    transformers' BERT and ModernBERT attention (a mask over keys only) computes padding positions: the states there
    match theirs (what gliner's `fuse_layers` averages over); real tokens are unchanged."""
    return pair_mask | ((attention_mask == 0)[:, None, :, None] & (attention_mask > 0)[:, None, None, :])


def segment_cumsum(values: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """Running sum of non-negative `values` [B, T] along each row, restarting where each packed segment (id > 1) of
    `attention_mask` starts; the first segment, padding, and a plain 0 / 1 mask count from the row's start."""
    starts = jnp.concatenate(
        [jnp.ones_like(attention_mask[:, :1], bool), attention_mask[:, 1:] != attention_mask[:, :-1]], axis=1
    )
    total = jnp.cumsum(values, axis=1)
    # The sum before each segment's start, carried along it: non-decreasing, so a running max finds it.
    before_start = jax.lax.cummax(jnp.where(starts & (attention_mask > 1), total - values, 0), axis=1)
    return jnp.where(attention_mask > 1, total - before_start, total)


def segment_positions(attention_mask: jax.Array) -> jax.Array:
    """Absolute positions [B, T] that restart at 0 where each packed segment (id > 1) starts; the first segment, and
    a plain 0 / 1 mask, keep the column index, as transformers numbers a row's tokens."""
    return segment_cumsum(jnp.ones_like(attention_mask), attention_mask) - 1


# Activations by their name in transformers' ACT2FN (the ones our encoders implement).
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def split_heads(x: jax.Array, num_heads: int) -> jax.Array:
    """[..., T, heads * dh] -> [..., T, heads, dh]."""
    return x.reshape(*x.shape[:-1], num_heads, -1)


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, pair_mask: jax.Array, dropout: Callable[[jax.Array], jax.Array]
) -> jax.Array:
    """Softmax(q k^T / sqrt(dh)) v over the keys `pair_mask` [B, 1, T, T] allows: q, k, v [B, T, heads, dh] ->
    [B, T, heads * dh]. Scores and softmax in float32; a query that may see no key (padding outside every segment's
    reach) averages all values uniformly, finite, as transformers' additive masks do."""
    scores = jnp.einsum("bqnd,bknd->bnqk", q, k) * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    scores = jnp.where(pair_mask, scores.astype(jnp.float32), jnp.finfo(jnp.float32).min)
    probs = dropout(jax.nn.softmax(scores, axis=-1).astype(v.dtype))
    context = jnp.einsum("bnqk,bknd->bqnd", probs, v)
    return context.reshape(*context.shape[:-2], -1)


def stacked_layers(num_layers: int, make: Callable[[nnx.Rngs], nnx.Module], rngs: nnx.Rngs) -> nnx.Module:
    """`num_layers` modules built by `make`, their parameters stacked on a leading "layers" axis (each drawn from its
    own RNG split), to run in an `nnx.scan`."""

    @nnx.split_rngs(splits=num_layers)
    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: LAYERS})
    def build(rngs: nnx.Rngs) -> nnx.Module:
        return make(rngs)

    return build(rngs)
