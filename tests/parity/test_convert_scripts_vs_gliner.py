"""The documented converters in convert/, run as a user runs them (their own processes)."""

from __future__ import annotations

import sys

import gliner
import numpy as np
import torch
import transformers
from safetensors.numpy import load_file

from gliner_jax.testing.builders import build_reference, train_tokenizer
from tests.utils import fresh
from tests.utils.encoders import TINY_V3, random_batch, torch_forward
from tests.utils.fresh import ROOT


def run_script(name: str, *args: str) -> str:
    return fresh.run([sys.executable, str(ROOT / "convert" / name), *args], fresh.fresh_env()).stdout


def test_gliner_checkpoint_round_trip(gliner_backbone, tmp_path):
    reference = build_reference(gliner_backbone, tmp_path / "torch", span_mode="markerV0", hidden_size=48)
    assert "(torch -> jax)" in run_script("gliner_checkpoint.py", str(tmp_path / "torch"), str(tmp_path / "jax"))
    assert (tmp_path / "jax" / "flax_params.safetensors").exists()
    assert "(jax -> torch)" in run_script("gliner_checkpoint.py", str(tmp_path / "jax"), str(tmp_path / "back"))
    back = load_file(tmp_path / "back" / "model.safetensors")
    for key, tensor in reference.model.state_dict().items():
        np.testing.assert_array_equal(back[key], tensor.numpy(), err_msg=key)
    gliner.GLiNER.from_pretrained(str(tmp_path / "back"), local_files_only=True, strict=True)


def test_hf_encoder_drops_the_task_head(tmp_path):
    """A masked-LM checkpoint in pytorch_model.bin becomes the base model, exactly."""
    tokenizer = train_tokenizer(tmp_path / "src")
    torch.manual_seed(0)
    config = transformers.DebertaV2Config(**{**TINY_V3, "vocab_size": len(tokenizer)})
    masked_lm = transformers.DebertaV2ForMaskedLM(config).eval()
    masked_lm.save_pretrained(tmp_path / "src", safe_serialization=False)
    out = run_script("hf_encoder.py", str(tmp_path / "src"), str(tmp_path / "dst"))
    assert "DebertaModel" in out and "tokenizer_config.json" in out
    base = transformers.DebertaV2Model.from_pretrained(tmp_path / "dst").eval()
    ids, mask = random_batch(len(tokenizer), [9, 5])
    np.testing.assert_array_equal(torch_forward(base, ids, mask), torch_forward(masked_lm.deberta, ids, mask))
    transformers.AutoTokenizer.from_pretrained(tmp_path / "dst")
