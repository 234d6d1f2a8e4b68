"""Fixtures of the parity tier: random PyTorch reference encoders and backbones, built at test time."""

from __future__ import annotations

import pytest

from gliner_jax.testing.builders import build_backbone
from tests.utils.encoders import TINY_HF, make_hf_encoder


@pytest.fixture
def saved_encoder(tmp_path):
    """Factory: save a random reference encoder (model.safetensors; DeBERTa-v3 unless `model_type` says otherwise)
    and return (model, dir)."""

    def build(seed: int = 0, model_type: str = "deberta-v2", **overrides):
        model = make_hf_encoder(model_type, seed, **overrides)
        directory = tmp_path / f"hf-{seed}-{len(list(tmp_path.iterdir()))}"
        model.save_pretrained(directory)
        return model, directory

    return build


@pytest.fixture(scope="session")
def family_backbone(tmp_path_factory):
    """Factory: the directory of a tiny random backbone of a model type (TINY_HF sizes) with a locally trained
    tokenizer of its kind, built once per session."""
    built = {}

    def get(model_type: str):
        if model_type not in built:
            config = {**TINY_HF[model_type], "model_type": model_type}
            built[model_type] = build_backbone(tmp_path_factory.mktemp(f"backbone-{model_type}"), config)
        return built[model_type]

    return get
