"""gliner's streaming span model (`StreamingSpanGLiNER`: a tiny random GPT-2 backbone with its locally trained
byte-level BPE tokenizer, a projection to hidden_size, a one-layer DeBERTa label encoder, markerV2) against ours:
the gliner-saved directory loads with every key matched, whole-text entities and scores equal gliner's, and our
export is gliner's state dict, which gliner loads and predicts the same with; sessions fed chunk by chunk give
gliner's entities after every chunk (a session's state saved as a pytree and put back continues the same), and so do
gliner's `StreamingBatch` and `AsyncStreamingEngine`; the train step's loss and gradients on gliner's training
records are gliner's."""

from __future__ import annotations

import asyncio
import json

import gliner
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import transformers
from flax import nnx

from gliner_jax import GLiNER
from gliner_jax.checkpoint_io import state_to_torch, streaming_table
from gliner_jax.cli import main
from gliner_jax.config_streaming import StreamingSpanConfig
from gliner_jax.testing.builders import build_label_decoder, build_streaming_reference, quantile_thresholds
from gliner_jax.training import data as data_lib
from gliner_jax.training.config import ModelSection
from gliner_jax.training.loss import LossConfig
from gliner_jax.training.model_init import build_model
from gliner_jax.training.optim import OptimizerConfig, parameter_groups, parameter_path
from gliner_jax.training.step import make_train_step
from tests.utils.gliner_parity import (
    assert_export_equals_reference,
    assert_gradients_close,
    assert_same_detailed,
    assert_same_outputs,
    train_without_dropout,
)

