"""Meshes, logical rules and shardings on this process's one CPU device (the checks on 8 fake devices:
tests/e2e/test_sharding.py)."""

from __future__ import annotations

import dataclasses

import pytest
from flax import nnx

from gliner_jax.modeling import axes, layers
from gliner_jax.modeling.encoders.bert import BertConfig
from gliner_jax.modeling.encoders.modernbert import ModernBertConfig
from gliner_jax.modeling.gliner import GLiNERModel
from gliner_jax.sharding import DEFAULT_RULES, MeshConfig, make_mesh, override_rules, state_shardings
from tests.utils.sharding_configs import TINY_ENCODER, TINY_GLINER


@pytest.mark.parametrize(
    ("config", "shape"),
    [
        (MeshConfig(), (8, 1, 1)),
        (MeshConfig(data=2, fsdp=4), (2, 4, 1)),
        (MeshConfig(data=-1, fsdp=2, tensor=2), (2, 2, 2)),
        (MeshConfig(data=1, fsdp=-1), (1, 8, 1)),
        (MeshConfig(data=2, fsdp=2, tensor=-1), (2, 2, 2)),
        (MeshConfig(data=2, fsdp=2, tensor=2), (2, 2, 2)),
    ],
)
def test_mesh_shape(config, shape):
    assert config.shape(8) == shape


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: MeshConfig(data=-1, fsdp=-1), "at most one"),
        (lambda: MeshConfig(fsdp=0), "fsdp"),
        (lambda: MeshConfig(data=3).shape(8), "8 devices"),
        (lambda: MeshConfig(data=-1, fsdp=3).shape(8), "8 devices"),
        (lambda: MeshConfig(data=2, fsdp=2).shape(8), "8 devices"),
        (lambda: make_mesh(MeshConfig(data=2)), "1 devices"),
    ],
)
def test_mesh_refusals(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_rules_are_pairs_with_batch_over_data_and_fsdp():
    rules = dict(DEFAULT_RULES)
    assert len(rules) == len(DEFAULT_RULES)
    assert rules["batch"] == ("data", "fsdp")
    assert rules["layers"] is None


def test_override_rules():
    rules = override_rules({"vocab": None, "heads": ["tensor", "fsdp"], "length": "tensor"})
    assert [logical for logical, _ in rules] == [logical for logical, _ in DEFAULT_RULES] + ["length"]
    assert dict(rules) == {**dict(DEFAULT_RULES), "vocab": None, "heads": ("tensor", "fsdp"), "length": "tensor"}
    with pytest.raises(ValueError, match="model"):
        override_rules({"mlp": "model"})


def logical_axis_names(model: nnx.Module) -> set[str]:
    names = set()
    for _, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        names.update(axis for axis in variable.get_metadata().get("out_sharding") or () if axis is not None)
    return names


def test_every_parameter_axis_has_a_sharding_rule():
    """A parameter's logical axis that the rules do not list would be silently replicated; no parameter names one
    axis twice (the rules could not shard it), on every encoder family and in a bi-encoder."""
    ruled = {logical for logical, _ in DEFAULT_RULES}
    configs = [
        TINY_GLINER,
        dataclasses.replace(TINY_GLINER, span_mode="token_level", num_rnn_layers=2, hidden_size=32),
        dataclasses.replace(
            TINY_GLINER,
            encoder_config=dataclasses.replace(
                TINY_ENCODER, position_biased_input=True, share_att_key=False, norm_rel_ebd="none"
            ),
        ),
    ]
    sizes = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24)
    biases = dict(norm_bias=True, attention_bias=True, mlp_bias=True)
    for encoder in (BertConfig(**sizes), ModernBertConfig(**sizes, **biases)):
        configs.append(dataclasses.replace(TINY_GLINER, encoder_config=encoder))
    configs.append(dataclasses.replace(TINY_GLINER, labels_encoder="bert", labels_encoder_config=BertConfig(**sizes)))
    mesh = make_mesh(MeshConfig())
    for config in configs:
        model = nnx.eval_shape(lambda config=config: GLiNERModel(config, rngs=nnx.Rngs(0)))  # shapes and axes only
        names = logical_axis_names(model)
        assert {"vocab", "embed", "heads", "mlp", "layers"} <= names
        assert names <= ruled, names - ruled
        state_shardings(nnx.state(model, nnx.Param), mesh)  # raises on an axis named twice
    assert set(axes.ALL_AXES) <= ruled, set(axes.ALL_AXES) - ruled


def test_a_misspelt_logical_axis_is_refused():
    with pytest.raises(ValueError, match=r"unknown logical axes \['embd'\]"):
        layers.logical_axes("embd", "heads")
