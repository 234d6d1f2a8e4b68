"""Our DeBERTa encoder without a reference model: a directory without weights is refused, parameters carry their
logical axes, layers are stacked for one scan, blockwise attention is chosen above the configured length (against
transformers: tests/parity/; the blockwise numbers: tests/e2e/test_blockwise_attention.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
import transformers
from flax import nnx

from gliner_jax.checkpoint_io import load_hf_encoder
from gliner_jax.modeling.encoders.deberta import DebertaConfig, DebertaModel
from tests.utils.encoders import TINY_V3


def test_missing_weights_file(tmp_path):
    transformers.DebertaV2Config(**TINY_V3).save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors or pytorch_model\.bin"):
        load_hf_encoder(tmp_path)


def test_parameters_carry_logical_axes():
    config = DebertaConfig.from_hf_dict(transformers.DebertaV2Config(**TINY_V3).to_dict())
    encoder = DebertaModel(config, rngs=nnx.Rngs(0))
    params = nnx.state(encoder, nnx.Param).flat_state()
    for path, var in params:
        axes = var.get_metadata()["out_sharding"]
        assert len(axes) == var.ndim, path
        assert ("layers" in axes) == ("layer" in path), path
    axes = {tuple(var.get_metadata()["out_sharding"]) for _, var in params}
    assert {("vocab", "embed"), ("layers", "embed", "heads"), ("layers", "embed", "mlp")} <= axes


def test_layers_are_stacked_for_scan():
    config = DebertaConfig.from_hf_dict(transformers.DebertaV2Config(**TINY_V3).to_dict())
    encoder = DebertaModel(config, rngs=nnx.Rngs(0))
    encoder.eval()
    kernel = encoder.encoder.layer.attention.self.query_proj.kernel
    assert kernel.shape == (config.num_hidden_layers, config.hidden_size, config.hidden_size)
    # One compiled forward, whatever the depth: the jaxpr holds a single scan over layers.
    graphdef, state = nnx.split(encoder)
    ones = jnp.ones((1, 8), jnp.int32)
    jaxpr = jax.make_jaxpr(lambda s, i, m: nnx.merge(graphdef, s)(i, m))(state, ones, ones)
    assert sum(eqn.primitive.name == "scan" for eqn in jaxpr.jaxpr.eqns) == 1


def test_blockwise_is_chosen_above_the_configured_length():
    """The default encoder runs longer inputs blockwise (its program holds the custom-gradient block loop) and shorter
    ones whole; `blockwise_above=None` never splits."""
    config = DebertaConfig(vocab_size=10, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
    model = DebertaModel(config, rngs=nnx.Rngs(0))
    model.eval()
    above = model.encoder.layer.attention.self.blockwise_above

    def splits(length: int) -> bool:
        graphdef, state = nnx.split(model)
        ids = jnp.ones((1, length), jnp.int32)
        return "custom_vjp_call" in str(jax.make_jaxpr(lambda s, i: nnx.merge(graphdef, s)(i, i))(state, ids))

    assert not splits(above) and splits(above + 32)
    model.set_attributes(blockwise_above=None)
    assert not splits(above + 32)
