"""The learning benchmark's hyperparameter mapping: gliner's TrainingArguments fields and our run config, from one
set of settings (no training)."""

from __future__ import annotations

import dataclasses
import random
import types
from pathlib import Path

import pytest
from gliner.config import UniEncoderSpanConfig
from gliner.data_processing.processor import UniEncoderSpanProcessor
from gliner.training import TrainingArguments

from gliner_jax.bench.finetune_wnut import LABELS
from gliner_jax.bench.learning import (
    Settings,
    gliner_arguments,
    matched_records,
    our_config,
    settings_from_config,
    with_label_negatives,
)
from gliner_jax.training.config import load_train_config
from gliner_jax.training.data import sample_labels

SETTINGS = Settings(
    steps=120,
    batch_size=4,
    encoder_lr=2e-5,
    others_lr=7e-4,
    encoder_weight_decay=0.05,
    others_weight_decay=0.02,
    warmup_ratio=0.25,
    scheduler="cosine",
    max_grad_norm=0.5,
    adam_betas=(0.8, 0.99),
    adam_epsilon=1e-7,
    alpha=0.6,
    gamma=1.5,
    reduction="mean",
    negatives=0.7,
    masking="label",
    seed=3,
)


def test_gliner_arguments_are_the_settings_in_gliner_fields():
    expected = {
        "output_dir": "/out",
        "max_steps": 120,
        "per_device_train_batch_size": 4,
        "learning_rate": 2e-5,
        "weight_decay": 0.05,
        "others_lr": 7e-4,
        "others_weight_decay": 0.02,
        "warmup_ratio": 0.25,
        "lr_scheduler_type": "cosine",
        "max_grad_norm": 0.5,
        "adam_beta1": 0.8,
        "adam_beta2": 0.99,
        "adam_epsilon": 1e-7,
        "optim": "adamw_torch",
        "focal_loss_alpha": 0.6,
        "focal_loss_gamma": 1.5,
        "focal_loss_prob_margin": 0.0,
        "label_smoothing": 0.0,
        "loss_reduction": "mean",
        "negatives": 0.7,
        "masking": "label",
        "seed": 3,
        "use_cpu": True,
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_steps": 12,
        "report_to": "none",
        "dataloader_num_workers": 0,
        "remove_unused_columns": False,
    }
    arguments = gliner_arguments(SETTINGS, "/out")
    assert arguments == expected
    assert set(arguments) <= {field.name for field in dataclasses.fields(TrainingArguments)}


def test_our_config_is_the_same_settings():
    config = our_config(SETTINGS, "/start", "/train.jsonl", "/run")
    assert config.model.init_from == "/start" and config.data.train == "/train.jsonl"
    optimizer, trainer, loss = config.optimizer, config.trainer, config.loss
    assert (optimizer.num_steps, trainer.num_steps, trainer.global_batch_size, trainer.seed) == (120, 120, 4, 3)
    assert (optimizer.encoder_lr, optimizer.others_lr) == (2e-5, 7e-4)
    assert (optimizer.encoder_weight_decay, optimizer.others_weight_decay) == (0.05, 0.02)
    assert (optimizer.warmup_ratio, optimizer.num_warmup_steps, optimizer.scheduler) == (0.25, 30, "cosine")
    assert (optimizer.max_grad_norm, optimizer.b1, optimizer.b2, optimizer.eps) == (0.5, 0.8, 0.99, 1e-7)
    assert (loss.alpha, loss.gamma, loss.label_smoothing, loss.prob_margin) == (0.6, 1.5, 0.0, 0.0)
    assert (loss.reduction, loss.negatives, loss.masking) == ("mean", 0.7, "label")
    assert trainer.export and trainer.output_dir == "/run"


def test_the_wnut_config_holds_the_benchmark_settings():
    config = load_train_config(Path(__file__).parents[2] / "configs" / "wnut_minilm.yaml")
    assert settings_from_config(config) == Settings()
    assert settings_from_config(our_config(SETTINGS, "/start", "/train.jsonl", "/run")) == SETTINGS


