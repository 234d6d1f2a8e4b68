"""The training loss on hand-built inputs: targets, global negative masking, refused settings (against gliner's focal
loss, model losses and label-building processors: tests/parity/test_loss_vs_gliner.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gliner_jax.training.loss import LossConfig, gliner_loss, span_targets, token_targets


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
