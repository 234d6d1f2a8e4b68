"""Self-training (GLiNER multi-task paper, section 2.3): pseudo-label unlabelled texts with a model, fine-tune the
model on them with label smoothing, and report span F1 on a labelled dev set before and after."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from gliner_jax.data_formats import Example, Split, labels_of, read_examples, read_text_records, record_words
from gliner_jax.evaluation import Scores, evaluate_examples
from gliner_jax.model import GLiNER
from gliner_jax.text.words import split_words
from gliner_jax.training.config import TrainConfig
from gliner_jax.training.model_init import ModelWordSplitter
from gliner_jax.training.trainer import Trainer

PSEUDO_LABELS_FILE = "pseudo_labels.jsonl"


def read_unlabelled(path: str | Path, text_format: str = "auto", split: Split = split_words) -> list[list[str]]:
    """Texts to pseudo-label, as word lists (`data_formats.read_text_records`: plain lines, JSONL or a JSON list of
    records with "tokenized_text" or "text", as `text_format` says; texts split into words by `split`, the model's
    word splitter)."""
    return [record_words(record, split) for record in read_text_records(path, text_format)]


def pseudo_label(
    model: GLiNER, word_lists: Sequence[Sequence[str]], labels: Sequence[str], *, threshold: float, batch_size: int
) -> list[Example]:
    """Training examples whose entities are the model's predictions at `threshold` (flat NER)."""
    predictions = model.predict_words(word_lists, list(labels), threshold, batch_size=batch_size, progress=True)
    return [
        {"tokenized_text": list(words), "ner": [[start, end, label] for start, end, label, _ in spans]}
        for words, spans in zip(word_lists, predictions, strict=True)
    ]


@dataclasses.dataclass(frozen=True)
class SelfTrainingReport:
    """Dev scores before and after fine-tuning on the pseudo-labels, and what was pseudo-labelled."""

    before: Scores
    after: Scores
    texts: int
    pseudo_entities: int
    model_dir: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def self_train(
    config: TrainConfig,
    unlabelled: str | Path,
    *,
    labels: Sequence[str] | None = None,
    threshold: float = 0.5,
    batch_size: int = 16,
    text_format: str = "auto",
) -> SelfTrainingReport:
    """Pseudo-label `unlabelled` (read in `text_format`) with the model of `config.model.init_from`, fine-tune it on
    them with `config` (its data.train is replaced by the pseudo-labels), and score both models on
    `config.data.dev`."""
    if config.model.init_from is None or config.data.dev is None:
        raise ValueError("self-training needs model.init_from (the model to improve) and data.dev (labelled)")
    dev, _ = read_examples(config.data.dev, strict=config.data.strict)
    split = ModelWordSplitter(config.model)  # the model's, read from its config
    word_lists = read_unlabelled(unlabelled, text_format, split)  # a bad file is refused before the model is loaded
    if labels is None:
        labels = labels_of(dev)
    model = GLiNER.from_pretrained(config.model.init_from)
    before, _ = evaluate_examples(model, dev, labels=list(labels), threshold=threshold, batch_size=batch_size)

    output_dir = Path(config.trainer.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    examples = pseudo_label(model, word_lists, labels, threshold=threshold, batch_size=batch_size)
    pseudo_file = output_dir / PSEUDO_LABELS_FILE
    pseudo_file.write_text("".join(json.dumps(example) + "\n" for example in examples), encoding="utf-8")

    tuned = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, train=str(pseudo_file), sources=()),
        trainer=dataclasses.replace(config.trainer, export=True),
    )
    Trainer(tuned).fit()
    final = output_dir / "final"
    after, _ = evaluate_examples(
        GLiNER.from_pretrained(final), dev, labels=list(labels), threshold=threshold, batch_size=batch_size
    )
    return SelfTrainingReport(
        before=before,
        after=after,
        texts=len(examples),
        pseudo_entities=sum(len(example["ner"]) for example in examples),
        model_dir=str(final),
    )
