"""Training run configs and the model they build: every shipped config parses; the train step unrolls the encoder's
layer loop or scans it as the config says."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gliner_jax.training.config import load_train_config
from gliner_jax.training.model_init import build_model
from gliner_jax.training.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = CONFIGS / "tiny.yaml"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda path: path.stem)
def test_every_shipped_config_parses(path):
    """No unknown key, no bad value: each file in configs/ reads as a TrainConfig (self_training.yaml once given the
    model that `gliner-jax self-train --model` puts in model.init_from)."""
    config = load_train_config(path, ["model.init_from=some/model"] if path.stem == "self_training" else [])
    assert config.data.train and config.trainer.num_steps >= 1


def test_train_step_unrolls_the_encoder_as_configured(tmp_path):
    """The train step's program holds the encoder's layer loop only with model.unroll_layers=false; evaluation and
    export (the eval graph) keep the scan either way."""
    loops = {}
    for unroll in (True, False):
        overrides = [f"trainer.output_dir={tmp_path / str(unroll)}", f"model.unroll_layers={str(unroll).lower()}"]
        trainer = Trainer(load_train_config(TINY, overrides))
        batch = trainer._global_batch(next(trainer.iterator))
        lowered = trainer.train_step.lower(trainer.params, trainer.opt_state, batch, jax.random.key(0))
        loops[unroll] = lowered.as_text().count("stablehlo.while")
        assert trainer.host_model().model.encoder.encoder.unroll_layers is False
    assert loops[False] == loops[True] + 2  # the scan over layers, forward and backward


def test_unrolled_encoder_computes_the_scanned_numbers():
    """Same weights, the layers run in a scan or unrolled: the same hidden states and parameter gradients."""
    model, _, _ = build_model(load_train_config(TINY).model, seed=0)
    encoder = model.encoder
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


def test_a_random_encoder_of_another_family_from_config_fields():
    """`model.encoder` given as fields builds that family's encoder (model_type picks it; DeBERTa when absent)."""
    fields = dict(model_type="bert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config = load_train_config(TINY, [f"model.encoder={fields}"])
    model, gliner_config, tokenizer = build_model(config.model, seed=0)
    assert type(model.encoder).__name__ == "BertModel"
    assert gliner_config.encoder_config.vocab_size == len(tokenizer)
    assert gliner_config.to_dict()["encoder_config"]["model_type"] == "bert"
