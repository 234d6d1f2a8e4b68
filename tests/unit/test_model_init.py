"""Training run configs and the model they build: every shipped config parses; the train step unrolls the encoder's
layer loop or scans it as the config says."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gliner_jax.sharding import MeshConfig, make_mesh
from gliner_jax.training.config import ModelSection, load_train_config
from gliner_jax.training.model_init import build_model
from gliner_jax.training.step import build_train_program
from gliner_jax.training.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = CONFIGS / "tiny.yaml"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda path: path.stem)
def test_every_shipped_config_parses(path):
    """No unknown key, no bad value: each file in configs/ reads as a TrainConfig (self_training.yaml once given the
    model that `gliner-jax self-train --model` puts in model.init_from)."""
    config = load_train_config(path, ["model.init_from=some/model"] if path.stem == "self_training" else [])
    assert (config.data.train or config.data.sources) and config.trainer.num_steps >= 1


def test_train_step_unrolls_the_encoder_as_configured(tmp_path):
    """The train step's program holds the encoder's layer loop only with model.unroll_layers=false; evaluation and
    export (the eval graph) keep the scan either way."""
    loops = {}
    for unroll in (True, False):
        overrides = [f"trainer.output_dir={tmp_path / str(unroll)}", f"model.unroll_layers={str(unroll).lower()}"]
        trainer = Trainer(load_train_config(TINY, overrides))
        batch = trainer._global_batch(next(trainer.iterator))
        lowered = trainer.train_step.lower(trainer.params, trainer.opt_state, trainer.stats, batch, jax.random.key(0))
        loops[unroll] = lowered.as_text().count("stablehlo.while")
        assert trainer.host_model().model.encoder.encoder.unroll_layers is False
    assert loops[False] == loops[True] + 2  # the scan over layers, forward and backward


def test_an_abstract_network_gives_the_concrete_train_state_as_shapes():
    """`build_train_program` on a network from `nnx.eval_shape` (what the memory benchmark compiles): the parameters
    and optimizer state (bfloat16 parameters, float32 masters) of the concrete program as shapes, with its shardings."""
    config = load_train_config(TINY)
    model = build_model(config.model, seed=0).model
    abstract_model = nnx.eval_shape(lambda: nnx.merge(*nnx.split(model)))
    mesh = make_mesh(MeshConfig(data=1), jax.devices()[:1])
    abstract, concrete = (
        build_train_program(network, config.optimizer, config.loss, mesh, ["input_ids"], param_dtype="bfloat16")
        for network in (abstract_model, model)
    )
    shapes = jax.tree.leaves((abstract.params, abstract.opt_state))
    arrays = jax.tree.leaves((concrete.params, concrete.opt_state))
    assert len(shapes) == len(arrays) > 10
    for shape, array in zip(shapes, arrays, strict=True):
        assert isinstance(shape, jax.ShapeDtypeStruct)
        assert (shape.shape, shape.dtype, shape.sharding) == (array.shape, array.dtype, array.sharding)
    assert {leaf.dtype for leaf in jax.tree.leaves(abstract.params)} == {jnp.dtype(jnp.bfloat16)}


def test_unrolled_encoder_computes_the_scanned_numbers():
    """Same weights, the layers run in a scan or unrolled: the same hidden states and parameter gradients."""
    encoder = build_model(load_train_config(TINY).model, seed=0).model.encoder
    encoder.eval()
    rng = np.random.default_rng(0)
    input_ids = rng.integers(5, 300, (3, 17))
    mask = (np.arange(17) < np.array([[17], [11], [4]])).astype(np.int32)
    weights = rng.normal(size=(3, 17, encoder.config.hidden_size)).astype(np.float32)

    def hidden_and_gradients(unroll: bool) -> tuple[np.ndarray, list[np.ndarray]]:
        encoder.set_attributes(unroll_layers=unroll)
        graphdef, params, rest = nnx.split(encoder, nnx.Param, ...)

        def total(params: nnx.State) -> tuple[jax.Array, jax.Array]:
            hidden = nnx.merge(graphdef, params, jax.tree.map(jnp.asarray, rest))(input_ids, mask)
            return (hidden * weights).sum(), hidden

        (_, hidden), grads = jax.jit(jax.value_and_grad(total, has_aux=True))(params)
        return np.asarray(hidden), [np.asarray(g) for g in jax.tree.leaves(grads)]

    scanned, unrolled = hidden_and_gradients(False), hidden_and_gradients(True)
    np.testing.assert_allclose(unrolled[0], scanned[0], rtol=0, atol=1e-5)
    assert len(scanned[1]) > 10
    for ours, reference in zip(unrolled[1], scanned[1], strict=True):
        np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5 * max(np.abs(reference).max(), 1e-3))


@pytest.mark.slow
def test_train_step_takes_remat_param_dtype_and_encoder_attributes(tmp_path):
    """model.remat fences the layers' recomputation in the train step; model.param_dtype=bfloat16 holds bfloat16
    parameters with float32 masters (the float32 initialisation) in the optimizer state, and evaluation / export
    read the masters; model.encoder_attributes reach the encoder for training and evaluation; an attribute no module
    has is refused."""
    attributes = "model.encoder_attributes={blockwise_above: 16, query_block: 32}"
    base = [f"trainer.output_dir={tmp_path}", "model.unroll_layers=false"]
    trainer = Trainer(load_train_config(TINY, [*base, "model.remat=full", "model.param_dtype=bfloat16", attributes]))
    assert {leaf.dtype for leaf in jax.tree.leaves(trainer.params)} == {jnp.dtype(jnp.bfloat16)}
    masters = jax.tree.leaves(trainer.opt_state.master)
    assert {leaf.dtype for leaf in masters} == {jnp.dtype(jnp.float32)}
    for param, master in zip(jax.tree.leaves(trainer.params), masters, strict=True):
        np.testing.assert_array_equal(np.asarray(param), np.asarray(master.astype(jnp.bfloat16)))
    # the masters start from the float32 initialisation, not from its bfloat16 rounding
    assert any(np.any(np.asarray(master) != np.asarray(master.astype(jnp.bfloat16), np.float32)) for master in masters)
    host = trainer.host_model().model
    for exported, master in zip(jax.tree.leaves(nnx.state(host, nnx.Param)), masters, strict=True):
        np.testing.assert_array_equal(np.asarray(exported), np.asarray(master))
    attention = host.encoder.encoder.layer.attention.self
    assert (attention.blockwise_above, attention.query_block) == (16, 32)
    batch = trainer._global_batch(next(trainer.iterator))
    lowered = trainer.train_step.lower(
        trainer.params, trainer.opt_state, trainer.stats, batch, jax.random.key(0)
    ).as_text()
    assert "stablehlo.optimization_barrier" in lowered
    with pytest.raises(ValueError, match="flash_attention"):
        Trainer(load_train_config(TINY, [*base, "model.encoder_attributes={flash_attention: true}"]))


def test_a_random_encoder_of_another_family_from_config_fields():
    """`model.encoder` given as fields builds that family's encoder (model_type picks it; DeBERTa when absent)."""
    fields = dict(model_type="bert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config = load_train_config(TINY, [f"model.encoder={fields}"])
    built = build_model(config.model, seed=0)
    assert type(built.model.encoder).__name__ == "BertModel"
    assert built.config.encoder_config.vocab_size == len(built.tokenizer)
    assert built.config.to_dict()["encoder_config"]["model_type"] == "bert"


def test_packing_is_refused_for_a_bi_encoder(tmp_path):
    """A bi-encoder's batch shares one label table, which packed rows do not carry: refused by name."""
    config = load_train_config(CONFIGS / "tiny_bi.yaml", [f"trainer.output_dir={tmp_path}", "data.packing=true"])
    with pytest.raises(NotImplementedError, match=r"data\.packing"):
        Trainer(config)


def test_each_train_step_draws_its_dropout_masks_from_its_key(tmp_path):
    """The step reseeds every dropout stream from its key, on a network built for training and on one fine-tuned from
    an exported model (`model.init_from`): another key gives another loss, the same key the same. The streams are a
    constant of the compiled step: a dropout stream the reseed missed would give every step the same masks."""
    first = Trainer(load_train_config(TINY, [f"trainer.output_dir={tmp_path / 'first'}"]))
    assert first.gliner_config.dropout > 0
    first.export(tmp_path / "export")
    config = load_train_config(TINY, [f"trainer.output_dir={tmp_path / 'second'}"])
    second = Trainer(dataclasses.replace(config, model=ModelSection(init_from=str(tmp_path / "export"))))
    for trainer in (first, second):
        batch = trainer._global_batch(next(trainer.iterator))

        def loss(key: int, trainer: Trainer = trainer, batch: dict = batch) -> float:
            state = jax.tree.map(jnp.copy, (trainer.params, trainer.opt_state, trainer.stats))  # the step donates them
            return float(trainer.train_step(*state, batch, jax.random.key(key))[3]["loss"])

        assert loss(1) == loss(1) != loss(2)
