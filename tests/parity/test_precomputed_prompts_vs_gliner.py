"""gliner's `precomputed_prompts_mode` against gliner 0.2.29: `compress_prompt_embeddings` (the stored prompts and
labels), predictions that score the stored labels whatever labels are given, label descriptions refused, gliner's
compressed checkpoint read (its `precomputed_prompts` tensor) and ours written key for key, logits and gradients on
gliner's batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import load_file

from gliner_jax import GLiNER
from gliner_jax.checkpoint_io import gliner_table, load_gliner, state_to_torch
from gliner_jax.testing.builders import CORPUS, build_reference, quantile_thresholds
from tests.utils.entities import assert_same_entities
from tests.utils.gliner_parity import TEXTS, assert_gradients_close, reference_batch, train_without_dropout

LABELS = ["person", "award", "person", "city", "date"]  # a repeat: gliner keeps the first
STORED = ["person", "award", "city", "date"]


@pytest.fixture(scope="module")
def models(gliner_backbone, tmp_path_factory):
    """(gliner's compressed model, the directory it saved, ours compressed the same way)."""
    plain, compressed = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("compressed")
    reference = build_reference(gliner_backbone, plain, logit_scale=5.0, span_mode="markerV0", hidden_size=32)
    ours = GLiNER.from_pretrained(plain)
    reference.compress_prompt_embeddings(CORPUS[:5], LABELS, batch_size=2)
    ours.compress_prompt_embeddings(CORPUS[:5], LABELS, batch_size=2)
    reference.save_pretrained(compressed)
    return reference, compressed, ours


def test_compressed_prompts_match_reference(models):
    reference, _, ours = models
    expected = reference.model.precomputed_prompts.detach().numpy()
    stored = np.asarray(ours.model.precomputed_prompts.get_value())
    assert stored.shape == expected.shape == (len(STORED), 32)
    np.testing.assert_allclose(stored, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert ours.config.precomputed_prompts_mode is True and reference.config.precomputed_prompts_mode is True
    assert ours.config.id_to_classes == reference.config.id_to_classes == dict(enumerate(STORED, 1))


def test_entities_match_reference_whatever_the_labels(models):
    """The stored labels are scored whatever labels are given (gliner ignores them), by our compressed model and by
    ours read from gliner's compressed checkpoint; descriptions are refused by both."""
    reference, compressed, ours = models
    (threshold,) = quantile_thresholds(reference, TEXTS, STORED, (0.9,))
    expected = reference.inference(TEXTS, ["anything"], threshold=threshold, flat_ner=False)
    assert sum(map(len, expected)) > 0
    for model in (ours, GLiNER.from_pretrained(compressed)):
        for labels in (["anything"], STORED):
            got = model.inference(TEXTS, labels, threshold=threshold, flat_ner=False, batch_size=2)
            for ours_entities, ref_entities in zip(got, expected, strict=True):
                assert_same_entities(ours_entities, ref_entities)
    for model in (reference, ours):
        with pytest.raises(ValueError, match="Label descriptions are not supported"):
            model.inference(TEXTS[:1], {"person": "a human being"})


def test_export_matches_reference_checkpoint(models, tmp_path):
    """Our export holds gliner's tensors key for key (`precomputed_prompts` with them) and its stored labels. gliner
    itself cannot load such a checkpoint strictly (it registers `precomputed_prompts` as None: "Unexpected key"), and
    loaded leniently it drops the prompts: we read them."""
    reference, _, ours = models
    ours.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    expected = reference.model.state_dict()
    assert saved.keys() == expected.keys() and "precomputed_prompts" in saved
    loaded = GLiNER.from_pretrained(tmp_path)
    assert loaded.config.precomputed_labels == STORED
    np.testing.assert_array_equal(
        np.asarray(loaded.model.precomputed_prompts.get_value()), saved["precomputed_prompts"]
    )


def test_network_and_gradients_match_reference(models):
    """gliner's batch (no label prompt in the text) through our network as training runs it: its logits, and the
    gradient of every parameter torch gives one (the stored prompts get none: frozen in both)."""
    reference, compressed, _ = models
    batch = reference_batch(reference, TEXTS, STORED)
    assert not (batch["input_ids"] == reference.config.class_token_index).any()
    reference.model.eval()
    reference.model.zero_grad()
    with torch.enable_grad():
        logits = reference.model(**batch).logits
    weights = np.random.default_rng(0).normal(size=logits.shape).astype(np.float32)
    (logits * torch.from_numpy(weights)).sum().backward()
    ref_grads = {name: p.grad.numpy() for name, p in reference.model.named_parameters() if p.grad is not None}
    assert "precomputed_prompts" not in ref_grads and len(ref_grads) > 20

    model, config = load_gliner(compressed)
    train_without_dropout(model)
    lengths = batch["text_lengths"].numpy().reshape(-1)
    inputs = dict(
        input_ids=batch["input_ids"].numpy(),
        attention_mask=batch["attention_mask"].numpy(),
        words_mask=batch["words_mask"].numpy(),
        words_valid=np.arange(lengths.max())[None] < lengths[:, None],
        labels_valid=np.ones((len(lengths), len(STORED)), bool),
        span_idx=batch["span_idx"].numpy(),
        span_mask=batch["span_mask"].numpy(),
    )
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params):
        out = nnx.merge(graphdef, params, jax.tree.map(jnp.asarray, rest))(
            **{k: jnp.asarray(v) for k, v in inputs.items()}
        )
        return (out * weights).sum(), out

    gradients, ours = jax.grad(loss, has_aux=True)(params)
    # averaged prompts give logits below 1 here: compared at 1e-5 absolute
    np.testing.assert_allclose(np.asarray(ours), logits.detach().numpy(), rtol=0, atol=1e-5)
    nnx.update(model, gradients)
    grads = state_to_torch(model, [m for m in gliner_table(config) if m.torch_key != "precomputed_prompts"])
    assert_gradients_close(grads, ref_grads)
