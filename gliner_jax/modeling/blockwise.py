"""A computation split into blocks whose forward and backward passes both hold one block's intermediates at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def _differentiable(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def map_blocks(block: Callable[..., Any], xs: Any, shared: Any) -> Any:
    """`jax.lax.map(lambda x: block(x, shared), xs)`, with a backward pass that recomputes each block in turn.

    Under autodiff, `jax.lax.map` keeps every block's intermediates for the backward pass, and `jax.checkpoint`
    inside it does not stop JAX from hoisting what depends only on non-differentiated inputs (masks, dropout
    bits) out of the loop, stacked over all blocks. Here the forward pass keeps only `xs` and `shared`; the
    backward pass is a scan that reruns one block under `jax.vjp` per step: gradients of `xs` come out per block,
    gradients of `shared` are summed over blocks. Leaves of `xs` have the block index as their leading axis;
    non-floating leaves (ids, offsets, RNG keys) get no gradient.
    """

    @jax.custom_vjp
    def run(xs: Any, shared: Any) -> Any:
        return jax.lax.map(lambda x: block(x, shared), xs)

    def forward(xs: Any, shared: Any) -> tuple[Any, tuple[Any, Any]]:
        return run(xs, shared), (xs, shared)

    def backward(residuals: tuple[Any, Any], cotangent: Any) -> tuple[Any, Any]:
        xs, shared = residuals
        x_leaves, x_tree = jax.tree.flatten(xs)
        s_leaves, s_tree = jax.tree.flatten(shared)
        x_diff = [_differentiable(leaf) for leaf in x_leaves]
        s_diff = [_differentiable(leaf) for leaf in s_leaves]

        def merge(leaves: list[Any], wanted: list[bool], values: list[Any]) -> list[Any]:
            values = iter(values)
            return [next(values) if keep else leaf for leaf, keep in zip(leaves, wanted, strict=True)]

        def step(total: list[jax.Array], inputs: tuple[list[Any], Any]) -> tuple[list[jax.Array], list[jax.Array]]:
            x_block, block_cotangent = inputs

            def differentiable_block(x_vals: list[Any], s_vals: list[Any]) -> Any:
                x = jax.tree.unflatten(x_tree, merge(x_block, x_diff, x_vals))
                return block(x, jax.tree.unflatten(s_tree, merge(s_leaves, s_diff, s_vals)))

            x_vals = [leaf for leaf, keep in zip(x_block, x_diff, strict=True) if keep]
            s_vals = [leaf for leaf, keep in zip(s_leaves, s_diff, strict=True) if keep]
            _, vjp = jax.vjp(differentiable_block, x_vals, s_vals)
            x_grads, s_grads = vjp(block_cotangent)
            return [t + g for t, g in zip(total, s_grads, strict=True)], x_grads

        zeros = [jnp.zeros_like(leaf) for leaf, keep in zip(s_leaves, s_diff, strict=True) if keep]
        s_grads, x_grads = jax.lax.scan(step, zeros, (x_leaves, cotangent))
        x_out = merge([None] * len(x_leaves), x_diff, x_grads)
        s_out = merge([None] * len(s_leaves), s_diff, s_grads)
        return jax.tree.unflatten(x_tree, x_out), jax.tree.unflatten(s_tree, s_out)

    run.defvjp(forward, backward)
    return run(xs, shared)