TEXTS = [
    "Barack Obama was born in Honolulu, Hawaii, on August 4, 1961.",
    "Angela Merkel led Germany from 2005 to 2021 as chancellor.",
    "Apple",
    "   ",
]
LABELS = ["person", "city", "organization", "date"]
LABELS_ENCODER = {"model_type": "deberta-v2", "num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 2}


BACKBONE = dict(n_positions=128, n_embd=24, n_layer=2, n_head=3)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(gliner's streaming model, its directory, ours loaded from it)."""
    tmp = tmp_path_factory.mktemp("streaming")
    backbone = build_label_decoder(tmp / "backbone", BACKBONE)
    ref = build_streaming_reference(
        backbone, tmp / "ref", hidden_size=32, max_width=4, labels_encoder_config=LABELS_ENCODER
    )
    return ref, tmp, GLiNER.from_pretrained(tmp / "ref")


def test_whole_text_inference_and_export_match_gliner(models):
    ref, tmp, ours = models
    threshold, nested_threshold = quantile_thresholds(ref, TEXTS, LABELS, (0.9, 0.8))
    for options in (dict(threshold=threshold), dict(threshold=nested_threshold, flat_ner=False, multi_label=True)):
        expected = ref.inference(TEXTS, LABELS, **options)
        assert sum(map(len, expected)) >= 3
        assert_same_outputs(ours.inference(TEXTS, LABELS, **options), expected)

    assert_export_equals_reference(ours, ref, tmp / "export")
    reloaded = gliner.GLiNER.from_pretrained(str(tmp / "export"), local_files_only=True)
    assert type(reloaded).__name__ == "StreamingSpanGLiNER"
    reloaded.eval()
    options = dict(threshold=threshold)
    assert_same_outputs(reloaded.inference(TEXTS, LABELS, **options), ref.inference(TEXTS, LABELS, **options))


# Three sessions fed three chunks: words cut across chunks, a whitespace-only chunk (nothing changes, [] returned);
# sessions a and c hold as many tokens after their first chunk, so their next chunks run as one batch (as in gliner).
CHUNKS = [
    ["Barack Obama was born in Honolulu, ", "Angela Merkel led ", "Barack Obama was born in Honolulu, "],
    ["Hawaii, on August 4, 1961 with", "Germany from 2005 to 2021", "and met Michelle Robinson"],
    [" Michelle in Chicago.", "   ", " in Chicago."],
]
SESSIONS = ["a", "b", "c"]


def test_sessions_match_gliner(models):
    ref, _, ours = models
    (threshold,) = quantile_thresholds(ref, [" ".join(texts) for texts in zip(*CHUNKS, strict=True)], LABELS, (0.9,))
    options = dict(threshold=threshold, session_id=SESSIONS)
    found = 0
    for chunk in CHUNKS:  # the last with each entity's 5 best labels
        probs = dict(return_class_probs=chunk is CHUNKS[-1])
        expected = ref.inference(chunk, LABELS, **options, **probs)
        for got, want in zip(ours.inference(chunk, LABELS, **options, **probs), expected, strict=True):
            assert_same_detailed(got, want)
            assert all(("class_probs" in entity) == probs["return_class_probs"] for entity in want)
        found += sum(map(len, expected))
        if chunk is CHUNKS[0]:  # a and c batch together next
            assert ours.sessions.get("a").num_tokens == ours.sessions.get("c").num_tokens
    assert found >= 6 and ours.session_count == 3

    # Labels are fixed per session; recompute rereads the whole text with new ones (descriptions here).
    with pytest.raises(ValueError, match="Labels for session 'a' changed"):
        ours.inference(["More."], LABELS[:2], session_id=["a"])
    described = {"person": "person name", "city": "city"}
    recomputed = dict(threshold=threshold, session_id=["a"], recompute=True)
    expected = ref.inference([" and Paris."], described, **recomputed)
    assert_same_outputs(ours.inference([" and Paris."], described, **recomputed), expected)

    # A session's state is a pytree: saved (to host arrays), the session cleared, put back, it continues as gliner's.
    saved = jax.tree_util.tree_map(np.asarray, ours.sessions.get("b"))
    ours.clear_session(["b"])
    assert ours.session_count == 2
    ours.sessions.put("b", saved)
    options = dict(threshold=threshold, session_id=["b"])
    assert_same_outputs(
        ours.inference([" as chancellor."], LABELS, **options), ref.inference([" as chancellor."], LABELS, **options)
    )


def test_streaming_batch_matches_gliner(models):
    """gliner's `StreamingBatch`: a fixed batch of sessions (apart from the model's) with one label list, every
    session's entities on each call; a blank chunk returns its session's entities so far; `recompute` rereads every
    session; a closed batch refuses appends."""
    ref, _, ours = models
    (threshold,) = quantile_thresholds(ref, [" ".join(texts) for texts in zip(*CHUNKS, strict=True)], LABELS, (0.9,))
    calls = [
        (["   ", "   ", "   "], {}),  # nothing yet
        *((chunk, {}) for chunk in CHUNKS),  # the last with a blank chunk
        (["   ", "   ", "   "], dict(return_class_probs=True)),  # every session's entities again
        ([" Then", "   ", " more."], dict(recompute=True)),  # every session reread
    ]
    held = ours.session_count  # the model's own sessions, which the batch leaves alone
    with ref.create_streaming_batch(SESSIONS, LABELS) as expected_batch:
        batch = ours.create_streaming_batch(SESSIONS, LABELS)
        assert not batch.initialized
        for texts, options in calls:
            expected = expected_batch.append(texts, threshold=threshold, **options)
            for got, want in zip(batch.append(texts, threshold=threshold, **options), expected, strict=True):
                assert_same_detailed(got, want)
        assert sum(map(len, expected)) >= 3 and batch.initialized and ours.session_count == held
    batch.close()
    with pytest.raises(RuntimeError, match="StreamingBatch is closed"):
        batch.append(["x", "y", "z"])
    with pytest.raises(ValueError, match="session_ids must be unique"):
        ours.create_streaming_batch(["a", "a"], LABELS)


def test_async_streaming_engine_matches_gliner(models):
    """gliner's `AsyncStreamingEngine`: three sessions streamed concurrently from asyncio tasks (their appends
    batched as they arrive) end with gliner's entities; a session's appends keep their order; a blank append returns
    [] and a cleared session starts again."""
    ref, _, ours = models
    (threshold,) = quantile_thresholds(ref, [" ".join(texts) for texts in zip(*CHUNKS, strict=True)], LABELS, (0.9,))

    async def run(model) -> tuple[list, list]:
        async with model.create_async_streaming_engine(batch_wait_timeout_ms=5.0) as engine:

            async def session(index: int) -> list:
                chunks = [chunk[index] for chunk in CHUNKS]
                return [found async for found in engine.stream(f"e{index}", chunks, LABELS, threshold=threshold)]

            streamed = await asyncio.gather(*(session(i) for i in range(len(SESSIONS))))
            assert await engine.append("e0", "  ", LABELS) == []
            await engine.clear_session("e1")
            again = await engine.append("e1", CHUNKS[0][1], LABELS, threshold=threshold)
        model.clear_sessions()
        return streamed, again

    (expected, expected_again), (got, got_again) = asyncio.run(run(ref)), asyncio.run(run(ours))
    for ours_stream, ref_stream in zip(got, expected, strict=True):
        for found, want in zip(ours_stream, ref_stream, strict=True):
            assert_same_outputs([found], [want])
    assert_same_outputs([got_again], [expected_again])
    assert sum(len(stream[-1]) for stream in expected) >= 3


RECORDS = [
    {
        "tokenized_text": ["Marie", "Curie", "worked", "in", "Paris", "in", "1903", "."],
        "ner": [[0, 1, "person"], [4, 4, "city"]],
    },
    {
        "tokenized_text": ["Apple", "was", "founded", "by", "Steve", "Jobs", "."],
        "ner": [[0, 0, "organization"], [4, 5, "person"]],
    },
]
FOCAL = dict(alpha=0.6, gamma=1.5, prob_margin=0.0, label_smoothing=0.1)


def test_train_step_matches_gliner(models):
    """gliner's loss (focal, mean reduction) and its gradients on its own collated batch of training records; ours
    from the one train step (an optimizer that keeps the gradients) on our batch of the same records."""
    ref, _, ours = models
    collator = ref.data_collator_class(ref.config, data_processor=ref.data_processor, prepare_labels=True)
    ref_batch = collator(RECORDS, entity_types=[LABELS] * len(RECORDS))
    ref.model.eval()
    ref.model.zero_grad()
    with torch.enable_grad():
        output = ref.model(**ref_batch, **FOCAL, reduction="mean", negatives=1.0, masking="none")
        output.loss.backward()
    loss = float(output.loss.detach())
    ref_grads = {name: p.grad.numpy() for name, p in ref.model.named_parameters() if p.grad is not None}
    assert any(name.startswith("token_rep_layer.decoder_layer.") for name in ref_grads)

    examples = [data_lib.normalize_record(record) for record in RECORDS]
    batch = data_lib.collate(examples, [LABELS] * len(RECORDS), ours.processor)
    model = train_without_dropout(ours.model)
    graphdef, params, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    keep = optax.GradientTransformation(lambda params: (), lambda grads, state, params=None: (grads, grads))
    step = make_train_step(graphdef, keep, LossConfig(**FOCAL, reduction="mean", masking="none"))
    inputs = {name: jnp.asarray(value) for name, value in batch.items()}
    _, gradients, _, metrics = jax.jit(step)(params, (), stats, inputs, jax.random.key(0), rest)
    model.eval()

    assert loss > 0.05
    np.testing.assert_allclose(float(metrics["loss"]), loss, rtol=2e-5)
    nnx.update(model, gradients)
    assert_gradients_close(state_to_torch(model, streaming_table(ours.config)), ref_grads)

    # gliner's optimizer groups: the decoder (its token_rep_layer) at the encoder rate, everything else (the
    # projection and the label encoder too) at the others' rate.
    groups = jax.tree_util.tree_leaves_with_path(parameter_groups(params, OptimizerConfig(num_steps=1)))
    by_module = {parameter_path(path).split("/")[0]: group for path, group in groups}
    assert by_module == {"encoder": "encoder"} | {name: "others" for name in by_module if name != "encoder"}
    assert {"token_projection", "prompt_encoder", "span_rep", "prompt_rep"} <= by_module.keys()


def test_compressed_prompts_are_refused_as_gliner_cannot_compress(models):
    """gliner's `compress_prompt_embeddings` fails on a streaming model, so no compressed streaming checkpoint comes
    from it: our compression and a streaming config in precomputed_prompts_mode are refused naming it."""
    _, tmp, ours = models
    ref = gliner.GLiNER.from_pretrained(str(tmp / "ref"), local_files_only=True)
    with pytest.raises(AttributeError):
        ref.compress_prompt_embeddings(TEXTS[:2], LABELS)
    with pytest.raises(NotImplementedError, match="compress_prompt_embeddings needs a uni-encoder"):
        ours.compress_prompt_embeddings(TEXTS[:2], LABELS)
    config = ours.config.to_dict() | {"precomputed_prompts_mode": True, "id_to_classes": {"1": "person"}}
    with pytest.raises(NotImplementedError, match="precomputed_prompts_mode=True"):
        StreamingSpanConfig.from_dict(config)


def test_new_streaming_model_takes_the_causal_lm(tmp_path):
    """A new streaming model (`model.gliner.model_type: gliner_streaming_span` on the causal LM `model.encoder`
    names) is built as gliner's `from_config` builds it: the tokenizer with gliner's tokens and their indices, the
    LM's base model as its backbone (the rows gliner adds aside), every tensor gliner has; gliner loads it strictly,
    and two training steps export a directory gliner loads strictly."""
    lm = build_label_decoder(tmp_path / "lm", {**BACKBONE, "tie_word_embeddings": False})
    fields = dict(hidden_size=32, max_width=4, labels_encoder_config=LABELS_ENCODER)
    section = ModelSection(encoder=str(lm), gliner={"model_type": "gliner_streaming_span", **fields})
    build_model(section, seed=0).save_pretrained(tmp_path / "new")
    back = gliner.GLiNER.from_pretrained(str(tmp_path / "new"), local_files_only=True, strict=True)
    config = gliner.StreamingSpanConfig(model_name=str(lm), **fields)
    ref = gliner.GLiNER.from_config(config, backbone_from_pretrained=True, local_files_only=True)
    state, expected = back.model.state_dict(), ref.model.state_dict()
    assert state.keys() == expected.keys()
    for name in ("class_token_index", "sep_token_index", "vocab_size"):
        assert getattr(back.config, name) == getattr(ref.config, name), name
    assert back.data_processor.transformer_tokenizer.get_vocab() == ref.data_processor.transformer_tokenizer.get_vocab()
    causal = transformers.AutoModelForCausalLM.from_pretrained(lm).state_dict()
    prefix = "token_rep_layer.decoder_layer.model."
    for key, tensor in causal.items():
        if key.startswith("transformer."):
            ours, theirs = state[prefix + key.split(".", 1)[1]].numpy(), tensor.numpy()
            np.testing.assert_array_equal(ours[: len(theirs)], theirs, err_msg=key)

    train = [json.dumps(record) for record in RECORDS]
    (tmp_path / "train.jsonl").write_text("\n".join(train) + "\n")
    run = {"model": {"init_from": str(tmp_path / "new")}, "data": {"train": str(tmp_path / "train.jsonl")}}
    (tmp_path / "run.yaml").write_text(json.dumps(run))
    steps = ["trainer.num_steps=2", "trainer.global_batch_size=2", "trainer.save_every=2", "trainer.log_every=1"]
    main(["train", "--config", str(tmp_path / "run.yaml"), f"trainer.output_dir={tmp_path / 'run'}", *steps])
    gliner.GLiNER.from_pretrained(str(tmp_path / "run" / "final"), local_files_only=True, strict=True)
