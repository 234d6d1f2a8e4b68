"""GLiNER span and token models against the `gliner` PyTorch package: logits, export, round trips, errors."""

from __future__ import annotations

import json
import shutil

import gliner
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from gliner_jax import GLiNER
from gliner_jax.checkpoint_io import CheckpointMismatchError, gliner_table, load_gliner, state_to_torch
from gliner_jax.testing.builders import build_reference
from tests.utils.gliner_parity import (
    PER_TEXT_LABELS,
    SHARED_LABELS,
    TEXTS,
    assert_export_equals_reference,
    assert_logits_close,
    assert_training_network_matches,
    network_inputs,
    reference_logits,
)

# The span head with and without the encoder projection and the BiLSTM (1 or 2 layers run one loop), and without the
# label token; the token head once.
CASES = {
    "span_projection_rnn1": dict(span_mode="markerV0", hidden_size=48, num_rnn_layers=1, max_width=4),
    "span_no_projection_rnn2": dict(span_mode="markerV0", hidden_size=64, num_rnn_layers=2, max_width=3),
    "span_no_rnn_label_token": dict(span_mode="markerV0", hidden_size=48, num_rnn_layers=0, embed_ent_token=False),
    "token_projection_rnn2": dict(span_mode="token_level", hidden_size=48, num_rnn_layers=2),
    # Other backbones (gliner builds them with AutoModel); `backbone` names the model type, each encoder's code once
    # (XLM-R runs RoBERTa's; the heads run the same code on every backbone). Slow: their pipeline and entities are
    # checked in tests/parity/test_backbones_vs_gliner.py; here also gradients, export and round trips.
    "bert_span_projection": dict(backbone="bert", span_mode="markerV0", hidden_size=48, max_width=4),
    "roberta_token_rnn1": dict(backbone="roberta", span_mode="token_level", hidden_size=40, num_rnn_layers=1),
    "modernbert_span": dict(backbone="modernbert", span_mode="markerV0", hidden_size=48, max_width=4),
}


@pytest.fixture(
    scope="module",
    params=[pytest.param(name, marks=pytest.mark.slow) if "backbone" in case else name for name, case in CASES.items()],
)
def reference(request, gliner_backbone, family_backbone, tmp_path_factory):
    """(case name, reference gliner model, its saved directory)."""
    directory = tmp_path_factory.mktemp(request.param)
    case = dict(CASES[request.param])
    backbone = family_backbone(case.pop("backbone")) if "backbone" in case else gliner_backbone
    return request.param, build_reference(backbone, directory, **case), directory


def test_training_network_matches_reference(reference):
    """Our network as training runs it, fed the reference's own collated tensors: its logits and every parameter's
    gradient (the span head computes its scores by its training path)."""
    _, ref, directory = reference
    assert_training_network_matches(ref, directory, TEXTS, PER_TEXT_LABELS)


@pytest.mark.parametrize("reference", ["span_projection_rnn1", "token_projection_rnn2"], indirect=True)
def test_bfloat16_compute_close_to_reference(reference):
    """bfloat16 compute (float32 parameters, softmax and LayerNorm statistics) stays within 3% of the float32
    reference's logits (relative L2; float32 is within 1e-5); scripts/device_check.sh runs this on the GPU."""
    _, ref, directory = reference
    batch, ref_logits = reference_logits(ref, TEXTS, PER_TEXT_LABELS)
    model, config = load_gliner(directory, dtype=jnp.bfloat16)
    ours = np.asarray(model(**network_inputs(batch, config)).astype(jnp.float32))
    error = np.linalg.norm(ours - ref_logits) / np.linalg.norm(ref_logits)
    assert error <= 3e-2, error


def test_pipeline_matches_reference(reference):
    """Texts and labels in, logits out: our processing and network (eval mode) against the reference's, labels per
    text exactly and shared ones in bucketed batches (W, K, C padded further)."""
    _, ref, directory = reference
    model = GLiNER.from_pretrained(directory)
    assert_logits_close(
        model.batch_logits(TEXTS, PER_TEXT_LABELS, bucket=False)[1], reference_logits(ref, TEXTS, PER_TEXT_LABELS)[1]
    )
    _, ref_logits = reference_logits(ref, TEXTS, SHARED_LABELS)
    _, bucketed = model.batch_logits(TEXTS, SHARED_LABELS, bucket=True)
    num_words = ref_logits.shape[1]
    assert bucketed.shape[1] > num_words
    if model.config.span_mode != "token_level":  # [B, W, K, C]
        region = bucketed[:, :num_words, :, : ref_logits.shape[3]]
    else:  # [B, W, C, 3]
        region = bucketed[:, :num_words, : ref_logits.shape[2]]
    assert_logits_close(region, ref_logits)