def test_unshuffled_settings_read_the_records_in_file_order_on_both_sides():
    settings = dataclasses.replace(SETTINGS, shuffle=False)
    arguments = gliner_arguments(settings, "/out")
    assert arguments == gliner_arguments(SETTINGS, "/out") | {"train_sampling_strategy": "sequential"}
    assert "train_sampling_strategy" in {field.name for field in dataclasses.fields(TrainingArguments)}
    config = our_config(settings, "/start", "/train.jsonl", "/run")
    assert config.data.shuffle is False and settings_from_config(config) == settings


def test_a_setting_gliner_cannot_be_given_is_refused():
    config = our_config(SETTINGS, "/start", "/train.jsonl", "/run")
    config = dataclasses.replace(config, loss=dataclasses.replace(config.loss, label_smoothing=0.1))
    with pytest.raises(ValueError, match=r"^loss\.label_smoothing: the learning benchmark maps only"):
        settings_from_config(config)


def test_every_training_tweet_is_trained_against_every_label():
    """The train split's "ner_negatives": gliner's processor and our sampler then give each example all ten labels
    (an example without entities too), as the dev evaluation does."""
    labels = LABELS
    examples = [
        {"tokenized_text": ["Obama", "in", "Paris"], "ner": [[0, 0, "person"], [2, 2, "location"]]},
        {"tokenized_text": ["lol"], "ner": []},
        {"tokenized_text": ["Lakers", "beat", "Celtics"], "ner": [[0, 0, "sports team"], [2, 2, "sports team"]]},
    ]
    records = with_label_negatives(examples, labels)
    assert records[0]["ner_negatives"] == [label for label in labels if label not in ("person", "location")]
    assert records[1]["ner_negatives"] == labels and records[0]["ner"] == examples[0]["ner"]
    config = UniEncoderSpanConfig(max_width=8, encoder_config={"model_type": "deberta-v2"})
    stub_tokenizer = types.SimpleNamespace(unk_token="[UNK]", pad_token="[PAD]")
    processor = UniEncoderSpanProcessor(config, stub_tokenizer, None)
    theirs, _ = processor.batch_generate_class_mappings(records)
    assert [sorted(mapping) for mapping in theirs] == [labels] * 3
    ours = sample_labels(records, random.Random(0), max_types=config.max_types)
    assert [sorted(row) for row in ours] == [labels] * 3


def test_matched_records_leave_neither_sampler_a_draw():
    """--same-batches and --matched runs: passes over the examples, each in its own order, each record with all ten
    labels in its own order as "ner_labels", which gliner's processor and our sampler both take as they are."""
    examples = with_label_negatives(
        [{"tokenized_text": [f"w{i}"], "ner": [[0, 0, LABELS[i % 3]]] if i % 2 else []} for i in range(5)], LABELS
    )
    records = matched_records(examples, LABELS, 12, seed=4)
    assert records == matched_records(examples, LABELS, 12, seed=4) != matched_records(examples, LABELS, 12, seed=5)
    texts = [record["tokenized_text"] for record in records]
    assert sorted(texts[:5]) == sorted(texts[5:10]) == sorted(example["tokenized_text"] for example in examples)
    assert texts[:5] != texts[5:10] and len(records) == 12
    assert all("ner_negatives" not in record and sorted(record["ner_labels"]) == LABELS for record in records)
    config = UniEncoderSpanConfig(max_width=8, encoder_config={"model_type": "deberta-v2"})
    processor = UniEncoderSpanProcessor(config, types.SimpleNamespace(unk_token="[UNK]", pad_token="[PAD]"), None)
    theirs, _ = processor.batch_generate_class_mappings(records)
    assert [list(mapping) for mapping in theirs] == [record["ner_labels"] for record in records]
    assert sample_labels(records, random.Random(0)) == [record["ner_labels"] for record in records]
