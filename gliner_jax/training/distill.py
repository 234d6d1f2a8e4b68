"""gliner's `compress_prompt_embeddings(distill=True)`: compress a model's label prompts, then fine-tune the compressed
model on what the uncompressed model predicts over the same texts, so that its quality recovers in one call.

gliner 0.2.29, which this follows: the uncompressed model predicts each text's entities (flat, at the distillation
threshold); each prediction becomes a training example of the text's whitespace words (`word_level_example`, labels
lower-cased as gliner writes them: a label with capitals then matches no stored label, and teaches nothing); the
prompts are compressed (`GLiNER.compress_prompt_embeddings`); the compressed model trains on the examples for
`epochs` epochs at one learning rate for every parameter (gliner's `create_training_args` defaults otherwise: weight
decay 0.01, linear schedule with 10% warmup, gradient norm 1, plain binary cross-entropy summed, every negative
label kept). Every example scores the stored labels (precomputed_prompts_mode).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from flax import nnx

from gliner_jax.data_formats import Example
from gliner_jax.model import GLiNER
from gliner_jax.training.config import DataSection, ModelSection, TrainConfig, TrainerSection
from gliner_jax.training.loss import LossConfig
from gliner_jax.training.optim import OptimizerConfig
from gliner_jax.training.trainer import Trainer

COMPRESSED_DIR = "compressed"  # the compressed model before fine-tuning
EXAMPLES_FILE = "distill.jsonl"  # the pseudo-labelled examples
RUN_DIR = "run"  # the fine-tuning run; its export (RUN_DIR/final) is the distilled model


def word_level_example(text: str, entities: Sequence[Mapping]) -> Example:
    """gliner's `_predictions_to_word_level`: the text's whitespace words, and each predicted entity whose bounds
    (stripped of surrounding spaces) are a word's start and a word's end as [first word, last word, label
    lower-cased]; the others are dropped."""
    words = text.split()
    starts, ends, cursor = {}, {}, 0
    for index, word in enumerate(words):
        start = text.index(word, cursor)
        cursor = start + len(word)
        starts[start], ends[cursor] = index, index
    ner = []
    for entity in entities:
        span = text[entity["start"] : entity["end"]]
        start = entity["start"] + len(span) - len(span.lstrip())
        end = entity["end"] - (len(span) - len(span.rstrip()))
        if start in starts and end in ends:
            ner.append([starts[start], ends[end], entity["label"].lower()])
    return {"tokenized_text": words, "ner": ner}


def compress_and_distill(
    model: GLiNER,
    texts: Sequence[str],
    labels: Sequence[str],
    output_dir: str | Path,
    *,
    batch_size: int = 8,
    threshold: float = 0.3,
    epochs: int = 3,
    learning_rate: float = 1e-5,
    distill_batch_size: int | None = None,
    seed: int = 0,
) -> GLiNER:
    """`model.compress_prompt_embeddings(texts, labels, batch_size=batch_size, distill=True)` as gliner runs it
    (gliner's `distill_threshold`, `distill_epochs`, `distill_lr`, `distill_batch_size` and `distill_output_dir`),
    the model changed in place and returned. `output_dir`, a new or empty folder, receives the compressed model
    (`compressed/`), the pseudo-labelled examples (`distill.jsonl`) and the fine-tuning run (`run/`, its checkpoints
    and metrics; `run/final` the distilled model). A relation model is refused: gliner's distillation reads its
    (entities, relations) predictions as entity lists and fails."""
    if model.config.is_relex:
        raise NotImplementedError("compress_and_distill: relation models are not supported (gliner's fails on them)")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    output = Path(output_dir)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ValueError(f"{output} exists and is not an empty folder: choose a new folder for the distillation")
    texts, labels = list(texts), list(labels)
    predictions = model.inference(texts, labels, flat_ner=True, threshold=threshold, batch_size=batch_size)
    examples = [word_level_example(text, found) for text, found in zip(texts, predictions, strict=True)]
    model.compress_prompt_embeddings(texts, labels, batch_size=batch_size)
    model.save_pretrained(output / COMPRESSED_DIR)
    (output / EXAMPLES_FILE).write_text("".join(json.dumps(example) + "\n" for example in examples), encoding="utf-8")
    size = distill_batch_size or batch_size
    steps = epochs * math.ceil(len(examples) / size)
    config = TrainConfig(
        model=ModelSection(init_from=str(output / COMPRESSED_DIR)),
        data=DataSection(train=str(output / EXAMPLES_FILE)),
        optimizer=OptimizerConfig(
            num_steps=steps,
            encoder_lr=learning_rate,
            others_lr=learning_rate,
            encoder_weight_decay=0.01,
            others_weight_decay=0.01,
            scheduler="linear",
            warmup_ratio=0.1,
            max_grad_norm=1.0,
        ),
        loss=LossConfig(alpha=-1.0, gamma=0.0, reduction="sum", negatives=1.0, masking="none"),
        trainer=TrainerSection(
            output_dir=str(output / RUN_DIR),
            num_steps=steps,
            global_batch_size=size,
            seed=seed,
            log_every=10,
            save_every=steps,
            keep_checkpoints=1,
        ),
    )
    Trainer(config).fit()
    distilled = GLiNER.from_pretrained(output / RUN_DIR / "final")
    nnx.update(model.model, nnx.state(distilled.model))
    return model
