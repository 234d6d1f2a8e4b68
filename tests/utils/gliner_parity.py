"""Our GLiNER network against a reference `gliner` model: its own collated batches, logits, parameter gradients,
exported tensors."""

from __future__ import annotations

from pathlib import Path

import gliner
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx
from safetensors.numpy import load_file

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
    """Our network's inputs for a batch collated by the reference; a bi-encoder's with its label table and, where
    rows differ, its `labels_gather_indices` / `prompts_embedding_mask`."""
    ids, lengths = batch["input_ids"].numpy(), batch["text_lengths"].numpy().reshape(-1)
    inputs = dict(
        input_ids=ids,
        attention_mask=batch["attention_mask"].numpy(),
        words_mask=batch["words_mask"].numpy(),
        words_valid=np.arange(lengths.max())[None] < lengths[:, None],
    )
    if "labels_input_ids" in batch:
        num_table = batch["labels_input_ids"].shape[0]
        if "labels_gather_indices" in batch:
            index = batch["labels_gather_indices"].numpy()
            valid = batch["prompts_embedding_mask"].numpy().astype(bool)
        else:
            index = np.broadcast_to(np.arange(num_table), (len(lengths), num_table))
            valid = np.ones(index.shape, bool)
        inputs.update(
            labels_valid=valid,
            labels_index=index,
            labels_input_ids=batch["labels_input_ids"].numpy(),
            labels_attention_mask=batch["labels_attention_mask"].numpy(),
        )
    else:
        num_labels = (ids == config.class_token_index).sum(axis=1)
        inputs["labels_valid"] = np.arange(num_labels.max())[None] < num_labels[:, None]
    if config.span_mode != "token_level":
        inputs.update(span_idx=batch["span_idx"].numpy(), span_mask=batch["span_mask"].numpy())
    return {k: jnp.asarray(v) for k, v in inputs.items()}


def reference_gradients(model: gliner.GLiNER, batch: dict, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(weights, gradients): random weights of the logits and torch autograd's gradient of sum(weights * logits) in
    eval mode, for every parameter that gets one (a parameter nothing reads gets None and is left out)."""
    model.model.eval()
    model.model.zero_grad()
    with torch.enable_grad():
        logits = model.model(**batch).logits
    weights = np.random.default_rng(seed).normal(size=logits.shape).astype(np.float32)
    (logits * torch.from_numpy(weights)).sum().backward()
    return weights, {name: p.grad.numpy() for name, p in model.model.named_parameters() if p.grad is not None}


def capture_gradients() -> optax.GradientTransformation:
    """An 'optimizer' for `make_train_step` whose state after a step is that step's gradients (and whose updates are
    zero)."""

    def update(grads, state, params=None):
        return jax.tree.map(jnp.zeros_like, grads), grads

    return optax.GradientTransformation(lambda params: (), update)


def train_without_dropout(model: nnx.Module) -> nnx.Module:
    """`model` as training runs it, without randomness: train mode, every dropout rate 0, encoder layers unrolled."""
    for _, module in model.iter_modules():
        if isinstance(module, nnx.Dropout):
            module.rate = 0.0
    model.train()
    model.set_attributes(unroll_layers=True, raise_if_not_found=False)
    return model


def assert_training_network_matches(
    ref: gliner.GLiNER, directory, texts: list[str], labels
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Our network as training runs it (train mode with every dropout rate 0, encoder layers unrolled), fed the
    reference's own batch: its logits are the reference's, and so are the gradients of every parameter that gets one
    in torch, for a loss weighing each logit differently. Returns (ours by PyTorch name, all parameters; torch's).
    Eval mode (the layer scan) is what the pipeline tests run; tests/e2e/test_layer_stack.py checks that the scan and
    the unrolled layers give the same gradients."""
    batch = reference_batch(ref, texts, labels)
    with torch.no_grad():
        ref_logits = ref.run_batch(batch).logits.numpy()
    weights, ref_grads = reference_gradients(ref, batch)
    assert len(ref_grads) > 20

    model, config = load_gliner(directory)
    train_without_dropout(model)
    inputs = network_inputs(batch, config)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params):
        logits = nnx.merge(graphdef, params, jax.tree.map(jnp.asarray, rest))(**inputs)
        return (logits * weights).sum(), logits

    gradients, logits = jax.grad(loss, has_aux=True)(params)
    assert_logits_close(np.asarray(logits), ref_logits)
    nnx.update(model, gradients)
    grads = state_to_torch(model, gliner_table(config))
    assert_gradients_close(grads, ref_grads)
    return grads, ref_grads


