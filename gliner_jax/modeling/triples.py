"""gliner 0.2.29's `triples_layer` modes (`TriplesScoreLayer`): knowledge-graph scores of (head, relation, tail)
triples, used by a relation model in place of its pair projection.

Each mode maps h, r, t [..., D] to scores [...]. gliner builds every mode 768 wide whatever `hidden_size` is (the
layer's default `dim`), so the modes with parameters run only on 768-wide models, as in gliner. The attribute
`interaction` and its children are named like gliner's modules (`triples_score_layer.interaction.<name>`).

TuckER alone holds state that is not a parameter: the running statistics of its two BatchNorms (`nnx.BatchStat`),
which training updates from the rows gliner's flattened layer sees (`GlinerRows`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gliner_jax.modeling import axes
from gliner_jax.modeling.dropout import Dropout
from gliner_jax.modeling.layers import logical_axes, torch_linear

TRIPLES_WIDTH = 768  # the `dim` gliner builds every triples layer with
NORM_CLAMP = 10.0  # gliner's clamp of the distance of the norm-based modes
BN_EPS, BN_MOMENTUM = 1e-5, 0.1  # torch's BatchNorm1d defaults, as gliner's TuckER builds them
TUCKER_DROPOUT = 0.2  # gliner's TuckER dropout rate (its input and core dropout), whatever the config's `dropout`


def _linear(d_in: int, d_out: int, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return torch_linear(d_in, d_out, (axes.EMBED, axes.HIDDEN), dtype, rngs)


def _chunks(x: jax.Array, parts: int) -> list[jax.Array]:
    return jnp.split(x, parts, axis=-1)


class NormBased(nnx.Module):
    """-min(||x||_p ** power, 10) of a residual x that each subclass builds from (h, r, t)."""

    p = 2

    def __init__(self, width: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        pass

    def residual(self, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        raise NotImplementedError

    def __call__(self, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        x = self.residual(h, r, t).astype(jnp.float32)
        distance = jnp.sum(jnp.abs(x), axis=-1) if self.p == 1 else jnp.sqrt(jnp.sum(x * x, axis=-1))
        return -jnp.minimum(distance, NORM_CLAMP).astype(h.dtype)


class UM(NormBased):
    """||h - t||."""

    def residual(self, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        return h - t


class SE(NormBased):
    """||diag(r) h - diag(r) t||."""

    def residual(self, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        return r * h - r * t


class TransE(NormBased):
    """||h + r - t||_1."""

    p = 1

    def residual(self, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        return h + r - t


class TransH(NormBased):
    """h and t projected on the hyperplane of normal w = normalize(r_to_w(r)), translated by r_to_rtr(r)."""

    def __init__(self, width: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.r_to_rtr = _linear(width, width, dtype, rngs)
        self.r_to_w = _linear(width, width, dtype, rngs)

    def residual(self, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        w = self.r_to_w(r)
        w = w / jnp.maximum(jnp.sqrt(jnp.sum(w * w, axis=-1, keepdims=True)), 1e-12)

        def project(x: jax.Array) -> jax.Array:
            return x - jnp.sum(x * w, axis=-1, keepdims=True) * w

        return project(h) + self.r_to_rtr(r) - project(t)


class TransF(NormBased):
    """||alpha(r) h + r_vec(r) - beta(r) t||."""

    def __init__(self, width: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.r_to_rvec = _linear(width, width, dtype, rngs)
        self.r_to_alpha = _linear(width, width, dtype, rngs)
        self.r_to_beta = _linear(width, width, dtype, rngs)

    def residual(self, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        return self.r_to_alpha(r) * h + self.r_to_rvec(r) - self.r_to_beta(r) * t


class PairRE(NormBased):
    """||alpha(r) h - beta(r) t||."""

    def __init__(self, width: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.r_to_alpha = _linear(width, width, dtype, rngs)
        self.r_to_beta = _linear(width, width, dtype, rngs)

    def residual(self, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        return self.r_to_alpha(r) * h - self.r_to_beta(r) * t


class TripleRE(NormBased):
    """gamma(r) times the norm score of alpha(r) h + delta(r) - beta(r) t."""

    def __init__(self, width: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.r_to_alpha = _linear(width, width, dtype, rngs)
        self.r_to_beta = _linear(width, width, dtype, rngs)
        self.r_to_delta = _linear(width, width, dtype, rngs)
        self.r_to_gamma = _linear(width, 1, dtype, rngs)

    def residual(self, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        return self.r_to_alpha(r) * h + self.r_to_delta(r) - self.r_to_beta(r) * t

    def __call__(self, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        return self.r_to_gamma(r)[..., 0] * super().__call__(h, r, t)


class DistMult(nnx.Module):
    """sum h r t."""

    def __init__(self, width: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        pass

    def __call__(self, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        return jnp.sum(h * r * t, axis=-1)


class DistMA(DistMult):
    """<h, r> + <h, t> + <r, t>."""

    def __call__(self, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        return jnp.sum(h * r, axis=-1) + jnp.sum(h * t, axis=-1) + jnp.sum(r * t, axis=-1)


class SimplE(DistMult):
    """(<h_f, r_f, t_b> + <t_f, r_b, h_b>) / 2 over the halves of each vector."""

    def __call__(self, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        (h_f, h_b), (r_f, r_b), (t_f, t_b) = _chunks(h, 2), _chunks(r, 2), _chunks(t, 2)
        return 0.5 * (jnp.sum(h_f * r_f * t_b, axis=-1) + jnp.sum(t_f * r_b * h_b, axis=-1))


class ComplEx(DistMult):
    """Re(<h, r, conj(t)>), the halves of each vector its real and imaginary parts."""

    def __call__(self, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        (h_re, h_im), (r_re, r_im), (t_re, t_im) = _chunks(h, 2), _chunks(r, 2), _chunks(t, 2)
        terms = h_re * r_re * t_re + h_re * r_im * t_im + h_im * r_re * t_im - h_im * r_im * t_re
        return jnp.sum(terms, axis=-1)


class QuatE(DistMult):
    """<h (x) r, t>, the Hamilton product of quaternions (the quarters of each vector)."""

    def __call__(self, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        (h0, h1, h2, h3), (r0, r1, r2, r3), (t0, t1, t2, t3) = _chunks(h, 4), _chunks(r, 4), _chunks(t, 4)
        a0 = h0 * r0 - h1 * r1 - h2 * r2 - h3 * r3
        a1 = h0 * r1 + h1 * r0 + h2 * r3 - h3 * r2
        a2 = h0 * r2 - h1 * r3 + h2 * r0 + h3 * r1
        a3 = h0 * r3 + h1 * r2 - h2 * r1 + h3 * r0
        return jnp.sum(a0 * t0 + a1 * t1 + a2 * t2 + a3 * t3, axis=-1)


class HolE(DistMult):
    """<r, h * t>, * the circular correlation (through the FFT, in float32)."""

    def __call__(self, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        width = h.shape[-1]
        h, r, t = (x.astype(jnp.float32) for x in (h, r, t))
        corr = jnp.fft.irfft(jnp.conj(jnp.fft.rfft(h, axis=-1)) * jnp.fft.rfft(t, axis=-1), n=width, axis=-1)
        return jnp.sum(corr * r, axis=-1)


class ERMLP(nnx.Module):
    """Linear(ReLU(Linear([h || r || t]))) (hidden width 2048); `mlp` holds gliner's Sequential's Linears 0 and 2."""

    HIDDEN = 2048

    def __init__(self, width: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.linear_in = torch_linear(3 * width, self.HIDDEN, (axes.EMBED, axes.MLP), dtype, rngs)
        self.linear_out = torch_linear(self.HIDDEN, 1, (axes.MLP, axes.EMBED), dtype, rngs)

    def __call__(self, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        inner = self.linear_in(jnp.concatenate(jnp.broadcast_arrays(h, r, t), axis=-1))
        return self.linear_out(jax.nn.relu(inner))[..., 0]


class ConvKB(nnx.Module):
    """fc(ReLU(conv([h; r; t]))): a width-1 convolution of the three vectors into 32 filters, flattened filter-major
    into one Linear. `conv` keeps torch's Conv1d weight [32, 3, 1] as it is."""

    FILTERS = 32

    def __init__(self, width: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        bound = 3**-0.5
        init = jax.random.uniform(rngs.params(), (self.FILTERS, 3, 1), dtype, -bound, bound)
        self.conv_weight = nnx.Param(init, **logical_axes(axes.MLP, None, None))
        self.conv_bias = nnx.Param(jnp.zeros((self.FILTERS,), dtype), **logical_axes(axes.MLP))
        self.fc = torch_linear(self.FILTERS * width, 1, (axes.MLP, axes.EMBED), dtype, rngs)

    def __call__(self, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        stacked = jnp.stack(jnp.broadcast_arrays(h, r, t), axis=-2)  # [..., 3, D]
        features = jnp.einsum("fc,...cd->...fd", self.conv_weight[...][..., 0].astype(h.dtype), stacked)
        features = jax.nn.relu(features + self.conv_bias[...].astype(h.dtype)[:, None])
        return self.fc(features.reshape(*features.shape[:-2], -1))[..., 0]


class GlinerRows(NamedTuple):
    """gliner's flattened triples batch, for `RelationHead`'s cells (b, head i, tail j, relation c): each example's
    scored pairs padded to `pairs` (N), each pair repeated for the `relations` (C) slots, the `examples` (B) real
    rows first: B x N x C rows. `rank` [B, E, E]: a cell pair's place among its example's pairs (-1: not scored);
    `relations_valid` [B, R]: each row's relation slots (gliner pads the others with zero prompts). For BatchNorm
    statistics in training, `head` [B, E] / `tail` [B, E]: how many pairs read each entity as head / tail, gliner's
    padding pairs included, and `zeros`: padding pairs of zero vectors."""

    head: jax.Array
    tail: jax.Array
    zeros: jax.Array
    rank: jax.Array
    pairs: jax.Array
    relations: jax.Array
    examples: jax.Array
    relations_valid: jax.Array


class BatchNorm(nnx.Module):
    """torch's `BatchNorm1d` over the last axis: the running statistics in eval mode (`use_running_average`); in
    training the batch's (biased variance), the running mean and unbiased variance moved by momentum 0.1 and
    `num_batches_tracked` counted, as torch does. Attributes named like torch's parameters and buffers."""

    def __init__(self, width: int, dtype: jnp.dtype):
        self.weight = nnx.Param(jnp.ones((width,), dtype), **logical_axes(axes.EMBED))
        self.bias = nnx.Param(jnp.zeros((width,), dtype), **logical_axes(axes.EMBED))
        self.running_mean = nnx.BatchStat(jnp.zeros((width,), jnp.float32))
        self.running_var = nnx.BatchStat(jnp.ones((width,), jnp.float32))
        self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), jnp.int32))
        self.use_running_average = False

    def __call__(self, x: jax.Array, weights: jax.Array, zeros: jax.Array, slots: jax.Array) -> jax.Array:
        """x [..., D] normalised. Training: statistics of x's rows, each counted `weights` [...] times, with `zeros`
        zero rows; the rows are repeated `slots` times (the unbiased running variance's count)."""
        x32 = x.astype(jnp.float32)
        if self.use_running_average:
            mean, var = self.running_mean[...], self.running_var[...]
        else:
            w, lead = weights.astype(jnp.float32)[..., None], tuple(range(x.ndim - 1))
            count = jnp.sum(w) + zeros
            mean = jnp.sum(w * x32, axis=lead) / jnp.maximum(count, 1.0)
            var = (jnp.sum(w * jnp.square(x32 - mean), axis=lead) + zeros * jnp.square(mean)) / jnp.maximum(count, 1.0)
            rows = count * slots
            update = rows > 1  # torch keeps its statistics for an empty batch (and refuses a single row)
            unbiased = jax.lax.stop_gradient(var * rows / jnp.maximum(rows - 1, 1.0))
            fresh_mean = (1 - BN_MOMENTUM) * self.running_mean[...] + BN_MOMENTUM * jax.lax.stop_gradient(mean)
            fresh_var = (1 - BN_MOMENTUM) * self.running_var[...] + BN_MOMENTUM * unbiased
            self.running_mean[...] = jnp.where(update, fresh_mean, self.running_mean[...])
            self.running_var[...] = jnp.where(update, fresh_var, self.running_var[...])
            self.num_batches_tracked[...] = self.num_batches_tracked[...] + 1
        scale = jax.lax.rsqrt(var + BN_EPS) * self.weight[...].astype(jnp.float32)
        return ((x32 - mean) * scale + self.bias[...].astype(jnp.float32)).astype(x.dtype)


