"""Our GLiNER network against a reference `gliner` model: its own collated batches, logits, parameter gradients."""

from __future__ import annotations

import gliner
import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from gliner_jax.checkpoint_io import gliner_table, load_gliner, state_to_torch

TEXTS = [
    "Marie Curie won the Nobel Prize in Physics in 1903, and again in 1911!",
    "Zürich, São Paulo & Kraków: Müller-Lüdenscheidt_GmbH paid $1,200.50 on 3/14/2015.",
    "Apple",
    "Dr. Smith-Jones (WHO) met Angela Merkel in Geneva at 10:30am on Tuesday with 3 colleagues from the UN.",
]
# Different label counts per text, multi-word labels.
PER_TEXT_LABELS = [
    ["person", "award", "year"],
    ["city", "company name", "amount of money", "date"],
    ["organization"],
    ["person", "international organization", "city", "time of day", "number"],
]
SHARED_LABELS = ["person", "city name", "organization", "date"]


def reference_batch(model: gliner.GLiNER, texts: list[str], labels) -> dict:
    """The reference's own collated batch for `texts` and `labels`."""
    prepared = model.prepare_batch(texts, labels)
    return model.collate_batch(prepared["input_x"], prepared["entity_types"])


def reference_logits(model: gliner.GLiNER, texts: list[str], labels) -> tuple[dict, np.ndarray]:
    batch = reference_batch(model, texts, labels)
    with torch.no_grad():
        return batch, model.run_batch(batch).logits.numpy()


def assert_logits_close(ours: np.ndarray, ref: np.ndarray) -> None:
    """Within 1e-5 of the reference, relative to the logits' scale when that exceeds 1 (float32 rounding)."""
    assert ours.shape == ref.shape
    scale = np.abs(ref).max()
    assert scale > 1.0  # heads scaled: the comparison is not between near-zero numbers
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5 * scale)


def network_inputs(batch: dict, config) -> dict[str, jnp.ndarray]:
    """Our network's inputs for a batch collated by the reference."""
    ids, lengths = batch["input_ids"].numpy(), batch["text_lengths"].numpy().reshape(-1)
    num_labels = (ids == config.class_token_index).sum(axis=1)
    inputs = dict(
        input_ids=ids,
        attention_mask=batch["attention_mask"].numpy(),
        words_mask=batch["words_mask"].numpy(),
        words_valid=np.arange(lengths.max())[None] < lengths[:, None],
        labels_valid=np.arange(num_labels.max())[None] < num_labels[:, None],
    )
    if config.span_mode != "token_level":
        inputs.update(span_idx=batch["span_idx"].numpy(), span_mask=batch["span_mask"].numpy())
    return {k: jnp.asarray(v) for k, v in inputs.items()}


def parameter_gradients(
    ref: gliner.GLiNER, directory, texts: list[str], labels, *, train: bool
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(torch autograd's gradients of the reference's parameters that get one, ours of every parameter by its
    PyTorch name) for a loss weighing each logit differently. Ours in eval mode (encoder layers in a scan), or with
    `train` in train mode with every dropout rate 0 and the encoder layers unrolled, as training runs them."""
    batch = reference_batch(ref, texts, labels)
    ref.model.eval()
    ref.model.zero_grad()
    with torch.enable_grad():
        ref_logits = ref.model(**batch).logits
    weights = np.random.default_rng(0).normal(size=ref_logits.shape).astype(np.float32)
    (ref_logits * torch.from_numpy(weights)).sum().backward()
    ref_grads = {name: p.grad.numpy() for name, p in ref.model.named_parameters() if p.grad is not None}

    model, config = load_gliner(directory)
    if train:
        for _, module in model.iter_modules():
            if isinstance(module, nnx.Dropout):
                module.rate = 0.0
        model.train()
        model.set_attributes(unroll_layers=True)
    inputs = network_inputs(batch, config)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params):
        logits = nnx.merge(graphdef, params, jax.tree.map(jnp.asarray, rest))(**inputs)
        return (logits * weights).sum()

    nnx.update(model, jax.grad(loss)(params))
    return ref_grads, state_to_torch(model, gliner_table(config))


def assert_gradients_close(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    """Each reference gradient matched within 2e-5 of its scale (at least 1e-3)."""
    for name, ref_grad in ref.items():
        scale = max(np.abs(ref_grad).max(), 1e-3)
        if name.endswith(".attention.self.key.bias"):
            # A BERT key bias shifts all scores of a query alike, which softmax cancels: its gradient is zero but for
            # rounding on both sides, at the scale of the key kernel's gradient.
            scale = np.abs(ref[name.removesuffix("bias") + "weight"]).max()
        np.testing.assert_allclose(ours[name], ref_grad, rtol=0, atol=2e-5 * scale, err_msg=name)
