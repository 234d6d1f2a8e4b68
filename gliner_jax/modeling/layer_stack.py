"""Encoder layers stacked on a leading "layers" axis (`layers.stacked_layers`) run in a scan (or unrolled), each layer
rematerialised in the backward pass by a named policy. Shared by every encoder family.

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


def run_layers(
    apply: Callable[..., jax.Array],
    layers: nnx.Module,
    hidden: jax.Array,
    *shared: Any,
    per_layer: tuple[jax.Array, ...] = (),
    unroll: bool,
    remat: str,
    collect: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """`hidden = apply(layer, hidden, *layer_inputs, *shared)` for each layer of `layers` (built by
    `layers.stacked_layers`), in order.

    The layers run in a scan (one compiled layer whatever the depth), unrolled when `unroll` is true; `remat`
    names the policy of `REMAT_POLICIES` under which each layer is rematerialised. `per_layer` holds arrays with a
    leading layers axis, of which each layer gets its row (`layer_inputs`); `shared` the arrays every layer reads
    (the same for all); static values (NumPy, Python) are closed over by `apply`. With `collect`, returns (the last
    hidden states, every layer's output stacked on a leading layers axis).
    """
    policy = REMAT_POLICIES[check_remat(remat)]
    if remat != "none":
        apply = nnx.remat(apply, policy=policy)
    in_axes = (nnx.Carry, 0, *(0,) * len(per_layer), *(None,) * len(shared))

    if collect:

        @nnx.scan(in_axes=in_axes, out_axes=(nnx.Carry, 0), unroll=unroll)
        def run_collecting(h: jax.Array, layer: nnx.Module, *inputs: Any) -> tuple[jax.Array, jax.Array]:
            h = apply(layer, h, *inputs)
            return h, h

        return run_collecting(hidden, layers, *per_layer, *shared)

    @nnx.scan(in_axes=in_axes, out_axes=nnx.Carry, unroll=unroll)
    def run(h: jax.Array, layer: nnx.Module, *inputs: Any) -> jax.Array:
        return apply(layer, h, *inputs)

    return run(hidden, layers, *per_layer, *shared)
