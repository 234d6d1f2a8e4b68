"""Round trips between Hugging Face DeBERTa directories and our encoder, and the errors on bad files."""

from __future__ import annotations

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file, save_file

from gliner_jax.checkpoint_io import (
    CheckpointMismatchError,
    encoder_table,
    load_hf_encoder,
    save_hf_encoder,
    state_to_torch,
)
from gliner_jax.modeling.encoders.deberta import DebertaConfig, DebertaModel
from tests.utils.encoders import TINY_V3, assert_same_state_dict, random_batch, torch_forward
from tests.utils.faults import assert_names, one_line_error, predict_args, save_tiny_model, truncate


def _reload_strict(directory) -> transformers.DebertaV2Model:
    model, info = transformers.DebertaV2Model.from_pretrained(directory, output_loading_info=True)
    assert not info["missing_keys"]
    assert not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    return model.eval()


@pytest.mark.parametrize(
    "overrides", [{}, {"share_att_key": False, "position_biased_input": True}, {"pos_att_type": ["c2p"]}]
)
def test_torch_jax_torch_round_trip_is_bit_exact(saved_encoder, tmp_path, overrides):
    torch_model, directory = saved_encoder(**overrides)
    encoder, config = load_hf_encoder(directory)
    save_hf_encoder(encoder, config, tmp_path / "out")

    assert_same_state_dict(_reload_strict(tmp_path / "out").state_dict(), torch_model.state_dict())

    written = json.loads((tmp_path / "out" / "config.json").read_text())
    source = json.loads((directory / "config.json").read_text())
    for key, value in source.items():
        if key not in ("architectures", "transformers_version"):
            assert written[key] == value, key


def test_native_encoder_exports_to_transformers(tmp_path):
    """An encoder created here (random init) is the same network once transformers loads it."""
    config = DebertaConfig.from_hf_dict(transformers.DebertaV2Config(**TINY_V3).to_dict())
    encoder = DebertaModel(config, rngs=nnx.Rngs(7))
    encoder.eval()
    save_hf_encoder(encoder, config, tmp_path)
    ids, mask = random_batch(config.vocab_size, [50, 31], seed=5)
    ours = np.asarray(encoder(jnp.asarray(ids), jnp.asarray(mask)))
    ref = torch_forward(_reload_strict(tmp_path), ids, mask)
    valid = mask.astype(bool)
    assert np.abs(ours[valid] - ref[valid]).max() <= 1e-5 * np.abs(ref[valid]).max()


def _edit_weights(directory, edit):
    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.pop("encoder.layer.1.attention.self.key_proj.bias"), "missing tensors: ['encoder.layer.1."),
        (lambda t: t.update({"encoder.extra.weight": np.ones(3, np.float32)}), "unexpected tensors: ['encoder.ext"),
        (
            lambda t: t.update({"encoder.layer.2.output.dense.weight": np.ones((64, 100), np.float32)}),
            "encoder.layer.2.output.dense.weight: file has (64, 100), model needs (64, 128)",
        ),
        (
            lambda t: t.update({"embeddings.word_embeddings.weight": np.ones((299, 64), np.float32)}),
            "embeddings.word_embeddings.weight: file has (299, 64), model needs (300, 64)",
        ),
    ],
    ids=["missing", "unexpected", "mis-shaped-layer", "mis-shaped-embedding"],
)
def test_bad_checkpoint_names_the_tensor(saved_encoder, edit, message):
    _, directory = saved_encoder()
    _edit_weights(directory, edit)
    with pytest.raises(CheckpointMismatchError) as err:
        load_hf_encoder(directory)
    assert message in str(err.value)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_file_loads_upcast(saved_encoder, tmp_path, dtype):
    torch_model, _ = saved_encoder()
    torch_model.to(dtype).save_pretrained(tmp_path / "half")
    encoder, config = load_hf_encoder(tmp_path / "half")
    ours = state_to_torch(encoder, encoder_table(config))
    for key, tensor in torch_model.state_dict().items():
        assert ours[key].dtype == np.float32
        np.testing.assert_array_equal(ours[key], tensor.float().numpy(), err_msg=key)


class NotATensor:
    """An object that PyTorch's safe loader (weights_only) refuses to unpickle."""


@pytest.mark.parametrize("fault", ["truncated", "pickled-object"])
def test_bad_pytorch_checkpoint_is_one_line(tmp_path, capsys, fault):
    saved = save_tiny_model(tmp_path / "saved")
    import torch
    from safetensors.torch import load_file

    model = shutil.copytree(saved / "torch", tmp_path / "model")
    tensors = load_file(model / "model.safetensors")
    (model / "model.safetensors").unlink()
    if fault == "pickled-object":
        tensors["extra"] = NotATensor()
    torch.save(tensors, model / "pytorch_model.bin")
    if fault == "truncated":
        truncate(model / "pytorch_model.bin")
    line = one_line_error(capsys, predict_args(model))
    why = "not a plain tensor checkpoint" if fault == "pickled-object" else "truncated"
    assert_names(line, str(model / "pytorch_model.bin"), why)
    assert "weights_only" not in line
