"""GLiNER heads: the markerV0 span representation, the prompt projection, the token-level scorer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gliner_jax.modeling.deberta import linear, rows_matmul
from gliner_jax.modeling.dropout import Dropout


def dense(d_in: int, d_out: int, axes: tuple[str, str], dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.Linear:
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


class ProjectionMLP(nnx.Module):
    """Linear(d_in -> 4 d_out), ReLU, Dropout, Linear(4 d_out -> d_out): gliner's `create_projection_layer`."""

    def __init__(self, d_in: int, d_out: int, dropout: float, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.linear_in = dense(d_in, 4 * d_out, ("embed", "mlp"), dtype, rngs)
        self.dropout = Dropout(dropout, rngs=rngs)
        self.linear_out = dense(4 * d_out, d_out, ("mlp", "embed"), dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_out(self.dropout(jax.nn.relu(self.linear_in(x))))


class SpanMarkerV0(nnx.Module):
    """gliner's markerV0 span head scored against labels: logit(span, label) = out_project(span) . label.

    span = out_project(ReLU([project_start(w_start) || project_end(w_end)])), out_project being
    Linear(2H -> 4H), ReLU, Dropout, Linear(4H -> H). The same numbers (up to float rounding) are computed
    without running the MLP per span: the first Linear splits over the two halves, so it runs per word;
    the second Linear folds into each label (W2 . label, b2 . label). Per span, only an add, a ReLU
    and a 4H x C product remain, instead of 2H x 4H + 4H x H + H x C multiply-adds.
    """

    def __init__(self, hidden_size: int, max_width: int, dropout: float, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.max_width = max_width
        self.project_start = ProjectionMLP(hidden_size, hidden_size, dropout, dtype, rngs)
        self.project_end = ProjectionMLP(hidden_size, hidden_size, dropout, dtype, rngs)
        self.out_project = ProjectionMLP(2 * hidden_size, hidden_size, dropout, dtype, rngs)

    def __call__(self, words: jax.Array, span_idx: jax.Array, labels: jax.Array) -> jax.Array:
        """words [B, W, H], span_idx [B, W*K, 2], labels [B, C, H] -> logits [B, W, K, C]."""
        first, second = self.out_project.linear_in, self.out_project.linear_out
        dtype, hidden = words.dtype, words.shape[-1]
        w1 = first.kernel[...].astype(dtype)  # [2H, 4H]: rows for the start half, then the end half
        start = rows_matmul(jax.nn.relu(self.project_start(words)), w1[:hidden])  # [B, W, 4H]
        end = rows_matmul(jax.nn.relu(self.project_end(words)), w1[hidden:])
        take = jax.vmap(lambda rows, index: rows[index])
        inner = take(start, span_idx[..., 0]) + take(end, span_idx[..., 1]) + first.bias[...].astype(dtype)
        inner = self.out_project.dropout(jax.nn.relu(inner))  # [B, W*K, 4H]
        label_weights = jnp.einsum("fh,bch->bfc", second.kernel[...].astype(dtype), labels)  # [B, 4H, C]
        label_bias = jnp.einsum("h,bch->bc", second.bias[...].astype(dtype), labels)
        logits = jnp.einsum("bnf,bfc->bnc", inner, label_weights) + label_bias[:, None]
        batch, num_spans, num_labels = logits.shape
        return logits.reshape(batch, num_spans // self.max_width, self.max_width, num_labels)


class TokenScorer(nnx.Module):
    """Per (word, label): MLP([t0 || l0 || t1 * l1]) -> (start, end, inside) logits, as gliner's `Scorer`.

    The MLP's first Linear (3H -> 4H) splits over the three blocks: the t0 block runs per word, the l0
    block per label, and only the t1 * l1 block per (word, label) pair; the 3H features are never built.
    """

    def __init__(self, hidden_size: int, dropout: float, dtype: jnp.dtype, rngs: nnx.Rngs):
        h = hidden_size
        self.proj_token = dense(h, 2 * h, ("embed", "mlp"), dtype, rngs)
        self.proj_label = dense(h, 2 * h, ("embed", "mlp"), dtype, rngs)
        self.linear_in = dense(3 * h, 4 * h, ("embed", "mlp"), dtype, rngs)
        self.dropout = Dropout(dropout, rngs=rngs)
        self.linear_out = dense(4 * h, 3, ("mlp", "embed"), dtype, rngs)

    def __call__(self, words: jax.Array, labels: jax.Array) -> jax.Array:
        """words [B, W, H], labels [B, C, H] -> logits [B, W, C, 3]."""
        t0, t1 = jnp.split(self.proj_token(words), 2, axis=-1)  # [B, W, H] each
        l0, l1 = jnp.split(self.proj_label(labels), 2, axis=-1)  # [B, C, H] each
        w_token, w_label, w_pair = jnp.split(self.linear_in.kernel[...].astype(words.dtype), 3, axis=0)
        per_label = rows_matmul(l0, w_label) + self.linear_in.bias[...].astype(words.dtype)  # [B, C, 4H]
        pairs = rows_matmul(t1[:, :, None] * l1[:, None], w_pair)  # [B, W, C, 4H]
        hidden = rows_matmul(t0, w_token)[:, :, None] + per_label[:, None] + pairs
        return self.linear_out(jax.nn.relu(self.dropout(hidden)))
