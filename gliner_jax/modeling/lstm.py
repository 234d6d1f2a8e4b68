"""Bidirectional LSTM over words, length-aware, zeros at padding (torch `nn.LSTM` on packed sequences)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gliner_jax.modeling.deberta import logical_axes, rows_matmul


class LSTMDirection(nnx.Module):
    """One direction of one layer. Gate blocks are ordered (input, forget, cell, output) as in torch."""

    def __init__(self, input_size: int, hidden_size: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        bound = hidden_size**-0.5  # torch's LSTM init: U(-1/sqrt(h), 1/sqrt(h)) for every tensor
        init = nnx.initializers.uniform(2 * bound)

        def param(shape: tuple[int, ...], *axes: str) -> nnx.Param:
            return nnx.Param(init(rngs.params(), shape) - bound, **logical_axes(*axes))

        self.weight_ih = param((input_size, 4 * hidden_size), "embed", "lstm")
        self.weight_hh = param((hidden_size, 4 * hidden_size), "lstm_hidden", "lstm")
        self.bias_ih = param((4 * hidden_size,), "lstm")
        self.bias_hh = param((4 * hidden_size,), "lstm")
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        """Run left to right over x [B, W, in] from a zero state; returns hidden states [B, W, h]."""
        w_hh = self.weight_hh[...].astype(self.dtype)
        gates_x = rows_matmul(x.astype(self.dtype), self.weight_ih[...].astype(self.dtype))
        gates_x = gates_x + (self.bias_ih[...] + self.bias_hh[...]).astype(self.dtype)

        def step(carry: tuple[jax.Array, jax.Array], gx: jax.Array) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
            h, c = carry
            i, f, g, o = jnp.split(gx + h @ w_hh, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        batch, hidden = x.shape[0], w_hh.shape[0]
        zeros = jnp.zeros((batch, hidden), self.dtype)
        _, hs = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(gates_x, 0, 1))
        return jnp.swapaxes(hs, 0, 1)


class BiLSTMLayer(nnx.Module):
    def __init__(self, input_size: int, hidden_size: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.forward = LSTMDirection(input_size, hidden_size, dtype, rngs)
        self.reverse = LSTMDirection(input_size, hidden_size, dtype, rngs)


class BiLSTM(nnx.Module):
    """`num_layers` bidirectional layers of width `hidden_size // 2` per direction.

    Each sequence's reverse pass starts at its own last word (not at the padded end), and outputs
    at padded positions are exactly zero, as with torch's packed sequences.
    """

    def __init__(self, hidden_size: int, num_layers: int, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        half = hidden_size // 2
        self.layers = nnx.List(
            [BiLSTMLayer(hidden_size if i == 0 else 2 * half, half, dtype, rngs) for i in range(num_layers)]
        )

    def __call__(self, x: jax.Array, valid: jax.Array) -> jax.Array:
        """x [B, W, H], valid [B, W] (a prefix of each row) -> [B, W, H]."""
        positions = jnp.arange(x.shape[1])[None, :]
        lengths = valid.sum(axis=1, keepdims=True)
        # Reverses each row's valid prefix and leaves its padding in place; its own inverse.
        flip = jnp.where(positions < lengths, lengths - 1 - positions, positions)

        def reverse_rows(a: jax.Array) -> jax.Array:
            return jnp.take_along_axis(a, flip[..., None], axis=1)

        keep = valid[..., None]
        for layer in self.layers:
            backward = reverse_rows(layer.reverse(reverse_rows(x)))
            x = jnp.where(keep, jnp.concatenate([layer.forward(x), backward], axis=-1), 0)
        return x
