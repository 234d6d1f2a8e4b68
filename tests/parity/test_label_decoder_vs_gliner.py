"""gliner's generative label head (`UniEncoderSpanDecoderModel`, decoder_mode "span") against a gliner-built model
(tiny BERT backbone, tiny GPT-2 labels_decoder with a locally trained byte-level BPE tokenizer): the decoder
prefixes of the selected spans (with and without the span's words), the labels greedy generation writes, and the
teacher-forced decoder loss with its gradients, each computed from gliner's own batch and span representations."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from gliner.data_processing.collator import UniEncoderSpanDecoderDataCollator

from gliner_jax.checkpoint_io import label_decoder_table, state_from_torch, state_to_torch
from gliner_jax.modeling.decoders import decoder_config_from_hf
from gliner_jax.modeling.decoders.generation import greedy_generate
from gliner_jax.modeling.label_decoder import LabelDecoder, prefix_length
from gliner_jax.testing.builders import build_backbone, build_label_decoder, build_reference
from tests.utils.encoders import TINY_HF

MAX_WIDTH = 4
TEXTS = ["Barack Obama was born in Honolulu , Hawaii .", "Apple released the iPhone in 2007 ."]
LABELS = ["person", "location"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(gliner's span-decoder model, our LabelDecoder with its weights)."""
    tmp = tmp_path_factory.mktemp("label_decoder")
    backbone = build_backbone(tmp / "backbone", {"model_type": "bert", **TINY_HF["bert"], "num_hidden_layers": 2})
    # An untied head: with tied embeddings a random GPT-2 repeats its last input token, whatever the prefix.
    decoder_config = dict(n_positions=128, n_embd=24, n_layer=2, n_head=3, tie_word_embeddings=False)
    decoder = build_label_decoder(tmp / "decoder", decoder_config)
    ref = build_reference(
        backbone, tmp / "ref", labels_decoder=str(decoder), decoder_mode="span", hidden_size=32, max_width=MAX_WIDTH
    )
    ref.config.blank_entity_prob = 0.0
    config = decoder_config_from_hf(ref.config.labels_decoder_config.to_dict())
    ours = LabelDecoder(config, 32, ref.config.dropout, dtype=jnp.float32, rngs=nnx.Rngs(0))
    table = label_decoder_table(config, projects=True)
    state = {k: v.numpy() for k, v in ref.model.state_dict().items()}
    state_from_torch(ours, {m.torch_key: state[m.torch_key] for m in table}, table)
    exported = state_to_torch(ours, table)
    assert all(np.array_equal(exported[k], state[k]) for k in exported)
    ours.eval()
    return ref, ours


