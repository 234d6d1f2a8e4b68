"""Meshes and shardings on 8 fake CPU devices, in subprocesses (the rules on one device:
tests/unit/test_sharding_rules.py).

This pytest process has one CPU device; `_train_and_save` (and through it `_meshes_and_large_arrays`) runs in fresh
interpreters started with XLA_FLAGS=--xla_force_host_platform_device_count=8 (the flag must be set before jax starts).
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from gliner_jax.config import GLiNERConfig
from gliner_jax.modeling.encoders.deberta import DebertaConfig
from gliner_jax.modeling.gliner import GLiNERModel
from gliner_jax.sharding import MeshConfig, batch_sharding, make_mesh, state_shardings
from gliner_jax.training.optim import OptimizerConfig, make_optimizer, parameter_path
from tests.utils import fresh
from tests.utils.sharding_configs import CLASS_TOKEN, TINY_ENCODER, TINY_GLINER

# microsoft/deberta-v3-small under gliner's training configs (config.yaml: hidden 768, max_width 12).
SMALL_ENCODER = DebertaConfig(
    vocab_size=128100, hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072
)


def flat(tree) -> dict[str, np.ndarray]:
    return {parameter_path(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _meshes_and_large_arrays() -> dict[str, np.ndarray]:
    """8 devices: mesh shapes and axis types; on (data 2, fsdp 4) the shards of a batch, and of every parameter and
    optimizer-state array of a deberta-v3-small GLiNER (span and token heads): the numbers the test asserts (mesh
    shapes, batch shard shapes, arrays over 1 MB and how many of them are split); undivisible dimensions
    replicate."""
    checks = {"device_count": np.array(jax.device_count())}
    configs = [MeshConfig(), MeshConfig(data=2, fsdp=-1, tensor=2)]
    meshes = [make_mesh(config) for config in configs] + [make_mesh(MeshConfig(data=2, fsdp=2), jax.devices()[:4])]
    checks["mesh_shapes"] = np.array([tuple(mesh.shape.values()) for mesh in meshes])
    assert all(mesh.axis_names == ("data", "fsdp", "tensor") for mesh in meshes)
    assert all(mesh.axis_types == (AxisType.Auto,) * 3 for mesh in meshes)

    mesh = make_mesh(MeshConfig(data=2, fsdp=4))
    rows = jax.device_put(np.arange(16.0).reshape(8, 2), batch_sharding(mesh))
    checks["row_shards"] = np.array(sorted(s.data.shape for s in rows.addressable_shards))
    for span_mode in ("markerV0", "token_level"):
        config = GLiNERConfig(hidden_size=768, span_mode=span_mode, encoder_config=SMALL_ENCODER)
        params = nnx.state(nnx.eval_shape(lambda config=config: GLiNERModel(config, rngs=nnx.Rngs(0))), nnx.Param)
        opt_state = jax.eval_shape(make_optimizer(OptimizerConfig(num_steps=10), params).init, params)
        large = split = 0
        for tree in (params, opt_state):
            shardings = jax.tree.leaves(state_shardings(tree, mesh))
            for (_, leaf), sharding in zip(jax.tree_util.tree_leaves_with_path(tree), shardings, strict=True):
                assert isinstance(sharding, NamedSharding)
                shard = sharding.shard_shape(leaf.shape)  # raises if a dimension does not divide
                if leaf.size * leaf.dtype.itemsize > 2**20:
                    large += 1
                    split += bool(np.prod(shard) < leaf.size)
        checks[f"large/{span_mode}"], checks[f"split/{span_mode}"] = np.array(large), np.array(split)
        if span_mode == "token_level":  # [4H, 3]: 3 outputs cannot split over fsdp=4, so that dimension replicates
            out = state_shardings(params, mesh)["scorer"]["linear_out"]["kernel"].get_value()
            checks["token_out_spec"] = np.array([str(axis) for axis in out.spec])
    return checks


def toy_batch(batch: int, max_width: int) -> dict[str, np.ndarray]:
    """A hand-built span batch: 2 labels (<<ENT>> at tokens 1 and 3), one token per word from token 5 on."""
    rng = np.random.default_rng(0)
    num_tokens, num_words = 16, 6
    words = np.array([6, 4, 5, 2][:batch])[:, None]
    input_ids = rng.integers(10, TINY_ENCODER.vocab_size, (batch, num_tokens)).astype(np.int32)
    input_ids[:, [1, 3]] = CLASS_TOKEN
    positions = np.arange(num_tokens)[None]
    starts = np.repeat(np.arange(num_words), max_width)
    ends = starts + np.tile(np.arange(max_width), num_words)
    return dict(
        input_ids=input_ids,
        attention_mask=(positions < words + 6).astype(np.int32),  # [CLS], 2 x (<<ENT>>, label), [SEP], words, [SEP]
        words_mask=np.where((positions >= 5) & (positions < words + 5), positions - 4, 0).astype(np.int32),
        words_valid=np.arange(num_words)[None] < words,
        labels_valid=np.ones((batch, 2), bool),
        span_idx=np.broadcast_to(np.stack([starts, ends], -1), (batch, len(starts), 2)).astype(np.int32),
        span_mask=ends[None] < words,
    )


def tiny_model() -> GLiNERModel:
    """The toy model, initialised in one compiled program (faster than op by op)."""
    return nnx.jit(lambda: GLiNERModel(TINY_GLINER, rngs=nnx.Rngs(0)))()


def train_five_steps(mesh: jax.sharding.Mesh) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A tiny span GLiNER (projection, BiLSTM), make_optimizer and a mean-square loss on its logits, with
    dropout drawn from a per-step key, jitted with in/out shardings for `mesh`: the 5 losses and the trained
    parameters."""
    model = tiny_model()
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    optimizer = make_optimizer(OptimizerConfig(num_steps=5, encoder_lr=1e-4, others_lr=1e-3, warmup_steps=0), params)
    opt_state = optimizer.init(params)

    def train_step(params, opt_state, rest, batch, key):
        model = nnx.merge(graphdef, params, rest)
        nnx.reseed(model, dropout=key, policy="match_shape")
        loss, grads = nnx.value_and_grad(lambda model: jnp.mean(model(**batch) ** 2))(model)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    shardings = (state_shardings(params, mesh), state_shardings(opt_state, mesh), state_shardings(rest, mesh))
    params, opt_state, rest = jax.device_put((params, opt_state, rest), shardings)
    batch = jax.device_put(toy_batch(4, TINY_GLINER.max_width), batch_sharding(mesh))
    replicated = NamedSharding(mesh, PartitionSpec())
    step = jax.jit(
        train_step,
        in_shardings=(*shardings, batch_sharding(mesh), replicated),
        out_shardings=(shardings[0], shardings[1], replicated),
    )
    losses = []
    for index in range(5):
        params, opt_state, loss = step(params, opt_state, rest, batch, jax.random.key(index))
        losses.append(float(loss))
    embedding = params["encoder"]["embeddings"]["word_embeddings"]["embedding"].get_value()
    assert embedding.sharding == shardings[0]["encoder"]["embeddings"]["word_embeddings"]["embedding"].get_value()
    assert embedding.sharding.is_fully_replicated == (mesh.size == 1)
    return np.array(losses), flat(params)


