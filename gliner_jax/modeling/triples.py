"""gliner 0.2.29's `triples_layer` modes (`TriplesScoreLayer`): knowledge-graph scores of (head, relation, tail)
triples, used by a relation model in place of its pair projection.

Each mode maps h, r, t [..., D] to scores [...]. gliner builds every mode 768 wide whatever `hidden_size` is (the
layer's default `dim`), so the modes with parameters run only on 768-wide models, as in gliner. The attribute
`interaction` and its children are named like gliner's modules (`triples_score_layer.interaction.<name>`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from gliner_jax.modeling import axes
from gliner_jax.modeling.layers import logical_axes, torch_linear

TRIPLES_WIDTH = 768  # the `dim` gliner builds every triples layer with
NORM_CLAMP = 10.0  # gliner's clamp of the distance of the norm-based modes


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
        """Scores [...] of h, r, t [..., D], broadcast together (UM reads no relation)."""
        return jnp.broadcast_to(self.interaction(h, r, t), jnp.broadcast_shapes(h.shape, r.shape, t.shape)[:-1])