def selected(output, batch):
    """Our prefix arguments for the spans gliner selected, in gliner's order (row by row), and their (row, slot)."""
    sel = output.decoder_span_idx.detach().numpy()
    rows, slots = np.nonzero(sel >= 0)
    flat = sel[rows, slots]
    span_rep = output.span_embeddings.detach().numpy()
    span_rep = span_rep.reshape(span_rep.shape[0], -1, span_rep.shape[-1])[rows, flat]
    words = np.stack([flat // MAX_WIDTH, flat // MAX_WIDTH + flat % MAX_WIDTH], axis=1)
    context = [jnp.asarray(batch[name].numpy()[rows]) for name in ("decoder_input_ids", "decoder_words_mask")]
    length = prefix_length(batch["decoder_words_mask"].numpy(), words, rows, MAX_WIDTH, sel.shape[1])
    assert length == output.decoder_embedding.shape[2]  # gliner's length, padding slots counted
    return (jnp.asarray(span_rep), jnp.asarray(words)), context, (rows, slots), length


def test_prefixes_and_generated_labels_match_gliner(models):
    ref, ours = models
    prepared = ref.prepare_batch(TEXTS, LABELS)
    batch = ref.collate_batch(prepared["input_x"], prepared["entity_types"])
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    with torch.no_grad():
        probs = torch.sigmoid(ref.model(**tensors).logits).amax(-1).flatten(1)[tensors["span_mask"].bool()]
        threshold = float(probs.median())  # about half the spans selected, whatever the random head gives
        output = ref.model(**tensors, threshold=threshold, return_embeddings=True)
    spans, context, (rows, slots), prefix_len = selected(output, batch)
    assert 10 < len(rows) < output.decoder_span_idx.numel()

    prefix, valid = ours.prefixes(*spans, *context, prefix_len)
    np.testing.assert_allclose(np.asarray(prefix), output.decoder_embedding.numpy()[rows, slots], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(valid), output.decoder_embedding_mask.numpy()[rows, slots])

    # Without the span's words (decoder_mode None, or full_decoder_context False): the representation alone.
    alone, alone_valid = ours.prefixes(*spans)
    with torch.no_grad():
        ref_alone, _, _ = ref.model.select_span_decoder_embedding(
            output.prompts_embedding,
            output.prompts_embedding_mask,
            output.span_embeddings,
            output.logits,
            tensors["span_mask"],
            threshold=threshold,
        )
    np.testing.assert_allclose(np.asarray(alone), ref_alone.numpy()[rows, slots], atol=1e-6)
    assert np.asarray(alone_valid).all()

    tokenizer = ref.data_processor.decoder_tokenizer
    ids = dict(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        expected = ref.model.generate_labels(
            output.decoder_embedding, output.decoder_embedding_mask, max_new_tokens=6, do_sample=False, **ids
        ).numpy()
    generate = nnx.jit(greedy_generate, static_argnames=("max_new_tokens", "eos_id", "pad_id"))
    tokens = np.asarray(
        generate(ours.decoder, prefix, max_new_tokens=6, eos_id=ids["eos_token_id"], pad_id=ids["pad_token_id"])
    )
    np.testing.assert_array_equal(tokens[:, : expected.shape[1]], expected)
    texts = tokenizer.batch_decode(tokens, skip_special_tokens=True)
    assert texts == tokenizer.batch_decode(expected, skip_special_tokens=True)
    assert len({tuple(row) for row in tokens}) > 1  # the labels depend on the span


def test_decoder_loss_and_gradients_match_gliner(models):
    ref, ours = models
    collator = UniEncoderSpanDecoderDataCollator(ref.config, data_processor=ref.data_processor, prepare_labels=True)
    examples = [
        {"tokenized_text": TEXTS[0].split(), "ner": [[0, 1, "person"], [5, 7, "location"]]},
        {"tokenized_text": TEXTS[1].split(), "ner": [[0, 0, "company"], [3, 3, "product"], [5, 5, "date"]]},
    ]
    batch = collator(examples)
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    ref.model.eval()
    ref.model.zero_grad()
    output = ref.model(**tensors, return_embeddings=True)
    output.decoder_loss.backward()

    spans, context, _, prefix_len = selected(output, batch)
    label_ids, label_mask, targets = (
        jnp.asarray(batch[k].numpy()) for k in ("decoder_labels_ids", "decoder_labels_mask", "decoder_labels")
    )

    def loss_fn(model):
        prefix, valid = model.prefixes(*spans, *context, prefix_len)
        return model.label_loss(prefix, valid, label_ids, label_mask, targets)

    loss, grads = nnx.jit(nnx.value_and_grad(loss_fn))(ours)
    graphdef, _, rest = nnx.split(ours, nnx.Param, ...)
    np.testing.assert_allclose(float(loss), float(output.decoder_loss.detach()), rtol=1e-5)
    ours_grads = state_to_torch(
        nnx.merge(graphdef, grads, rest), label_decoder_table(ours.decoder.config, projects=True)
    )
    ref_grads = dict(ref.model.named_parameters())
    for key, grad in ours_grads.items():
        expected = ref_grads[key].grad
        expected = np.zeros_like(grad) if expected is None else expected.numpy()
        np.testing.assert_allclose(grad, expected, atol=1e-5 * max(1.0, np.abs(expected).max()), err_msg=key)
