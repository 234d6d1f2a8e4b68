"""The optimizer on a tiny parameter tree: gradient accumulation, frozen parameters, refusals, float32 master
weights (against gliner's parameter groups, transformers' schedules and torch's AdamW:
tests/parity/test_optim_vs_gliner.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gliner_jax.training.optim import (
    OptimizerConfig,
    apply_updates,
    float32_params,
    learning_rates,
    make_optimizer,
    parameter_groups,
    with_master_weights,
)
from tests.utils.optim import as_tree, flat, random_grads, run_optax, tiny_params


def test_grad_accumulation_equals_mean_gradient():
    """n micro-steps with grad_accum_steps=n == one step on their mean gradient; the micro-steps between
    updates leave the parameters as they are."""
    params, n, updates = tiny_params(), 3, 2
    grads = random_grads(params, n * updates)
    base = dict(num_steps=updates, encoder_lr=1e-2, others_lr=3e-2, warmup_steps=0, max_grad_norm=1.0)
    accumulated, rates = run_optax(OptimizerConfig(**base, grad_accum_steps=n), params, grads)
    means = [{k: np.mean([g[k] for g in grads[i * n : (i + 1) * n]], axis=0) for k in grads[0]} for i in range(updates)]
    single, single_rates = run_optax(OptimizerConfig(**base), params, means)
    for i in range(updates):
        for k in single[i]:
            np.testing.assert_allclose(accumulated[(i + 1) * n - 1][k], single[i][k], rtol=0, atol=1e-6)
            before = np.asarray(flat(params)[k]) if i == 0 else accumulated[i * n - 1][k]
            for micro in range(i * n, (i + 1) * n - 1):
                np.testing.assert_array_equal(accumulated[micro][k], before)
        assert rates[(i + 1) * n - 1] == single_rates[i]


@pytest.mark.parametrize("grad_accum_steps", [1, 2])
def test_frozen_params_unchanged_and_stateless(grad_accum_steps):
    params = tiny_params()
    config = OptimizerConfig(
        num_steps=4, warmup_steps=0, frozen_patterns=(r"^encoder/",), grad_accum_steps=grad_accum_steps
    )
    groups = flat(parameter_groups(params, config))
    frozen = {k for k, group in groups.items() if group == "frozen"}
    assert frozen == {k for k in groups if k.startswith("encoder/")}
    trajectory, _ = run_optax(config, params, random_grads(params, 4))
    for k, v in flat(params).items():
        changed = not np.array_equal(trajectory[-1][k], np.asarray(v))
        assert changed == (k not in frozen), k
    # Per trainable value: Adam's two moments, plus the accumulated gradient when accumulating.
    state = make_optimizer(config, params).init(params)
    state_size = sum(x.size for x in jax.tree.leaves(state) if x.ndim > 0)
    trainable_size = sum(v.size for k, v in flat(params).items() if k not in frozen)
    assert state_size == (2 + (grad_accum_steps > 1)) * trainable_size


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(num_steps=0), "num_steps"),
        (dict(encoder_lr=-1.0), "encoder_lr"),
        (dict(scheduler="cosine_with_restarts"), "scheduler"),
        (dict(warmup_ratio=1.5), "warmup_ratio"),
        (dict(warmup_steps=11), "warmup_steps"),
        (dict(grad_accum_steps=0), "grad_accum_steps"),
        (dict(b2=1.0), "b2"),
        (dict(frozen_patterns=("(",)), "frozen_patterns"),
    ],
)
def test_config_refusals(overrides, field):
    with pytest.raises(ValueError, match=field):
        OptimizerConfig(**{"num_steps": 10, **overrides})


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(encoder_pattern=r"^backbone/"), "encoder_pattern"),
        (dict(frozen_patterns=(r"^rnn/", r"^lstm/")), "frozen_patterns"),
        (dict(no_decay_patterns=(r"norm/gamma",)), "no_decay_patterns"),
    ],
)
def test_pattern_matching_no_parameter_is_refused(overrides, field):
    config = OptimizerConfig(num_steps=10, **overrides)
    with pytest.raises(ValueError, match=f"{field}.*matches no parameter"):
        make_optimizer(config, tiny_params())


@pytest.mark.slow
def test_master_weights_follow_float32_adamw():
    """bfloat16 parameters through `with_master_weights`: the masters in the state are what optax's AdamW makes of
    float32 parameters given the same gradients (clipping, groups, decay, schedule), and the parameters are the
    masters rounded to bfloat16 after every step."""
    config = OptimizerConfig(num_steps=5, encoder_lr=1e-2, others_lr=3e-2, warmup_steps=1, max_grad_norm=1.0)
    params32 = tiny_params()
    params16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params32)
    reference = jax.tree.map(lambda p: p.astype(jnp.float32), params16)  # the masters start from the bf16 values
    grads = [as_tree(params16, g) for g in random_grads(params32, 5)]
    grads = [jax.tree.map(lambda g: g.astype(jnp.bfloat16), g) for g in grads]  # as a bf16 backward pass gives them

    plain = make_optimizer(config, reference)
    plain_state = plain.init(reference)
    tx = with_master_weights(make_optimizer(config, params16))
    state = tx.init(params16)
    for g in grads:
        updates, plain_state = jax.jit(plain.update)(
            jax.tree.map(lambda x: x.astype(jnp.float32), g), plain_state, reference
        )
        reference = optax.apply_updates(reference, updates)
        updates, state = jax.jit(tx.update)(g, state, params16)
        params16 = apply_updates(params16, updates, state)
        for key, master in flat(state.master).items():
            expected = np.asarray(flat(reference)[key])  # up to float32 rounding: the two programs fuse differently
            np.testing.assert_allclose(np.asarray(master), expected, rtol=1e-6, atol=1e-7, err_msg=key)
            assert master.dtype == jnp.float32
            np.testing.assert_array_equal(np.asarray(flat(params16)[key]), np.asarray(master.astype(jnp.bfloat16)))
    assert learning_rates(state) == learning_rates(plain_state)
    assert float32_params(params16, state) is state.master
    assert float32_params(reference, plain_state) is reference
