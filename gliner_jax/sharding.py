"""Where arrays live, in training and inference alike: the device mesh, the logical-axis rules that place parameters,
optimizer state and batches on it, and the inference `Placement` over this process's devices.

Model code names each parameter dimension with a logical axis (nnx metadata `out_sharding`, e.g.
("embed", "heads")); the rules here map logical axes to the mesh axes ("data", "fsdp", "tensor").
FSDP style: every large parameter splits its model dimension over "fsdp" and its model-parallel dimension
(heads, mlp, vocab) over "tensor"; batches split over "data" x "fsdp", and so does a bi-encoder's label table (each
device encodes its share of the labels; the label encoder's parameters follow the same rules as the text encoder's).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import linen, nnx
from jax.experimental.compilation_cache import compilation_cache
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

LogicalRules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

# (logical axis, mesh axes), by precedence: a mesh axis already used by an earlier dimension of the same
# array is not used again (flax's `logical_to_mesh_axes`); unlisted logical axes are replicated.
# The LSTM's gate axis takes fsdp and tensor together and its recurrent input axis stays whole: with
# weight_hh split ("fsdp", "tensor") over its two dimensions inside the scan and the batch over
# ("data", "fsdp"), XLA (jaxlib 0.10.2, CPU) computes wrong gradients on a mesh with all three axes > 1.
DEFAULT_RULES: LogicalRules = (
    ("batch", ("data", "fsdp")),
    ("labels", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("lstm", ("fsdp", "tensor")),
    ("embed", "fsdp"),
    ("hidden", "fsdp"),
    ("lstm_hidden", None),
    ("positions", None),
    ("types", None),
    ("relpos", None),
    ("layers", None),
)


def override_rules(
    overrides: Mapping[str, str | Sequence[str] | None], rules: LogicalRules = DEFAULT_RULES
) -> LogicalRules:
    """`rules` with the mesh axes of each logical axis in `overrides` replaced (in place; new logical axes go
    last). Mesh axes may come as a YAML list; an unknown mesh axis raises ValueError."""

    def normalise(axes: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
        names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        unknown = [n for n in names if n not in MESH_AXES]
        if unknown:
            raise ValueError(f"unknown mesh axes {unknown} in sharding rules (mesh axes: {MESH_AXES})")
        return axes if axes is None or isinstance(axes, str) else names

    replaced = tuple(
        (logical, normalise(overrides[logical]) if logical in overrides else axes) for logical, axes in rules
    )
    known = {logical for logical, _ in rules}
    return replaced + tuple((logical, normalise(axes)) for logical, axes in overrides.items() if logical not in known)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh axis sizes; one of them may be -1 to take all remaining devices."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def __post_init__(self) -> None:
        sizes = dataclasses.asdict(self)
        for name, size in sizes.items():
            if size != -1 and size < 1:
                raise ValueError(f"mesh axis {name} must be -1 or >= 1, got {size}")
        if list(sizes.values()).count(-1) > 1:
            raise ValueError(f"at most one mesh axis may be -1, got {sizes}")

    def shape(self, num_devices: int) -> tuple[int, int, int]:
        """Axis sizes (data, fsdp, tensor) for `num_devices`, -1 filled in; their product is `num_devices`."""
        sizes = dataclasses.asdict(self)
        fixed = math.prod(size for size in sizes.values() if size != -1)
        filled = {name: num_devices // fixed if size == -1 else size for name, size in sizes.items()}
        if math.prod(filled.values()) != num_devices:
            raise ValueError(f"mesh {sizes} does not fit {num_devices} devices")
        return filled["data"], filled["fsdp"], filled["tensor"]


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ("data", "fsdp", "tensor") mesh over `devices` (default: all), with Auto axis types."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh(
        config.shape(len(devices)), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
    )


def _fitting_spec(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """`spec` with every dimension that its mesh axes do not divide evenly replicated instead."""
    axes = []
    for size, names in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)), strict=True):
        split = math.prod(mesh.shape[n] for n in ((names,) if isinstance(names, str) else names or ()))
        axes.append(names if size % split == 0 else None)
    return PartitionSpec(*axes)


def state_shardings(state: Any, mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> Any:
    """NamedShardings shaped like `state`: an nnx.State, or an optax state built from one (concrete or abstract).

    A Variable is sharded by its `out_sharding` logical axes under `rules`; a dimension its mesh axes do not
    divide is replicated. Other leaves (step counts, learning rates, RNG keys, ...) are replicated."""

    def sharding(leaf: Any) -> Any:
        if not isinstance(leaf, nnx.Variable):
            return NamedSharding(mesh, PartitionSpec())
        axes = leaf.get_metadata().get("out_sharding")
        spec = linen.logical_to_mesh_axes(axes, rules) if axes else PartitionSpec()
        # The value may be an empty pytree: optax's MaskedNode where a transform skips this parameter.
        return leaf.replace(
            jax.tree.map(lambda value: NamedSharding(mesh, _fitting_spec(spec, value.shape, mesh)), leaf.get_value())
        )

    return jax.tree.map(sharding, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, rules: LogicalRules = DEFAULT_RULES, axis: str = "batch") -> NamedSharding:
    """For arrays whose leading dimension is the global batch (or, with axis="labels", the rows of a bi-encoder's
    label table): split by that logical axis's rule, the rest replicated."""
    return NamedSharding(mesh, linen.logical_to_mesh_axes((axis,), rules))


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

    def replicate(self, array: np.ndarray) -> jax.Array:
        """`array` whole on every device of the mesh (e.g. a bi-encoder request's label table)."""
        return jax.device_put(array, NamedSharding(self.mesh, PartitionSpec()))

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


def avoid_cached_cpu_collectives() -> None:
    """Turn the persistent compilation cache off in a multi-process CPU run (with a warning).

    On XLA:CPU, a train step executable loaded from the persistent cache can deadlock in its cross-process
    (gloo) all-reduces, while the same program compiled afresh runs: a 2-process restart hung every time
    its step came from the cache, and never once the step's cache entry was deleted.
    """
    cache_on = jax.config.jax_enable_compilation_cache and jax.config.jax_compilation_cache_dir
    if jax.process_count() > 1 and jax.default_backend() == "cpu" and cache_on:
        logging.getLogger(__name__).warning(
            "persistent compilation cache off: multi-process XLA:CPU runs deadlock on cached executables"
        )
        jax.config.update("jax_enable_compilation_cache", False)
        compilation_cache.reset_cache()
