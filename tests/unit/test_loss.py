"""The training loss on hand-built inputs: targets, global negative masking, refused settings, the split into terms
(against gliner's focal loss, model losses and label-building processors: tests/parity/test_loss_vs_gliner.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gliner_jax.training.loss import LossConfig, gliner_loss, gliner_loss_terms, span_targets, token_targets


def test_targets_hand_checked():
    entities = jnp.array([[[1, 2, 2], [0, 0, 1], [0, 4, 1], [3, 3, 0], [0, 0, 0]]])  # (0, 4) is wider than K = 4
    spans = np.asarray(span_targets(entities, 5, 4, 2))[0]
    assert {(int(i), int(c)) for i, c in zip(*np.nonzero(spans), strict=True)} == {(1 * 4 + 1, 1), (0, 0)}
    tokens = np.asarray(token_targets(entities, 5, 2))[0]
    np.testing.assert_array_equal(tokens[:, 0, 0], [1, 0, 0, 0, 0])  # starts of class id 1: (0, 0) and (0, 4)
    np.testing.assert_array_equal(tokens[:, 0, 1], [1, 0, 0, 0, 1])
    np.testing.assert_array_equal(tokens[:, 0, 2], [1, 1, 1, 1, 1])
    np.testing.assert_array_equal(tokens[:, 1, 2], [0, 1, 1, 0, 0])


def test_global_masking_keeps_negatives_at_the_given_rate():
    """negatives=p keeps each negative cell with probability p; positives always count."""
    batch = {
        "entities": np.array([[[0, 0, 1]] + [[0, 0, 0]] * 7]),
        "labels_valid": np.ones((1, 4), bool),
        "span_mask": np.ones((1, 500 * 2), bool),
    }
    logits = jnp.zeros((1, 500, 2, 4))  # every cell costs log 2
    loss_fn = jax.jit(gliner_loss, static_argnums=2)
    config = LossConfig(masking="global", negatives=0.3)
    kept = [float(loss_fn(logits, batch, config, jax.random.key(i))) / np.log(2) - 1 for i in range(5)]
    rate = np.array(kept) / (500 * 2 * 4 - 1)
    assert np.all(np.abs(rate - 0.3) < 0.03)
    assert len(set(kept)) == 5
    nothing = LossConfig(masking="global", negatives=0.0)
    assert float(loss_fn(logits, batch, nothing, jax.random.key(0))) == pytest.approx(np.log(2))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("alpha", 1.5),
        ("alpha", float("nan")),
        ("gamma", -1.0),
        ("label_smoothing", 1.2),
        ("prob_margin", -0.1),
        ("negatives", 2.0),
        ("reduction", "none"),
        ("masking", "random"),
    ],
)
def test_config_refuses_bad_values(field, value):
    with pytest.raises(ValueError, match=f"loss.{field}"):
        LossConfig(**{field: value})


def _numpy_focal(x: np.ndarray, t: np.ndarray, alpha: float | None = None, gamma: float = 0.0) -> np.ndarray:
    """The focal BCE of the module doc, by hand in float64 (no label smoothing or margin; alpha None: unweighted)."""
    p = 1 / (1 + np.exp(-x))
    loss = -t * np.log(np.maximum(p, 1e-6)) - (1 - t) * np.log(np.maximum(1 - p, 1e-6))
    p_t = p * t + (1 - p) * (1 - t)
    weight = 1.0 if alpha is None else alpha * t + (1 - alpha) * (1 - t)
    return weight * loss * (1 - p_t) ** gamma


def test_span_loss_terms_split_the_loss_over_positive_and_negative_cells():
    """Span model, 3 words, width 2, 2 labels (the second invalid), span (2, 1) past the text: the entity (0, 1,
    class 1) is the one positive cell (span row 1, label 0); 'mean' divides by the 5 valid spans."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 3, 2, 2)).astype(np.float32) * 3
    batch = {
        "entities": np.array([[[0, 1, 1], [0, 0, 0]]]),
        "labels_valid": np.array([[True, False]]),
        "span_mask": np.array([[True, True, True, True, True, False]]),
    }
    config = LossConfig(alpha=0.75, gamma=2.0, reduction="mean")
    total, terms = gliner_loss_terms(jnp.asarray(logits), batch, config)
    cells = logits.reshape(6, 2)[:5, 0].astype(np.float64)  # valid cells: the 5 spans inside, label 0
    targets = np.array([0.0, 1.0, 0.0, 0.0, 0.0])
    by_cell = _numpy_focal(cells, targets, 0.75, 2.0) / 5
    assert set(terms) == {"positive", "negative"}
    assert float(terms["positive"]) == pytest.approx(by_cell[1], rel=1e-5)
    assert float(terms["negative"]) == pytest.approx(by_cell[[0, 2, 3, 4]].sum(), rel=1e-5)
    assert float(total) == pytest.approx(by_cell.sum(), rel=1e-5)
    assert float(terms["positive"] + terms["negative"]) == pytest.approx(float(total), rel=1e-6)
    assert float(total) == float(gliner_loss(jnp.asarray(logits), batch, config))


def test_token_loss_terms_split_the_loss_by_target_and_by_start_end_inside():
    """Token model, 3 words (the last invalid), 1 label: the entity (0, 1) marks start at word 0, end at word 1,
    inside at words 0 and 1; 'sum' over the 2 x 3 valid cells."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 3, 1, 3)).astype(np.float32) * 3
    batch = {
        "entities": np.array([[[0, 1, 1]]]),
        "labels_valid": np.array([[True]]),
        "words_valid": np.array([[True, True, False]]),
    }
    total, terms = gliner_loss_terms(jnp.asarray(logits), batch, LossConfig())
    cells = logits[0, :2, 0, :].astype(np.float64)  # [word, (start, end, inside)]
    targets = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    by_cell = _numpy_focal(cells, targets)
    expected = {
        "positive": by_cell[targets == 1].sum(),
        "negative": by_cell[targets == 0].sum(),
        "start": by_cell[:, 0].sum(),
        "end": by_cell[:, 1].sum(),
        "inside": by_cell[:, 2].sum(),
    }
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert float(terms[name]) == pytest.approx(value, rel=1e-5), name
    assert float(total) == pytest.approx(by_cell.sum(), rel=1e-5)
    for split in (("positive", "negative"), ("start", "end", "inside")):
        assert sum(float(terms[name]) for name in split) == pytest.approx(float(total), rel=1e-6), split
