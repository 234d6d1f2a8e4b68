"""Reference GLiNER models built offline with the `gliner` PyTorch package (random weights)."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import make_tokenizer_dir, make_torch_encoder


def build_backbone(directory: Path) -> Path:
    """A tiny random DeBERTa-v3 and its locally trained tokenizer, saved together (gliner's `model_name`)."""
    tokenizer = make_tokenizer_dir(directory)
    make_torch_encoder(vocab_size=len(tokenizer)).save_pretrained(directory)
    return directory


def build_reference(backbone: Path, directory: Path, seed: int = 0, **config):
    """A `gliner.GLiNER` over `backbone` with `config` (span_mode, hidden_size, ...), saved to `directory`.

    Every head parameter is perturbed so that biases and LayerNorms are not at their init values.
    """
    import gliner

    torch.manual_seed(seed)
    model = gliner.GLiNER.from_config(
        gliner.GLiNERConfig(model_name=str(backbone), **config), backbone_from_pretrained=True, local_files_only=True
    )
    with torch.no_grad():
        for name, param in model.model.named_parameters():
            if not name.startswith("token_rep_layer.bert_layer"):
                param.add_(0.05 * torch.randn_like(param))
    model.eval()
    model.save_pretrained(directory)
    return model
