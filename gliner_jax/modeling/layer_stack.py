"""Encoder layers stacked on a leading "layers" axis: built once with `nnx.vmap`, run in a scan (or unrolled), each
layer rematerialised in the backward pass by a named policy. Shared by every encoder family.

Remat policies (what one layer keeps from its forward pass for the backward pass):

- `none`: everything autodiff saves (the fastest step, the most memory: every [B, heads, T, T] table of every layer).
- `dots`: the outputs of the weight matmuls (projections and MLP, contractions without batch dimensions); the
  attention tables and the elementwise ops between are recomputed.
- `full`: only the layer's input; the whole layer runs again in the backward pass (about one extra forward).

The numbers are the same under every policy: recomputation replays the same ops on the same inputs, dropout
masks included (they depend only on the RNG key and the position). In the scan the loop keeps one layer's
recomputation at a time; unrolled, an optimization barrier fences each layer's, which GPU and TPU compilers honour
until scheduling while XLA:CPU drops it early (and with it the saving: use the scan there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from gliner_jax.modeling import axes

REMAT_POLICIES: dict[str, Callable[..., bool] | None] = {
    "none": None,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
}


def check_remat(policy: str) -> str:
    """`policy` if it names a remat policy; ValueError listing them otherwise."""
    if policy not in REMAT_POLICIES:
        raise ValueError(f"remat policy {policy!r} is not one of {sorted(REMAT_POLICIES)}")
    return policy


def stacked_layers(num_layers: int, make_layer: Callable[[nnx.Rngs], nnx.Module], rngs: nnx.Rngs) -> nnx.Module:
    """`num_layers` modules from `make_layer(rngs)`, each parameter stacked on a leading `layers` axis."""

    @nnx.split_rngs(splits=num_layers)
    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: axes.LAYERS})
    def make(rngs: nnx.Rngs) -> nnx.Module:
        return make_layer(rngs)

    return make(rngs)


def run_layers(
    apply: Callable[..., jax.Array],
    layers: nnx.Module,
    hidden: jax.Array,
    *shared: Any,
    unroll: bool,
    remat: str,
) -> jax.Array:
    """`hidden = apply(layer, hidden, *shared)` for each layer of `layers` (built by `stacked_layers`), in order.

    The layers run in a scan (one compiled layer whatever the depth), unrolled when `unroll` is true; `remat`
    names the policy of `REMAT_POLICIES` under which each layer is rematerialised. `shared` holds the arrays every
    layer reads (the same for all); static values (NumPy, Python) are closed over by `apply`.
    """
    policy = REMAT_POLICIES[check_remat(remat)]
    if remat != "none":
        apply = nnx.remat(apply, policy=policy)

    @nnx.scan(in_axes=(nnx.Carry, 0, *(None,) * len(shared)), out_axes=nnx.Carry, unroll=unroll)
    def run(h: jax.Array, layer: nnx.Module, *shared: Any) -> jax.Array:
        return apply(layer, h, *shared)

    return run(hidden, layers, *shared)