def assert_gradients_close(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    """Each reference gradient matched within 2e-5 of its scale (at least 1e-3)."""
    for name, ref_grad in ref.items():
        scale = max(np.abs(ref_grad).max(), 1e-3)
        if name.endswith(
            (".attention.self.key.bias", ".attention.self.pos_key_proj.bias", ".key_layer.bias", ".k_proj.bias")
        ):
            # A key bias (BERT's, a DeBERTa position key's, gliner's fusion attention and its key projection) shifts
            # all scores of a query alike, which softmax cancels: its gradient is zero but for rounding on both sides,
            # at the scale of the key kernel's gradient.
            scale = np.abs(ref[name.removesuffix("bias") + "weight"]).max()
        elif name.endswith((".attention.self.query.bias", ".query_layer.bias", ".q_proj.bias")):
            # A query bias's gradient sums the query gradients over positions, which largely cancel: its rounding is
            # at the scale of the query kernel's gradient (seen in one CI run: a fusion query bias 9.7e-7 off, where
            # its own scale allowed 7.7e-7).
            scale = max(scale, np.abs(ref[name.removesuffix("bias") + "weight"]).max())
        np.testing.assert_allclose(ours[name], ref_grad, rtol=0, atol=2e-5 * scale, err_msg=name)


def assert_same_outputs(ours: list, ref: list) -> None:
    """Per text, the same entity or relation dicts in the same order; scores (of entities and relations) within 1e-5."""

    def split(item: dict) -> tuple[dict, float]:
        return {k: v for k, v in item.items() if k != "score"}, item["score"]

    assert len(ours) == len(ref)
    for our_items, ref_items in zip(ours, ref, strict=True):
        assert [split(item)[0] for item in our_items] == [split(item)[0] for item in ref_items]
        np.testing.assert_allclose(
            [item["score"] for item in our_items], [item["score"] for item in ref_items], atol=1e-5
        )


def assert_export_equals_reference(ours, ref: gliner.GLiNER, directory: Path) -> dict[str, np.ndarray]:
    """`ours` (a gliner_jax GLiNER) saved to `directory`: its model.safetensors holds the reference's state dict, key
    for key, bit for bit. Returns the exported tensors."""
    ours.save_pretrained(directory)
    exported = load_file(directory / "model.safetensors")
    expected = ref.model.state_dict()
    assert exported.keys() == expected.keys()
    for key, tensor in expected.items():
        np.testing.assert_array_equal(exported[key], tensor.numpy(), err_msg=key)
    return exported


def assert_same_detailed(ours: list[dict], ref: list[dict]) -> None:
    """The same entities with the same keys; scores, class probabilities (same labels, same order) and vectors
    (NumPy float32, as gliner's) within 1e-5."""
    assert [(e["start"], e["end"], e["text"], e["label"]) for e in ours] == [
        (e["start"], e["end"], e["text"], e["label"]) for e in ref
    ]
    for got, expected in zip(ours, ref, strict=True):
        assert list(got) == list(expected)
        np.testing.assert_allclose(got["score"], expected["score"], rtol=0, atol=1e-5)
        if "class_probs" in expected:
            assert list(got["class_probs"]) == list(expected["class_probs"])
            np.testing.assert_allclose(
                list(got["class_probs"].values()), list(expected["class_probs"].values()), rtol=0, atol=1e-5
            )
        for key in {"vector", "label_vector"} & set(expected):
            assert isinstance(got[key], np.ndarray) and got[key].dtype == np.float32 == expected[key].dtype
            np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-5)
