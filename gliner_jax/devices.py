"""Where inference runs: a mesh over devices of this process, the model's parameters placed on it (replicated by
default, or by shardings the caller passes, such as `training.sharding.state_shardings` for a model too large for
one device) and each batch split over it by rows."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec


@dataclasses.dataclass(frozen=True)
class Placement:
    """A mesh, the shardings of the model state on it (None: replicated on every device) and the sharding of
    batches (rows split over some mesh axes, the rest of each array whole)."""

    mesh: Mesh
    state_shardings: Any
    batch_sharding: NamedSharding

    @classmethod
    def create(
        cls, mesh: Mesh | None = None, state_shardings: Any = None, batch_sharding: NamedSharding | None = None
    ) -> Placement:
        """Default mesh: a "data" axis over all of this process's devices. Default batch sharding: rows split over
        every mesh axis. Raises ValueError for a mesh with another process's devices (each process runs its own
        inference) or a batch sharding on another mesh."""
        if mesh is None:
            devices = jax.local_devices()
            mesh = jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)
        foreign = [d for d in mesh.devices.flat if d.process_index != jax.process_index()]
        if foreign:
            raise ValueError(f"an inference mesh holds this process's devices only; it has {foreign[0]}")
        if batch_sharding is None:
            batch_sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names))
        elif batch_sharding.mesh != mesh:
            raise ValueError("the batch sharding must be on the inference mesh")
        return cls(mesh, state_shardings, batch_sharding)

    @property
    def row_multiple(self) -> int:
        """How many parts the rows of a batch are split into: a batch's row count must be a multiple of it."""
        axes = self.batch_sharding.spec[0] if len(self.batch_sharding.spec) else None
        names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        return math.prod(self.mesh.shape[name] for name in names)

    def place_state(self, state: Any) -> Any:
        """`state` (an nnx.State) on the mesh: by `state_shardings`, or replicated."""
        return jax.device_put(state, self.state_shardings or NamedSharding(self.mesh, PartitionSpec()))

    def place_rows(self, rows: np.ndarray) -> jax.Array:
        """An array of rows (e.g. `Batch.packed()`) on the mesh, split by rows; rows of zeros (neutral: no
        attention, no words, no labels) are added up to a multiple of `row_multiple`."""
        extra = -rows.shape[0] % self.row_multiple
        if extra:
            rows = np.concatenate([rows, np.zeros((extra, *rows.shape[1:]), rows.dtype)])
        return jax.device_put(rows, self.batch_sharding)


def round_up(rows: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= rows."""
    return -(-rows // multiple) * multiple
