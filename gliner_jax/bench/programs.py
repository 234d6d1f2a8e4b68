"""The train programs of the benchmarks: `training.step.build_train_program` (the Trainer's) on one device, run in
a loop that carries the state; the remat policies to compare."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from gliner_jax.modeling.layer_stack import REMAT_POLICIES
from gliner_jax.sharding import MeshConfig, make_mesh
from gliner_jax.training.loss import LossConfig
from gliner_jax.training.optim import OptimizerConfig
from gliner_jax.training.step import TrainProgram, build_train_program

# gliner's focal loss as its training scripts set it, and the optimizer of its configs.
LOSS = dict(alpha=0.75, gamma=0.0, prob_margin=0.0, label_smoothing=0.0, reduction="sum", negatives=1.0)
OPTIMIZER = dict(
    encoder_lr=1e-5,
    others_lr=5e-5,
    encoder_weight_decay=0.01,
    others_weight_decay=0.01,
    scheduler="cosine",
    warmup_ratio=0.1,
    max_grad_norm=1.0,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
)


def one_device_program(
    model: nnx.Module, num_steps: int, batch_names: Sequence[str], masking: str = "global", **settings: Any
) -> TrainProgram:
    """The Trainer's program for `model` on the first device with OPTIMIZER over `num_steps` and the LOSS
    (`settings`: param_dtype, remat, unroll_layers of `build_train_program`)."""
    mesh = make_mesh(MeshConfig(data=1), jax.devices()[:1])
    optimizer = OptimizerConfig(num_steps=num_steps, **OPTIMIZER)
    return build_train_program(model, optimizer, LossConfig(**LOSS, masking=masking), mesh, batch_names, **settings)


class TrainLoop:
    """Steps of a program on its own state: `loop(batch)` runs one step (asynchronously), its dropout drawn from
    the step's number; `wait()` waits for all of them."""

    def __init__(self, program: TrainProgram, seed: int = 0):
        self.program, self.key, self.count = program, jax.random.key(seed), 0
        self.state = (program.params, program.opt_state, program.stats)

    def __call__(self, batch: dict[str, Any]) -> dict[str, jax.Array]:
        *state, metrics = self.program.step(*self.state, batch, jax.random.fold_in(self.key, self.count))
        self.state, self.count = tuple(state), self.count + 1
        return metrics

    def put(self, batch: dict[str, Any]) -> dict[str, jax.Array]:
        """`batch` on the device(s), as the step takes it."""
        return jax.device_put(batch, {name: self.program.batch_shardings[name] for name in batch})

    def wait(self) -> None:
        jax.block_until_ready(self.state)


def remat_policies(text: str) -> list[str]:
    """The comma-separated encoder remat policies (`model.remat`); SystemExit naming an unknown one."""
    policies = text.split(",")
    unknown = [policy for policy in policies if policy not in REMAT_POLICIES]
    if unknown:
        raise SystemExit(f"unknown remat policies {unknown} (known: {sorted(REMAT_POLICIES)})")
    return policies
