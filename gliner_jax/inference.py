"""`GLiNER`: a GLiNER network with its tokenizer and input pipeline, in gliner's directory format."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from gliner_jax.checkpoint_io import load_any, save_gliner, save_native
from gliner_jax.config import GLiNERConfig
from gliner_jax.modeling.gliner import GLiNERModel
from gliner_jax.processing import Batch, Processor

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


@nnx.jit
def _forward(model: GLiNERModel, batch: dict[str, jax.Array | None]) -> jax.Array:
    return model(**batch)


class GLiNER:
    """A GLiNER model (span `markerV0` or token `token_level`) that reads and writes `gliner` directories."""

    def __init__(self, model: GLiNERModel, config: GLiNERConfig, tokenizer: PreTrainedTokenizerBase):
        self.model = model
        self.config = config
        self.tokenizer = tokenizer
        self.processor = Processor.from_config(config, tokenizer)
        if tokenizer.convert_tokens_to_ids(config.ent_token) != config.class_token_index:
            raise ValueError(
                f"the tokenizer's id for {config.ent_token!r} is {tokenizer.convert_tokens_to_ids(config.ent_token)}, "
                f"but the config's class_token_index is {config.class_token_index}"
            )

    @classmethod
    def from_pretrained(cls, path: str | Path, *, dtype: jax.typing.DTypeLike = jnp.float32) -> GLiNER:
        """Load a directory written by `gliner.GLiNER.save_pretrained`, or by `save_pretrained` here."""
        path = Path(path)
        if not (path / TOKENIZER_CONFIG_FILE).exists():
            raise FileNotFoundError(f"no {TOKENIZER_CONFIG_FILE} in {path}: the tokenizer must be saved with the model")
        model, config = load_any(path, dtype=dtype)
        return cls(model, config, AutoTokenizer.from_pretrained(path, local_files_only=True))

    def save_pretrained(self, path: str | Path, *, native: bool = False) -> None:
        """Write a directory that `gliner.GLiNER.from_pretrained(path)` loads with every key matched.

        `native=True` writes our own parameter layout instead (flax_params.safetensors), which only
        gliner-jax reads.
        """
        (save_native if native else save_gliner)(self.model, self.config, path)
        self.tokenizer.save_pretrained(path)

    def batch_logits(
        self, texts: list[str], labels: list[str] | list[list[str]], *, bucket: bool = True
    ) -> tuple[Batch, np.ndarray]:
        """The processed batch and the raw logits: span [B, W, K, C] or token [B, W, C, 3]."""
        batch = self.processor.prepare(texts, labels, bucket=bucket)
        return batch, np.asarray(_forward(self.model, model_inputs(batch)))


def model_inputs(batch: Batch) -> dict[str, jax.Array | None]:
    """The arrays of `batch` that `GLiNERModel` takes, as device arrays."""
    arrays = {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "words_mask": batch.words_mask,
        "words_valid": batch.words_valid,
        "labels_valid": batch.labels_valid,
        "span_idx": batch.span_idx,
        "span_mask": batch.span_mask,
    }
    return {k: None if v is None else jnp.asarray(v) for k, v in arrays.items()}
