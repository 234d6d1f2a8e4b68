"""GLiNER checkpoints in the layouts older gliner versions wrote, derived from a directory gliner 0.2.29 saved.

What each version wrote (read from their sources on PyPI):
- 0.1.x (flair-based; the v2.1 models): `torch.save(state_dict)` to pytorch_model.bin and the training namespace as
  gliner_config.json: `model_name` and training settings, no `encoder_config`, `class_token_index` or `vocab_size`,
  no tokenizer files. flair added [FLERT], then gliner <<ENT>> and <<SEP>>, and resized the embeddings to match;
  transformers then kept `embeddings.position_ids` as a persistent buffer.
- 0.2.0 - 0.2.x: pytorch_model.bin, the tokenizer files, and a config with `class_token_index` and `vocab_size` set
  but `encoder_config` null (the backbone config was read from `model_name` and not written back).
- later: `encoder_config` embedded; model.safetensors with `safe_serialization`.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes

BACKBONE_ID = "test-org/tiny-deberta-v3"  # the backbone's repo in the test cache, named by `model_name`
POSITION_IDS = "token_rep_layer.bert_layer.model.embeddings.position_ids"
WORD_EMBEDDINGS = "token_rep_layer.bert_layer.model.embeddings.word_embeddings.weight"
# Training settings that 0.1.x configs carry beside the model's fields (values as in urchade/gliner_small-v2.1).
OLD_TRAINING_KEYS = {
    "lr_encoder": "1e-5",
    "lr_others": "5e-5",
    "num_steps": 30000,
    "warmup_ratio": 0.1,
    "train_batch_size": 8,
    "eval_every": 5000,
    "shuffle_types": True,
    "random_drop": True,
    "size_sup": -1,
    "prev_path": "none",
    "log_dir": "logs",
    "train_data": "train.json",
    "name": "correct",
}
DROP = object()  # a config value meaning: the key is absent


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a checkpoint's files differ from what gliner 0.2.29 writes."""

    config: dict  # gliner_config.json keys to set (DROP: to remove)
    tokenizer: bool = True  # whether the tokenizer files are in the repo
    weights: str = "bin"  # "bin", "safetensors", "bf16" (bf16 safetensors) or "both" (a decoy .bin beside)
    extra_tensors: dict = dataclasses.field(default_factory=dict)
    rows_delta: int = 0  # embedding rows added (or cut) from the saved word embeddings


def layout_files(reference_dir: Path, layout: Layout) -> dict[str, bytes]:
    """The files of a repo holding `reference_dir`'s model in `layout`; `model_name` names BACKBONE_ID."""
    config = json.loads((reference_dir / "gliner_config.json").read_text()) | {"model_name": BACKBONE_ID}
    for key, value in layout.config.items():
        if value is DROP:
            config.pop(key, None)
        else:
            config[key] = value
    files = {"gliner_config.json": json.dumps(config, indent=2).encode()}
    if layout.tokenizer:
        files |= {name: (reference_dir / name).read_bytes() for name in ("tokenizer.json", "tokenizer_config.json")}
    state = torch.load(reference_dir / "pytorch_model.bin", weights_only=True)
    state |= layout.extra_tensors
    if layout.rows_delta:
        rows = state[WORD_EMBEDDINGS]
        extra = torch.zeros(max(layout.rows_delta, 0), rows.shape[1])
        state[WORD_EMBEDDINGS] = torch.cat([rows[: len(rows) + min(layout.rows_delta, 0)], extra])
    if layout.weights in ("bin", "both"):
        decoy = {k: torch.zeros_like(v) for k, v in state.items()} if layout.weights == "both" else state
        buffer = io.BytesIO()
        torch.save(decoy, buffer)
        files["pytorch_model.bin"] = buffer.getvalue()
    if layout.weights in ("safetensors", "bf16", "both"):
        if layout.weights == "bf16":
            state = {k: v.bfloat16() if v.is_floating_point() else v for k, v in state.items()}
        files["model.safetensors"] = safetensors_bytes({k: v.contiguous() for k, v in state.items()}, {"format": "pt"})
    return files


def backbone_files(backbone_dir: Path) -> dict[str, bytes]:
    """The backbone's repo as microsoft/deberta-v3-* hold it: config.json, spm.model, a minimal
    tokenizer_config.json (no tokenizer.json) and the weights."""
    files = {name: (backbone_dir / name).read_bytes() for name in ("config.json", "spm.model", "model.safetensors")}
    files["tokenizer_config.json"] = json.dumps({"do_lower_case": False, "vocab_type": "spm"}).encode()
    return files