def _xavier_core(key: jax.Array, width: int, dtype: jnp.dtype) -> jax.Array:
    """torch's xavier_uniform_ of a [D, D, D] tensor (fans D * D), drawn on the host by NumPy's generator seeded from
    `key`: JAX's counter-based generator takes 5x longer for these 453M values (20 s on a busy CPU); nothing is
    drawn when the network is built abstractly (`nnx.eval_shape`)."""
    bound = np.float32((6.0 / (2 * width * width)) ** 0.5)

    def draw(seed: np.ndarray) -> np.ndarray:
        values = np.random.default_rng(np.asarray(seed)).random((width,) * 3, dtype=np.float32)
        values *= 2 * bound
        values -= bound
        return values

    shape = jax.ShapeDtypeStruct((width,) * 3, jnp.float32)
    return jax.pure_callback(draw, shape, jax.random.key_data(key)).astype(dtype)


class TuckER(nnx.Module):
    """gliner's TuckER: h and t through their BatchNorms (`bn0`, `bn1`) and `input_dropout`, scored against a
    matrix made of the core tensor W [D, D, D] (xavier-uniform) and the relations, through `dropout` (rate 0.2 each).

    gliner means W_r = sum_k r_k W[k], but computes `matmul(r, W)` with r [rows, D]: a product batched over W's
    first axis, [D, rows, D], which it then views as [rows, D, D]. Row n's matrix thus holds, in its line a, the
    vector sum_p r_m[p] W[k, p] with k, m = divmod(n D + a, rows): other rows' relations, so a score depends on the
    whole flattened batch (its size B x N x C and the relations of each row, `GlinerRows`). The same numbers here,
    without the [rows, D, D] tensor: W is contracted with each (example, relation slot)'s prompt, then with each
    tail, and each cell gathers its lines from those. Dropout masks are drawn per vector (h, t) and per (example,
    relation)'s contraction, shared by the rows that read them, where gliner draws them per row."""

    def __init__(self, width: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.W = nnx.Param(_xavier_core(rngs.params(), width, dtype), **logical_axes(None, axes.EMBED, axes.HIDDEN))
        self.bn0 = BatchNorm(width, dtype)
        self.bn1 = BatchNorm(width, dtype)
        self.input_dropout = Dropout(TUCKER_DROPOUT, rngs=rngs)
        self.dropout = Dropout(TUCKER_DROPOUT, rngs=rngs)

    def cells(self, entities: jax.Array, relations: jax.Array, rows: GlinerRows) -> jax.Array:
        """Scores [B, E, E, R] of every (head i, tail j, relation c) of entities [B, E, D] and relation prompts
        [B, R, D] that `rows` scores (0 elsewhere), as gliner computes them in its flattened batch."""
        batch, num, width = entities.shape
        slots = relations.shape[1]
        h = self.input_dropout(self.bn0(entities, rows.head, rows.zeros, rows.relations))
        t = self.input_dropout(self.bn1(entities, rows.tail, rows.zeros, rows.relations))
        prompts = relations * rows.relations_valid[..., None].astype(relations.dtype)
        core = self.dropout(jnp.einsum("bcp,kpq->kbcq", prompts, self.W[...].astype(relations.dtype)))
        lines = jnp.einsum("kbcq,xjq->xjkbc", core, t).reshape(batch, num, -1)  # [B, E(tail), D * B * R]
        n, c, b_real = rows.pairs, rows.relations, rows.examples
        total = jnp.maximum(b_real * n * c, 1)
        example = jnp.arange(batch)[:, None, None, None]
        row = (example * n + jnp.maximum(rows.rank, 0)[..., None]) * c + jnp.arange(slots)  # [B, E, E, R]
        flat = row[..., None] * width + jnp.arange(width)  # [B, E, E, R, D]: n D + a
        k, m = flat // total, flat % total
        index = (k * batch + m // jnp.maximum(n * c, 1)) * slots + m % jnp.maximum(c, 1)
        gathered = lines[example[..., None], jnp.arange(num)[None, None, :, None, None], index]
        scores = jnp.einsum("bia,bijca->bijc", h, gathered)
        scored = (rows.rank >= 0)[..., None] & (jnp.arange(slots) < c)
        return jnp.where(scored, scores, 0.0)


TRIPLES_LAYERS = {
    "UM": UM,
    "SE": SE,
    "TransE": TransE,
    "TransH": TransH,
    "TransF": TransF,
    "PairRE": PairRE,
    "TripleRE": TripleRE,
    "DistMult": DistMult,
    "SimplE": SimplE,
    "DistMA": DistMA,
    "ComplEx": ComplEx,
    "QuatE": QuatE,
    "HolE": HolE,
    "TuckER": TuckER,
    "ERMLP": ERMLP,
    "ConvKB": ConvKB,
}
"""triples_layer -> its module class, built as (width, dtype, rngs)."""
PARAMETER_FREE = ("UM", "SE", "TransE", "DistMult", "SimplE", "DistMA", "ComplEx", "QuatE", "HolE")
"""The modes without parameters: these run at any width (QuatE: a multiple of 4; SimplE and ComplEx: even)."""


class TriplesScore(nnx.Module):
    """gliner's `triples_score_layer`: the mode's module as `interaction`."""

    def __init__(self, mode: str, width: int, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.interaction = TRIPLES_LAYERS[mode](width, dtype, rngs)

    def __call__(self, h: jax.Array, r: jax.Array, t: jax.Array) -> jax.Array:
        """Scores [...] of h, r, t [..., D], broadcast together (UM reads no relation); not for TuckER, whose
        scores depend on the whole batch (`cells`)."""
        return jnp.broadcast_to(self.interaction(h, r, t), jnp.broadcast_shapes(h.shape, r.shape, t.shape)[:-1])

    def cells(self, entities: jax.Array, relations: jax.Array, rows: GlinerRows | None) -> jax.Array:
        """Scores [B, E, E, R] of every (head i, tail j, relation c) of entities [B, E, D] and relation prompts
        [B, R, D]; TuckER needs gliner's flattened batch (`rows`)."""
        if isinstance(self.interaction, TuckER):
            if rows is None:
                raise ValueError("triples_layer 'TuckER' scores pairs only with their batch's layout (GlinerRows)")
            return self.interaction.cells(entities, relations, rows)
        h, t, r = entities[:, :, None, None], entities[:, None, :, None], relations[:, None, None]
        return self(h, r, t)
