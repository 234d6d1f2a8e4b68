"""The training loss against gliner's own focal loss, span/token model losses and label-building processors."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from gliner.config import UniEncoderSpanConfig, UniEncoderTokenConfig
from gliner.data_processing.processor import UniEncoderSpanProcessor, UniEncoderTokenProcessor
from gliner.modeling import base as gliner_base
from gliner.modeling.base import UniEncoderSpanModel, UniEncoderTokenModel
from gliner.modeling.loss_functions import focal_loss_with_logits as ref_focal
from gliner.training.trainer import TrainingArguments

from gliner_jax.training.loss import LossConfig, focal_loss_with_logits, gliner_loss, span_targets, token_targets

K = 4  # max_width
POOL = [f"type{i}" for i in range(7)]
LENGTHS = [9, 1, 6, 12]  # words per row; the batch pads to W = 16 words
W_PAD, C_PAD = 16, 8
STUB_TOKENIZER = types.SimpleNamespace(unk_token="[UNK]", pad_token="[PAD]")  # the processors never tokenize here


def close(ours, ref, rtol=1e-6, atol=1e-6) -> None:
    np.testing.assert_allclose(np.asarray(ours, np.float64), np.asarray(ref, np.float64), rtol=rtol, atol=atol)


def random_examples(seed: int) -> tuple[list[dict], list[list[str]]]:
    """gliner training examples (entities inside the text, some wider than K, some duplicated spans with another
    label, some labels outside the row's classes) and per-row class lists of different sizes."""
    rng = np.random.default_rng(seed)
    examples, classes = [], []
    for n in LENGTHS:
        row_classes = list(rng.choice(POOL, size=int(rng.integers(1, 6)), replace=False))
        ner, seen = [], set()
        for _ in range(int(rng.integers(0, n + 2))):
            s = int(rng.integers(0, n))
            e = int(min(n - 1, s + rng.integers(0, K + 2)))
            if (s, e) in seen and rng.random() < 0.7:
                continue
            seen.add((s, e))
            ner.append([s, e, str(rng.choice(POOL))])
        examples.append({"tokenized_text": [f"w{i}" for i in range(n)], "ner": ner})
        classes.append(row_classes)
    return examples, classes


def entities_array(examples: list[dict], classes: list[list[str]], size: int = 32) -> np.ndarray:
    """The batch contract's `entities`; an entity whose label is not a class of its row keeps its span with class
    id 0, which the loss must ignore like padding."""
    out = np.zeros((len(examples), size, 3), np.int32)
    for row, (example, row_classes) in enumerate(zip(examples, classes, strict=True)):
        for j, (s, e, label) in enumerate(example["ner"]):
            out[row, j] = (s, e, row_classes.index(label) + 1 if label in row_classes else 0)
    return out


@functools.cache
def processors() -> tuple[UniEncoderSpanProcessor, UniEncoderTokenProcessor]:
    encoder = {"model_type": "deberta-v2"}
    span = UniEncoderSpanProcessor(UniEncoderSpanConfig(max_width=K, encoder_config=encoder), STUB_TOKENIZER, None)
    token = UniEncoderTokenProcessor(UniEncoderTokenConfig(max_width=K, encoder_config=encoder), STUB_TOKENIZER, None)
    return span, token


def reference_batch(seed: int, span: bool) -> tuple[dict, dict]:
    """gliner's labels and masks for random examples, and the same batch in our contract, padded further (W_PAD
    words, C_PAD classes)."""
    examples, classes = random_examples(seed)
    processor = processors()[0 if span else 1]
    raw = processor.collate_raw_batch(examples, entity_types=classes)
    assert [list(m) for m in raw["classes_to_id"]] == classes
    n_max, c_max = max(LENGTHS), max(map(len, classes))
    ref = {
        "labels": processor.create_labels(raw),
        "prompts_mask": torch.tensor([[c < len(cl) for c in range(c_max)] for cl in classes], dtype=torch.float32),
        "word_mask": torch.tensor([[w < n for w in range(n_max)] for n in LENGTHS], dtype=torch.float32),
    }
    ours = {
        "entities": entities_array(examples, classes),
        "labels_valid": np.array([[c < len(cl) for c in range(C_PAD)] for cl in classes]),
        "words_valid": np.array([[w < n for w in range(W_PAD)] for n in LENGTHS]),
    }
    if span:
        ref["span_mask"] = raw["span_mask"]
        ours["span_mask"] = np.zeros((len(LENGTHS), W_PAD * K), bool)
        ours["span_mask"][:, : n_max * K] = raw["span_mask"].numpy()
    return ref, ours


def padded_logits(shape_ref: tuple[int, ...], shape_ours: tuple[int, ...], seed: int) -> np.ndarray:
    """Random logits of our padded shape; the padding holds huge values that must not count."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 50.0, shape_ours).astype(np.float32)
    logits[tuple(slice(0, n) for n in shape_ref)] = rng.normal(0.0, 3.0, shape_ref).astype(np.float32)
    return logits


# ---- elementwise focal loss ----


@pytest.mark.parametrize(("alpha", "gamma"), list(itertools.product([-1.0, 0.0, 0.25, 0.75], [0.0, 0.5, 2.0])))
def test_focal_loss_matches_gliner(alpha, gamma):
    rng = np.random.default_rng(0)
    logits = np.concatenate([rng.normal(0, 4, 500), [-40.0, -15.0, -3.0, 0.0, 3.0, 15.0, 40.0]]).astype(np.float32)
    targets = (rng.random(logits.shape) < 0.4).astype(np.float32)
    for label_smoothing, prob_margin in itertools.product([0.0, 0.1], [0.0, 0.3]):
        kwargs = dict(alpha=alpha, gamma=gamma, label_smoothing=label_smoothing, prob_margin=prob_margin)
        ours = focal_loss_with_logits(jnp.asarray(logits), jnp.asarray(targets), **kwargs)
        ref = ref_focal(torch.from_numpy(logits), torch.from_numpy(targets), reduction="none", **kwargs)
        assert ours.dtype == jnp.float32
        close(ours, ref)
    assert float(jnp.max(ours)) <= -np.log(1e-6) * 1.0001  # clamped logs bound every element


def test_focal_loss_computes_in_float32_for_bfloat16_logits():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(0, 4, 300), jnp.bfloat16)
    targets = (rng.random(300) < 0.5).astype(np.float32)
    kwargs = dict(alpha=0.75, gamma=2.0, label_smoothing=0.0, prob_margin=0.0)
    ours = focal_loss_with_logits(logits, jnp.asarray(targets), **kwargs)
    ref = ref_focal(torch.tensor(np.asarray(logits.astype(jnp.float32))), torch.from_numpy(targets), **kwargs)
    assert ours.dtype == jnp.float32
    close(ours, ref)


# ---- dense targets ----


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_span_targets_equal_gliner_span_labels(seed):
    ref, ours = reference_batch(seed, span=True)
    labels = ref["labels"].numpy()  # [B, n_max * K, c_max]
    targets = np.asarray(span_targets(jnp.asarray(ours["entities"]), W_PAD, K, C_PAD))
    assert targets.shape == (len(LENGTHS), W_PAD * K, C_PAD)
    np.testing.assert_array_equal(targets[:, : labels.shape[1], : labels.shape[2]], labels)
    assert targets.sum() == labels.sum() > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_token_targets_equal_gliner_token_labels(seed):
    ref, ours = reference_batch(seed, span=False)
    labels = ref["labels"].numpy()  # [B, n_max, c_max, 3]
    targets = np.asarray(token_targets(jnp.asarray(ours["entities"]), W_PAD, C_PAD))
    assert targets.shape == (len(LENGTHS), W_PAD, C_PAD, 3)
    np.testing.assert_array_equal(targets[:, : labels.shape[1], : labels.shape[2]], labels)
    assert targets.sum() == labels.sum() > 0


# ---- whole losses ----


def reference_kwargs(config: LossConfig) -> dict:
    """The loss settings as keyword arguments of gliner's model `loss` methods."""
    return dict(
        alpha=config.alpha,
        gamma=config.gamma,
        prob_margin=config.prob_margin,
        label_smoothing=config.label_smoothing,
        reduction=config.reduction,
        negatives=config.negatives,
        masking=config.masking,
    )


SPAN_CONFIGS = [
    LossConfig(),
    LossConfig(reduction="mean"),
    LossConfig(alpha=0.75, gamma=2.0, label_smoothing=0.1, prob_margin=0.2, reduction="mean"),
    LossConfig(alpha=0.25, gamma=1.0, masking="global", negatives=0.3),
    LossConfig(masking="label", negatives=0.4, reduction="mean"),
    LossConfig(label_smoothing=0.2, masking="span", negatives=0.5),
]


@pytest.mark.parametrize("config", SPAN_CONFIGS, ids=lambda c: f"{c.reduction}-{c.masking}-{c.negatives}")
def test_span_loss_matches_gliner(config, monkeypatch):
    ref, ours = reference_batch(3, span=True)
    b, n_max, c_max = len(LENGTHS), max(LENGTHS), ref["labels"].shape[-1]
    logits = padded_logits((b, n_max, K, c_max), (b, W_PAD, K, C_PAD), seed=4)
    key = jax.random.key(7)
    # Both sides use the same uniform draws: ours are jax.random.uniform(key, [B, W*K, C]) (documented).
    draws = np.asarray(jax.random.uniform(key, (b, W_PAD * K, C_PAD)))[:, : n_max * K, :c_max]

    def rand_like(tensor):
        assert tuple(tensor.shape) == draws.shape
        return torch.from_numpy(draws.copy()).to(tensor.dtype)

    monkeypatch.setattr(gliner_base.torch, "rand_like", rand_like)
    ref_logits = np.ascontiguousarray(logits[:, :n_max, :, :c_max])
    ref_in = torch.from_numpy(ref_logits).requires_grad_()
    ref_loss = UniEncoderSpanModel.__new__(UniEncoderSpanModel).loss(
        ref_in, ref["labels"], ref["prompts_mask"], ref["span_mask"], **reference_kwargs(config)
    )
    ref_loss.backward()

    loss_fn = jax.jit(jax.value_and_grad(gliner_loss), static_argnums=2)
    loss, grad = loss_fn(jnp.asarray(logits), {k: jnp.asarray(v) for k, v in ours.items()}, config, key)
    close(loss, ref_loss.detach())
    grad = np.asarray(grad)
    close(grad[:, :n_max, :, :c_max], ref_in.grad, rtol=1e-5, atol=1e-7)
    inside = np.zeros(grad.shape, bool)
    inside[:, :n_max, :, :c_max] = True
    assert not grad[~inside].any()  # padded words and classes get no gradient


TOKEN_CONFIGS = [
    LossConfig(),
    LossConfig(reduction="mean"),
    LossConfig(alpha=0.75, gamma=2.0, label_smoothing=0.1, prob_margin=0.2, reduction="mean", negatives=0.3),
    LossConfig(alpha=0.25, gamma=0.5, masking="span", negatives=0.1),
]


@pytest.mark.parametrize("config", TOKEN_CONFIGS, ids=lambda c: f"{c.reduction}-{c.masking}-{c.negatives}")
def test_token_loss_matches_gliner(config):
    """The token model ignores masking and negatives, as gliner's token loss does."""
    ref, ours = reference_batch(5, span=False)
    b, n_max, c_max = len(LENGTHS), max(LENGTHS), ref["labels"].shape[2]
    logits = padded_logits((b, n_max, c_max, 3), (b, W_PAD, C_PAD, 3), seed=6)
    ref_in = torch.from_numpy(np.ascontiguousarray(logits[:, :n_max, :c_max])).requires_grad_()
    ref_loss = UniEncoderTokenModel.__new__(UniEncoderTokenModel).loss(
        ref_in, ref["labels"], ref["prompts_mask"], ref["word_mask"], **reference_kwargs(config)
    )
    ref_loss.backward()

    loss_fn = jax.jit(jax.value_and_grad(gliner_loss), static_argnums=2)
    loss, grad = loss_fn(jnp.asarray(logits), {k: jnp.asarray(v) for k, v in ours.items()}, config, None)
    close(loss, ref_loss.detach())
    grad = np.asarray(grad)
    close(grad[:, :n_max, :c_max], ref_in.grad, rtol=1e-5, atol=1e-7)
    inside = np.zeros(grad.shape, bool)
    inside[:, :n_max, :c_max] = True
    assert not grad[~inside].any()


def test_config_defaults_are_gliner_training_defaults():
    defaults = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
    config = LossConfig()
    assert reference_kwargs(config) == {
        "alpha": defaults["focal_loss_alpha"],
        "gamma": defaults["focal_loss_gamma"],
        "prob_margin": defaults["focal_loss_prob_margin"],
        "label_smoothing": defaults["label_smoothing"],
        "reduction": defaults["loss_reduction"],
        "negatives": defaults["negatives"],
        "masking": defaults["masking"],
    }
