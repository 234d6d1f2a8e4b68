"""Bidirectional (or one-way) LSTM over words, length-aware, zeros at padding (torch `nn.LSTM` on packed sequences)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gliner_jax.modeling import axes
from gliner_jax.modeling.dropout import Dropout
from gliner_jax.modeling.layers import logical_axes, rows_matmul


def _cell(
    gates_x: jax.Array, h: jax.Array, c: jax.Array, w_hh: jax.Array
) -> tuple[jax.Array, jax.Array, tuple[jax.Array, ...]]:
    """One LSTM step: the new (h, c) and the activated gates (input, forget, cell, output)."""
    i, f, g, o = jnp.split(gates_x + h @ w_hh, 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = f * c + i * g
    return o * jnp.tanh(c), c, (i, f, g, o)


def _run(gates_x: jax.Array, w_hh: jax.Array) -> tuple[jax.Array, jax.Array, tuple[jax.Array, ...]]:
    """Scan `_cell` over gates_x [W, B, 4h] from a zero state: every step's h, c and gates."""
    zeros = jnp.zeros((gates_x.shape[1], w_hh.shape[0]), gates_x.dtype)

    def step(carry: tuple[jax.Array, jax.Array], gx: jax.Array) -> tuple[tuple[jax.Array, jax.Array], tuple]:
        h, c, gates = _cell(gx, *carry, w_hh)
        return (h, c), (h, c, gates)

    return jax.lax.scan(step, (zeros, zeros), gates_x)[1]


@jax.custom_vjp
def recurrence(gates_x: jax.Array, w_hh: jax.Array) -> jax.Array:
    """Hidden states [W, B, h] of an LSTM whose input projections (biases included) are gates_x [W, B, 4h].

    Its backward pass is written out: autodiff of the scan would add each step's w_hh gradient (an outer
    product of 8 rows into a 2.4 MB carry, at h 384) inside the loop; here the reverse scan only emits each
    step's gate gradients, and w_hh's gradient is one product after it (fwd + bwd 80 -> 41 ms per direction
    at W 128, B 8 on CPU; gradients equal up to float rounding).
    """
    return _run(gates_x, w_hh)[0]


def _recurrence_fwd(gates_x: jax.Array, w_hh: jax.Array) -> tuple[jax.Array, tuple]:
    hs, cs, gates = _run(gates_x, w_hh)
    return hs, (hs, cs, gates, w_hh)


def _recurrence_bwd(residuals: tuple, d_hs: jax.Array) -> tuple[jax.Array, jax.Array]:
    hs, cs, gates, w_hh = residuals
    zeros = jnp.zeros_like(hs[:1])
    h_prev, c_prev = jnp.concatenate([zeros, hs[:-1]]), jnp.concatenate([zeros, cs[:-1]])
    w_hh_t = w_hh.T

    def step(carry: tuple[jax.Array, jax.Array], xs: tuple) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        dh_next, dc_next = carry
        dh_out, c, c_before, (i, f, g, o) = xs
        dh = dh_out + dh_next
        tanh_c = jnp.tanh(c)
        dc = dc_next + dh * o * (1 - tanh_c * tanh_c)
        d_gates = jnp.concatenate(
            [dc * g * i * (1 - i), dc * c_before * f * (1 - f), dc * i * (1 - g * g), dh * tanh_c * o * (1 - o)],
            axis=-1,
        )
        return (d_gates @ w_hh_t, dc * f), d_gates

    _, d_gates = jax.lax.scan(step, (zeros[0], zeros[0]), (d_hs, cs, c_prev, gates), reverse=True)
    d_w_hh = h_prev.reshape(-1, h_prev.shape[-1]).T @ d_gates.reshape(-1, d_gates.shape[-1])  # sum over W and B
    return d_gates, d_w_hh


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


class LSTMDirection(nnx.Module):
    """One direction of one layer. Gate blocks are ordered (input, forget, cell, output) as in torch."""

    def __init__(self, input_size: int, hidden_size: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        bound = hidden_size**-0.5  # torch's LSTM init: U(-1/sqrt(h), 1/sqrt(h)) for every tensor
        init = nnx.initializers.uniform(2 * bound)

        def param(shape: tuple[int, ...], *names: str) -> nnx.Param:
            return nnx.Param(init(rngs.params(), shape) - bound, **logical_axes(*names))

        self.weight_ih = param((input_size, 4 * hidden_size), axes.EMBED, axes.LSTM)
        self.weight_hh = param((hidden_size, 4 * hidden_size), axes.LSTM_HIDDEN, axes.LSTM)
        self.bias_ih = param((4 * hidden_size,), axes.LSTM)
        self.bias_hh = param((4 * hidden_size,), axes.LSTM)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        """Run left to right over x [B, W, in] from a zero state; returns hidden states [B, W, h]."""
        w_hh = self.weight_hh[...].astype(self.dtype)
        gates_x = rows_matmul(x.astype(self.dtype), self.weight_ih[...].astype(self.dtype))
        gates_x = gates_x + (self.bias_ih[...] + self.bias_hh[...]).astype(self.dtype)
        return jnp.swapaxes(recurrence(jnp.swapaxes(gates_x, 0, 1), w_hh), 0, 1)


class BiLSTMLayer(nnx.Module):
    def __init__(
        self, input_size: int, hidden_size: int, dtype: jnp.dtype, rngs: nnx.Rngs, *, bidirectional: bool = True
    ):
        self.forward = LSTMDirection(input_size, hidden_size, dtype, rngs)
        self.reverse = LSTMDirection(input_size, hidden_size, dtype, rngs) if bidirectional else None


class BiLSTM(nnx.Module):
    """`num_layers` bidirectional layers of width `hidden_size // 2` per direction (`bidirectional=False`: one
    direction `hidden_size` wide), with `dropout` on the output of every layer but the last (training), as torch's
    `nn.LSTM`.

    Each sequence's reverse pass starts at its own last word (not at the padded end), and outputs
    at padded positions are exactly zero, as with torch's packed sequences.
    """

    def __init__(
        self,
        hidden_size: int,
        num_layers: int,
        *,
        bidirectional: bool = True,
        dropout: float = 0.0,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        width = hidden_size // 2 if bidirectional else hidden_size
        output = 2 * width if bidirectional else width
        self.layers = nnx.List(
            [
                BiLSTMLayer(hidden_size if i == 0 else output, width, dtype, rngs, bidirectional=bidirectional)
                for i in range(num_layers)
            ]
        )
        self.dropout = Dropout(dropout, rngs=rngs) if dropout and num_layers > 1 else None

    def __call__(self, x: jax.Array, valid: jax.Array) -> jax.Array:
        """x [B, W, H], valid [B, W] (a prefix of each row) -> [B, W, H]."""
        positions = jnp.arange(x.shape[1])[None, :]
        lengths = valid.sum(axis=1, keepdims=True)
        # Reverses each row's valid prefix and leaves its padding in place; its own inverse.
        flip = jnp.where(positions < lengths, lengths - 1 - positions, positions)

        def reverse_rows(a: jax.Array) -> jax.Array:
            return jnp.take_along_axis(a, flip[..., None], axis=1)

        keep = valid[..., None]
        for i, layer in enumerate(self.layers):
            if i and self.dropout is not None:
                x = self.dropout(x)
            out = layer.forward(x)
            if layer.reverse is not None:
                out = jnp.concatenate([out, reverse_rows(layer.reverse(reverse_rows(x)))], axis=-1)
            x = jnp.where(keep, out, 0)
        return x