# name -> (mesh, number of devices it takes)
MESHES = {"sharded": (MeshConfig(data=2, fsdp=2, tensor=2), 8), "single": (MeshConfig(data=1), 1)}


def _train_and_save(name: str, out_dir: str) -> None:
    """Entry point of an 8-device interpreter: train on the mesh `MESHES[name]` (on its first devices) and save
    the losses and the initial and trained parameters to `out_dir`/`name`.npz. The sharded run first runs
    the mesh and sharding checks (saved to `out_dir`/checks.npz)."""
    if name == "sharded":
        np.savez(Path(out_dir) / "checks.npz", **_meshes_and_large_arrays())
    config, num_devices = MESHES[name]
    mesh = make_mesh(config, jax.devices()[:num_devices])
    initial = flat(nnx.state(tiny_model(), nnx.Param))
    losses, params = train_five_steps(mesh)
    arrays = {f"initial/{k}": v for k, v in initial.items()} | {f"params/{k}": v for k, v in params.items()}
    np.savez(Path(out_dir) / f"{name}.npz", losses=losses, **arrays)


@pytest.fixture(scope="module")
def training_runs(tmp_path_factory):
    """Starts `_train_and_save` for each mesh, each in its own interpreter that sees 8 CPU devices (they run
    side by side); returns a function that waits for them, fails with their stderr, and returns what they saved."""
    out = tmp_path_factory.mktemp("training_runs")
    env = fresh.fresh_env(devices=8)
    processes = [
        fresh.start(fresh.function_command(__file__, "_train_and_save", name, str(out)), env) for name in MESHES
    ]

    @functools.cache
    def results() -> dict[str, dict[str, np.ndarray]]:
        fresh.finish(processes)
        return {name: dict(np.load(out / f"{name}.npz")) for name in [*MESHES, "checks"]}

    yield results
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.slow
def test_sharded_step_matches_single_device(training_runs):
    """5 jitted steps on 8 devices (data 2, fsdp 2, tensor 2) == the same steps on one device, within 1e-5
    (dropout masks included)."""
    sharded, single = training_runs()["sharded"], training_runs()["single"]
    assert {k for k in single if not k.startswith(("params/", "initial/"))} == {"losses"}
    assert sharded.keys() == single.keys()
    params = [k for k in single if k.startswith("params/")]
    assert max(np.abs(single[k] - single[k.replace("params/", "initial/")]).max() for k in params) > 1e-3  # it trains
    np.testing.assert_allclose(sharded["losses"], single["losses"], rtol=1e-5)
    for name in params:
        np.testing.assert_allclose(sharded[name], single[name], rtol=0, atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_meshes_and_large_arrays_sharded_on_8_devices(training_runs):
    """On 8 devices: (8, 1, 1), (2, 2, 2) and, on 4 of them, (2, 2, 1) meshes; a batch of 8 rows in 8 shards of
    one row; every array over 1 MB of a deberta-v3-small GLiNER split (encoder matrices, embeddings, LSTM and head
    matrices; in params, mu and nu); the token head's 3 outputs replicated over fsdp."""
    checks = training_runs()["checks"]
    assert checks["device_count"] == 8
    np.testing.assert_array_equal(checks["mesh_shapes"], [(8, 1, 1), (2, 2, 2), (2, 2, 1)])
    np.testing.assert_array_equal(checks["row_shards"], [(1, 2)] * 8)
    for span_mode in ("markerV0", "token_level"):
        assert checks[f"split/{span_mode}"] == checks[f"large/{span_mode}"] >= 3 * 15, span_mode
    assert checks["token_out_spec"].tolist() == ["tensor", "None"]
