"""The reference gliner model's own collated batches and autograd gradients, to compare ours with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def reference_batch(model: Any, texts: list[str], labels: Any) -> dict:
    """The reference's own collated batch for `texts` and `labels` (one list, or one list per text)."""
    prepared = model.prepare_batch(texts, labels)
    return model.collate_batch(prepared["input_x"], prepared["entity_types"])


def reference_gradients(model: Any, batch: dict, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(weights, gradients): random weights of the logits and torch autograd's gradient of sum(weights * logits) in
    eval mode, for every parameter that gets one (a parameter nothing reads gets None and is left out)."""
    model.model.eval()
    model.model.zero_grad()
    with torch.enable_grad():
        logits = model.model(**batch).logits
    weights = np.random.default_rng(seed).normal(size=logits.shape).astype(np.float32)
    (logits * torch.from_numpy(weights)).sum().backward()
    return weights, {name: p.grad.numpy() for name, p in model.model.named_parameters() if p.grad is not None}


def assert_gradients_match(ours: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> None:
    """Each reference gradient within 2e-5 of its scale (at least 1e-3)."""
    for name, expected in reference.items():
        scale = max(np.abs(expected).max(), 1e-3)
        if name.endswith(".attention.self.key.bias"):
            # A BERT key bias shifts all scores of a query alike, which softmax cancels: its gradient is zero but for
            # rounding on both sides, at the scale of the key kernel's gradient.
            scale = np.abs(reference[name.removesuffix("bias") + "weight"]).max()
        np.testing.assert_allclose(ours[name], expected, rtol=0, atol=2e-5 * scale, err_msg=name)
