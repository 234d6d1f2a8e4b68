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


# The last Linear of each head; scaled so that random logits spread over several units, not ~0.
LAST_HEAD_LAYERS = ("prompt_rep_layer.3.weight", "scorer.out_mlp.3.weight")


def build_reference(backbone: Path, directory: Path, seed: int = 0, logit_scale: float = 30.0, **config):
    """A `gliner.GLiNER` over `backbone` with `config` (span_mode, hidden_size, ...), saved to `directory`.

    Every head parameter is perturbed so that biases are not at their init values, and the last
    head layer is scaled by `logit_scale`.
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
            if name in LAST_HEAD_LAYERS:
                param.mul_(logit_scale)
    model.eval()
    model.save_pretrained(directory)
    return model