def test_export_loads_in_gliner_identically(reference, tmp_path):
    _, ref, directory = reference
    ours = GLiNER.from_pretrained(directory)
    # Strict check: the exported tensors are the reference model's keys and shapes, one for one, bit for bit.
    exported = assert_export_equals_reference(ours, ref, tmp_path)
    ref.model.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)

    assert json.loads((tmp_path / "gliner_config.json").read_text()) == json.loads(
        (directory / "gliner_config.json").read_text()
    )
    reloaded = gliner.GLiNER.from_pretrained(str(tmp_path), local_files_only=True)
    assert type(reloaded) is type(ref)
    _, expected = reference_logits(ref, TEXTS, PER_TEXT_LABELS)
    _, again = reference_logits(reloaded, TEXTS, PER_TEXT_LABELS)
    np.testing.assert_array_equal(again, expected)
    # And the export (model.safetensors, not the reference's pytorch_model.bin) loads back here.
    assert_logits_close(
        GLiNER.from_pretrained(tmp_path).batch_logits(TEXTS, PER_TEXT_LABELS, bucket=False)[1], expected
    )


def test_native_format_round_trip(reference, tmp_path, capsys):
    """torch -> native jax -> torch reproduces every tensor bit for bit, via the convert command."""
    from gliner_jax.cli import main

    _, ref, directory = reference
    assert main(["convert", str(directory), str(tmp_path / "jax")]) == 0
    summary = capsys.readouterr().out
    assert "(torch -> jax)" in summary
    assert f"{sum(p.numel() for p in ref.model.parameters()):,} parameters" in summary
    assert "tokenizer files written: tokenizer.json, tokenizer_config.json" in summary
    assert (tmp_path / "jax" / "flax_params.safetensors").exists()
    assert main(["convert", str(tmp_path / "jax"), str(tmp_path / "torch")]) == 0
    back = load_file(tmp_path / "torch" / "model.safetensors")
    for key, tensor in ref.model.state_dict().items():
        np.testing.assert_array_equal(back[key], tensor.numpy(), err_msg=key)
    reloaded = gliner.GLiNER.from_pretrained(str(tmp_path / "torch"), local_files_only=True)
    np.testing.assert_array_equal(
        reference_logits(reloaded, TEXTS, SHARED_LABELS)[1], reference_logits(ref, TEXTS, SHARED_LABELS)[1]
    )


def test_table_covers_reference_state_dict(reference):
    _, ref, directory = reference
    model, config = load_gliner(directory)
    assert {m.torch_key for m in gliner_table(config)} == set(ref.model.state_dict())
    assert set(state_to_torch(model, gliner_table(config))) == set(ref.model.state_dict())


@pytest.fixture(scope="module")
def span_reference_dir(gliner_backbone, tmp_path_factory):
    directory = tmp_path_factory.mktemp("span_for_errors")
    build_reference(gliner_backbone, directory, **CASES["span_projection_rnn1"])
    return directory


def _copy_with_weights(source, target, edit):
    shutil.copytree(source, target)
    state = torch.load(target / "pytorch_model.bin", weights_only=True)
    edit(state)
    torch.save(state, target / "pytorch_model.bin")
    return target


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop("rnn.lstm.bias_hh_l0_reverse"), "missing tensors: ['rnn.lstm.bias_hh_l0_reverse']"),
        (lambda s: s.update({"span_rep_layer.extra": torch.ones(2)}), "unexpected tensors: ['span_rep_layer.extra']"),
        (
            lambda s: s.update({"prompt_rep_layer.0.weight": torch.ones(10, 48)}),
            "prompt_rep_layer.0.weight: file has (10, 48), model needs (192, 48)",
        ),
    ],
    ids=["missing", "unexpected", "mis-shaped"],
)
def test_bad_weights_name_the_tensor(span_reference_dir, tmp_path, edit, message):
    directory = _copy_with_weights(span_reference_dir, tmp_path / "bad", edit)
    with pytest.raises(CheckpointMismatchError) as err:
        GLiNER.from_pretrained(directory)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        # Values gliner 0.2.29 rejects too ("token-level" makes it build a span model that fails on it).
        ({"span_mode": "token-level"}, ValueError, "span_mode='token-level'"),
        ({"span_mode": "markerV3"}, ValueError, "span_mode='markerV3'"),
        ({"subtoken_pooling": "sum"}, ValueError, "subtoken_pooling='sum'"),
    ],
)
def test_unsupported_config_is_refused(span_reference_dir, tmp_path, change, error, message):
    directory = shutil.copytree(span_reference_dir, tmp_path / "bad")
    config = json.loads((directory / "gliner_config.json").read_text())
    (directory / "gliner_config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(error, match=message):
        GLiNER.from_pretrained(directory)


def test_unsupported_encoder_config_is_refused(span_reference_dir, tmp_path):
    directory = shutil.copytree(span_reference_dir, tmp_path / "bad")
    config = json.loads((directory / "gliner_config.json").read_text())
    config["encoder_config"]["conv_kernel_size"] = 3
    (directory / "gliner_config.json").write_text(json.dumps(config))
    with pytest.raises(NotImplementedError, match="conv_kernel_size"):
        GLiNER.from_pretrained(directory)
