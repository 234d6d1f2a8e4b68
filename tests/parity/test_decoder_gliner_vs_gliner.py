"""gliner's label-generating decoder model (`UniEncoderSpanDecoderGLiNER`) end to end against the `gliner` package: a
gliner-built model (tiny BERT backbone, tiny untied GPT-2 `labels_decoder` with its byte-level BPE tokenizer) loads
here strictly, our export is its state dict and loads in gliner strictly, and `inference` gives gliner's entities and
generated labels (greedy: gliner's `do_sample=False`), with and without the span's words in the decoder prefix
(`full_decoder_context`), constrained by `gen_constraints`, and with decoder_mode None (no generated labels).
decoder_mode "prompt" fails in gliner 0.2.29's own inference and is refused here (tests/unit/test_config_refusals.py).
Compressed prompts (`precomputed_prompts_mode`) generate gliner's labels; a new decoder model takes its causal LM as
gliner's does, and trains.
The token decoder model (`UniEncoderTokenDecoderGLiNER`) on the same backbone and decoder: checkpoints both ways, its
entities and generated labels, its training loss and gradients.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from pathlib import Path

import gliner
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from gliner.data_processing.collator import UniEncoderSpanDecoderDataCollator, UniEncoderTokenDecoderDataCollator

from gliner_jax import GLiNER
from gliner_jax.checkpoint_io import gliner_table, state_to_torch
from gliner_jax.cli import main
from gliner_jax.packing import pack
from gliner_jax.sharding import MeshConfig, make_mesh
from gliner_jax.testing.builders import build_backbone, build_label_decoder, build_reference, quantile_thresholds
from gliner_jax.training import data as data_lib
from gliner_jax.training.config import ModelSection
from gliner_jax.training.decoder_data import DecoderBatches
from gliner_jax.training.loss import LossConfig
from gliner_jax.training.model_init import build_model
from gliner_jax.training.optim import OptimizerConfig, parameter_groups, parameter_path
from gliner_jax.training.step import build_train_program, loss_terms
from tests.utils.encoders import TINY_HF
from tests.utils.gliner_parity import (
    assert_export_equals_reference,
    assert_gradients_close,
    assert_same_outputs,
)

MAX_WIDTH = 4
TEXTS = [
    "Barack Obama was born in Honolulu , Hawaii .",
    "Apple released the iPhone in 2007 .",
    "Angela Merkel led Germany from 2005 to 2021 .",
]
LABELS = ["person", "location", "organization"]
CONSTRAINTS = ["person", "city", "organization", "date of birth"]


# An untied head: with tied embeddings a random GPT-2 repeats its last input token, whatever the prefix.
DECODER = dict(n_positions=128, n_embd=24, n_layer=2, n_head=3, tie_word_embeddings=False)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """(a tiny BERT backbone's directory, a tiny GPT-2's directory)."""
    tmp = tmp_path_factory.mktemp("decoder_parts")
    backbone = build_backbone(tmp / "backbone", {"model_type": "bert", **TINY_HF["bert"], "num_hidden_layers": 2})
    return backbone, build_label_decoder(tmp / "decoder", DECODER)


@pytest.fixture(scope="module")
def reference(parts, tmp_path_factory):
    """(gliner's span-decoder model, its directory)."""
    tmp = tmp_path_factory.mktemp("decoder_gliner")
    backbone, decoder = parts
    shutil.copytree(decoder, tmp / "decoder")
    fields = dict(decoder_mode="span", hidden_size=32, max_width=MAX_WIDTH)
    ref = build_reference(backbone, tmp / "ref", labels_decoder=str(tmp / "decoder"), **fields)
    shutil.rmtree(tmp / "decoder")  # everything is read from the model's own directory, as gliner reads it
    return ref, tmp / "ref"


@pytest.fixture(scope="module")
def ours(reference):
    return GLiNER.from_pretrained(reference[1])


def variant(directory, target, ours, **fields):
    """(gliner's, ours): a copy of a gliner model directory with `fields` changed in its gliner_config.json, loaded by
    gliner, and our model with that config (our network: the weights are the same, and so are its compiled
    programs)."""
    shutil.copytree(directory, target)
    config = json.loads((target / "gliner_config.json").read_text())
    (target / "gliner_config.json").write_text(json.dumps(config | fields))
    changed = dataclasses.replace(ours.config, **fields)
    copy = GLiNER(ours.model, changed, ours.tokenizer, decoder_tokenizer=ours.decoder_tokenizer)
    return gliner.GLiNER.from_pretrained(str(target), local_files_only=True), copy


def test_checkpoint_loads_strictly_both_ways(reference, ours, tmp_path):
    ref, _ = reference
    assert ours.config.to_dict()["labels_decoder_config"]["n_embd"] == 24
    assert_export_equals_reference(ours, ref, tmp_path / "export")
    assert (tmp_path / "export" / "decoder_tokenizer" / "tokenizer_config.json").is_file()
    back = gliner.GLiNER.from_pretrained(str(tmp_path / "export"), local_files_only=True, strict=True)
    assert type(back).__name__ == "UniEncoderSpanDecoderGLiNER"
    assert back.data_processor.decoder_tokenizer.get_vocab() == ref.data_processor.decoder_tokenizer.get_vocab()


def test_inference_matches_gliner(reference, ours, tmp_path, capsys):
    ref, directory = reference
    # About a third of each batch's spans above it (the lower of the two batches' thresholds): the decoder writes a
    # label for each, before flat decoding picks. gliner's generation fails on a batch that selects no span.
    threshold = min(quantile_thresholds(ref, TEXTS[i : i + 2], LABELS, (0.65,))[0] for i in (0, 2))
    # Batches of 2 (gliner's prefix length is the batch's); the other calls run one batch, fewer programs to compile.
    expected = ref.inference(TEXTS, LABELS, do_sample=False, threshold=threshold, batch_size=2)
    found = ours.inference(TEXTS, LABELS, threshold=threshold, batch_size=2)
    assert_same_outputs(found, expected)
    generated = [label for entities in found for entity in entities for label in entity["generated_labels"]]
    assert len(generated) > 5  # about a third of the spans, each with its label

    # Constrained to labels, nested, at most 3 tokens (a label cut short).
    options = dict(threshold=threshold, gen_constraints=CONSTRAINTS, flat_ner=False)
    expected = ref.inference(TEXTS, LABELS, do_sample=False, max_new_tokens=3, **options)
    found = ours.inference(TEXTS, LABELS, max_new_tokens=3, **options)
    assert_same_outputs(found, expected)
    written = {label for entities in found for e in entities for label in e["generated_labels"]}
    assert written and all(any(f" {c}".startswith(label) for c in CONSTRAINTS) for label in written)
    flags = ["--labels", ",".join(LABELS), "--threshold", repr(threshold), "--nested", "--max-new-tokens", "3"]
    main(["predict", "--model", str(directory), *flags, "--gen-constraints", ",".join(CONSTRAINTS), *TEXTS])
    assert_same_outputs([json.loads(line)["entities"] for line in capsys.readouterr().out.splitlines()], expected)

    # Without the span's words: the decoder reads the span representation alone.
    options = dict(options, flat_ner=True)
    alone_ref, alone = variant(directory, tmp_path / "alone", ours, full_decoder_context=False)
    expected = alone_ref.inference(TEXTS, LABELS, do_sample=False, **options)
    assert_same_outputs(alone.inference(TEXTS, LABELS, **options), expected)

    # decoder_mode None: gliner builds (and saves) the decoder, and never reads what it generates.
    silent_ref, silent = variant(directory, tmp_path / "silent", ours, decoder_mode=None)
    expected = silent_ref.inference(TEXTS, LABELS, do_sample=False, threshold=threshold)
    assert not any("generated_labels" in entity for entities in expected for entity in entities)
    assert_same_outputs(silent.inference(TEXTS, LABELS, threshold), expected)


def test_beam_search_matches_gliner(reference, ours, capsys):
    """`num_gen_sequences` > 1: gliner's generation with `do_sample=False` is transformers' beam search of that many
    beams; each entity carries the best labels in gliner's order, free and constrained to labels, and from
    `predict --num-gen-sequences`. Sampling (gliner's default `do_sample=True`) is refused."""
    ref, directory = reference
    threshold = min(quantile_thresholds(ref, TEXTS[i : i + 2], LABELS, (0.65,))[0] for i in (0, 2))
    options = dict(threshold=threshold, batch_size=2, num_gen_sequences=3, max_new_tokens=5)
    expected = ref.inference(TEXTS, LABELS, do_sample=False, **options)
    assert_same_outputs(ours.inference(TEXTS, LABELS, **options), expected)
    generated = [entity["generated_labels"] for entities in expected for entity in entities]
    assert generated and all(len(labels) == 3 for labels in generated)
    assert any(len(set(labels)) == 3 for labels in generated)  # the beams differ

    options = dict(threshold=threshold, gen_constraints=CONSTRAINTS, num_gen_sequences=2, flat_ner=False)
    expected = ref.inference(TEXTS, LABELS, do_sample=False, **options)
    assert_same_outputs(ours.inference(TEXTS, LABELS, **options), expected)
    flags = ["--labels", ",".join(LABELS), "--threshold", repr(threshold), "--nested", "--num-gen-sequences", "2"]
    main(["predict", "--model", str(directory), *flags, "--gen-constraints", ",".join(CONSTRAINTS), *TEXTS])
    assert_same_outputs([json.loads(line)["entities"] for line in capsys.readouterr().out.splitlines()], expected)
    with pytest.raises(NotImplementedError, match="do_sample=True: sampled generation is not implemented"):
        ours.inference(TEXTS, LABELS, do_sample=True)  # gliner's default, which no seed reproduces


EXAMPLES = [
    {  # (0, 1) twice: gliner's decoder model keeps its first label only
        "tokenized_text": TEXTS[0].split(),
        "ner": [[0, 1, "person"], [5, 7, "location"], [5, 5, "city"], [0, 1, "politician"]],
    },
    {"tokenized_text": TEXTS[1].split(), "ner": [[0, 0, "company"], [3, 3, "product"], [5, 5, "date"]]},
    {"tokenized_text": TEXTS[2].split(), "ner": [[0, 1, "person"], [3, 3, "country"]]},
]


def training_output(ref, batch: dict) -> tuple:
    """gliner's model output on its collated training batch in eval mode (no dropout), and every parameter's gradient
    of its loss."""
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    ref.model.eval()
    ref.model.zero_grad()
    output = ref.model(**tensors)
    output.loss.backward()
    return output, {name: p.grad.numpy() for name, p in ref.model.named_parameters() if p.grad is not None}


def assert_packed_loss_equal(model, arrays: dict, total, terms: dict) -> None:
    """The batch packed (`data.packing`: several examples per row, each gold span naming its example's slot) gives
    the unpacked batch's loss and decoder term."""
    packed = pack(arrays, row_length=128, pad_id=0)
    assert packed["attention_mask"].max() > 1  # examples share rows
    packed_total, packed_terms = nnx.jit(loss_terms, static_argnums=2)(
        model, jax.tree.map(jnp.asarray, packed), LossConfig()
    )
    np.testing.assert_allclose(float(packed_total), float(total), rtol=2e-5)
    np.testing.assert_allclose(float(packed_terms["decoder"]), float(terms["decoder"]), rtol=2e-5)


def test_training_matches_gliner(reference, ours, tmp_path):
    """gliner's collated training batch (blank_entity_prob 0) of its examples and labels: our data path gives its
    decoder arrays and prefix length; our loss on our batch is gliner's total (decoder_loss_coef * decoder +
    span_loss_coef * span) on its batch, and so is every parameter gradient; the decoder trains in gliner's "others"
    group; one train step, exported, loads in gliner strictly."""
    ref, _ = reference
    ref.config.blank_entity_prob = 0.0
    collator = UniEncoderSpanDecoderDataCollator(ref.config, data_processor=ref.data_processor, prepare_labels=True)
    label_sets = [["city", "person", "politician", "location"], ["date", "company", "product"], ["person", "country"]]
    batch = collator(EXAMPLES, entity_types=label_sets)
    output, ref_grads = training_output(ref, batch)

    decoder = DecoderBatches.of(ours.config, ours.decoder_tokenizer)
    arrays = data_lib.collate(EXAMPLES, label_sets, ours.processor, batch_size=4, decoder=decoder)
    count = batch["decoder_labels"].shape[0]
    assert count == len(arrays["decoder_spans"]) == 8  # (0, 1) once
    for name in ("decoder_labels_ids", "decoder_labels_mask", "decoder_labels"):
        np.testing.assert_array_equal(arrays[name][:count, : batch[name].shape[1]], batch[name].numpy(), name)
    for name in ("decoder_input_ids", "decoder_words_mask"):
        np.testing.assert_array_equal(arrays[name][:3, : batch[name].shape[1]], batch[name].numpy(), name)
    assert arrays["decoder_prefix_len"][0] == output.decoder_embedding.shape[2]  # gliner's, padding slots counted

    def loss(model):
        return loss_terms(model, jax.tree.map(jnp.asarray, arrays), LossConfig())

    (total, terms), grads = nnx.jit(nnx.value_and_grad(loss, has_aux=True))(ours.model)
    np.testing.assert_allclose(float(terms["decoder"]), float(output.decoder_loss.detach()), rtol=1e-5)
    np.testing.assert_allclose(float(total), float(output.loss.detach()), rtol=1e-5)
    assert_packed_loss_equal(ours.model, arrays, total, terms)
    graphdef, _, rest = nnx.split(ours.model, nnx.Param, ...)
    assert_gradients_close(state_to_torch(nnx.merge(graphdef, grads, rest), gliner_table(ours.config)), ref_grads)

    groups = jax.tree_util.tree_leaves_with_path(parameter_groups(grads, OptimizerConfig(num_steps=1)))
    assert {group for path, group in groups if parameter_path(path).startswith("label_decoder/")} == {"others"}
    program = build_train_program(
        nnx.clone(ours.model),
        OptimizerConfig(num_steps=1, warmup_ratio=0.0),
        LossConfig(),
        make_mesh(MeshConfig()),
        list(arrays),
    )
    placed = jax.device_put(arrays, program.batch_shardings)
    params, *_ = program.step(program.params, program.opt_state, program.stats, placed, jax.random.key(0))
    trained = nnx.merge(program.eval_graphdef, params, program.rest)
    GLiNER(trained, ours.config, ours.tokenizer, decoder_tokenizer=ours.decoder_tokenizer).save_pretrained(
        tmp_path / "trained"
    )
    back = gliner.GLiNER.from_pretrained(str(tmp_path / "trained"), local_files_only=True, strict=True)
    key = "decoder.decoder_layer.model.lm_head.weight"
    assert not np.array_equal(back.model.state_dict()[key].numpy(), ref.model.state_dict()[key].numpy())


def test_compressed_prompts_generate_gliners_labels(reference, tmp_path):
    """`compress_prompt_embeddings` on a decoder model, by gliner and by us: the stored labels are scored whatever
    labels are given, with gliner's entities and generated labels, by our compressed model and by ours read from
    gliner's compressed checkpoint; its training loss and decoder term on gliner's batch of the stored labels."""
    _, directory = reference
    ref = gliner.GLiNER.from_pretrained(str(directory), local_files_only=True)  # its own copy: compressing changes it
    ours = GLiNER.from_pretrained(directory)
    for model in (ref, ours):
        model.compress_prompt_embeddings(TEXTS, LABELS, batch_size=2)
    ref.save_pretrained(tmp_path / "compressed")
    threshold = min(quantile_thresholds(ref, TEXTS[i : i + 2], LABELS, (0.65,))[0] for i in (0, 2))
    expected = ref.inference(TEXTS, ["anything"], do_sample=False, threshold=threshold, batch_size=2)
    assert any("generated_labels" in entity for entities in expected for entity in entities)
    for model in (ours, GLiNER.from_pretrained(tmp_path / "compressed")):
        assert_same_outputs(model.inference(TEXTS, ["anything"], threshold=threshold, batch_size=2), expected)

    # Training it: gliner's collator gives every example the stored labels; the same loss and decoder term.
    ref.config.blank_entity_prob = 0.0
    collator = UniEncoderSpanDecoderDataCollator(ref.config, data_processor=ref.data_processor, prepare_labels=True)
    output, _ = training_output(ref, collator(EXAMPLES))
    decoder = DecoderBatches.of(dataclasses.replace(ours.config, blank_entity_prob=0.0), ours.decoder_tokenizer)
    stored = [ours.config.precomputed_labels] * len(EXAMPLES)
    arrays = data_lib.collate(EXAMPLES, stored, ours.processor, batch_size=4, decoder=decoder)
    total, terms = loss_terms(ours.model, jax.tree.map(jnp.asarray, arrays), LossConfig())
    np.testing.assert_allclose(float(terms["decoder"]), float(output.decoder_loss.detach()), rtol=1e-5)
    np.testing.assert_allclose(float(total), float(output.loss.detach()), rtol=1e-5)


def test_training_without_decoder_mode_is_refused_as_gliner_fails(reference, ours, tmp_path):
    """decoder_mode null: gliner's training forward fails on its own collated batch (its decoder rows do not match
    its decoder targets); our trainer refuses such a model by name before any step."""
    silent_ref, _ = variant(reference[1], tmp_path / "silent", ours, decoder_mode=None)
    silent_ref.config.blank_entity_prob = 0.0
    collator = UniEncoderSpanDecoderDataCollator(silent_ref.config, data_processor=silent_ref.data_processor)
    batch = collator(EXAMPLES[:1], entity_types=[["person", "location", "city", "politician"]])
    with pytest.raises(RuntimeError, match="Sizes of tensors must match"):
        silent_ref.model(**{k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})
    train = Path(__file__).parents[2] / "data" / "tiny" / "train.jsonl"
    run = tmp_path / "run.yaml"
    run.write_text(json.dumps({"model": {"init_from": str(tmp_path / "silent")}, "data": {"train": str(train)}}))
    with pytest.raises(SystemExit) as error:
        main(["train", "--config", str(run), f"trainer.output_dir={tmp_path / 'run'}"])
    assert "training a decoder model with decoder_mode=None" in str(error.value.code)


# Texts of one word count: gliner's span extraction reads a batch's padded word slots (see
# tests/parity/test_represent_spans_vs_gliner.py).
SAME_LENGTH = [
    "Marie Curie won the Nobel Prize in Physics in Paris",
    "Angela Merkel met the United Nations team in Geneva today",
    "Apple opened a new office in Berlin and hired engineers",
]


def test_token_decoder_matches_gliner(reference, tmp_path):
    """gliner's token decoder model (`UniEncoderTokenDecoderGLiNER`: span_mode token_level, represent_spans forced
    on) on the span decoder's backbone and decoder: strict checkpoints both ways, and gliner's entities and generated
    labels (its spans found in the token probabilities, labels written for those whose best span probability is above
    0.5, each prefix read from the word before the span). Random token head and span layer, centred as in
    test_represent_spans_vs_gliner: token logits per channel (spans of several words are found), span representations
    (then scaled down: span probabilities about 0.3 to 0.55). decoder_mode None: the represent_spans entities.
    A few training steps export a directory gliner loads strictly."""
    ref = token_decoder_reference(reference[1], tmp_path / "ref")
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in ref.model.named_parameters():  # a random token head and span layer
            if name.startswith(("scorer", "span_rep_layer")):
                param.normal_(0, 0.3)
        ref.model.eval()
        batch = ref.collate_batch(*(ref.prepare_batch(SAME_LENGTH, LABELS)[k] for k in ("input_x", "entity_types")))
        output = ref.model(**batch, threshold=0.0)  # every span
        spans = ref.model.span_rep_layer(output.words_embedding, output.span_idx)[output.span_mask]
        ref.model.scorer.out_mlp[3].bias.sub_(output.logits.mean(dim=(0, 1, 2)))
        last = ref.model.span_rep_layer.span_rep_layer.out_project[3]
        last.bias.sub_(spans.mean(dim=0))
        last.weight.mul_(0.1)
        last.bias.mul_(0.1)
    ref.save_pretrained(tmp_path / "ref")
    ours = GLiNER.from_pretrained(tmp_path / "ref")
    assert_export_equals_reference(ours, ref, tmp_path / "export")
    back = gliner.GLiNER.from_pretrained(str(tmp_path / "export"), local_files_only=True, strict=True)
    assert type(back).__name__ == "UniEncoderTokenDecoderGLiNER"

    # Nested at 0.3: spans above it, some of them above 0.5 (a generated label) and some not; 4 tokens a label (the
    # labels of a random decoder, read from prefixes of batches of 2, each with its own prefix length).
    options = dict(threshold=0.3, flat_ner=False, batch_size=2, max_new_tokens=4)
    expected = ref.inference(SAME_LENGTH, LABELS, do_sample=False, **options)
    assert_same_outputs(ours.inference(SAME_LENGTH, LABELS, **options), expected)
    generated = [("generated_labels" in entity, entity["start"]) for entities in expected for entity in entities]
    assert {has for has, _ in generated} == {True, False}
    assert (True, 0) in generated  # a span of the first word: its prefix reads the label prompt's decoder tokens

    # decoder_mode None: gliner generates and never reads it; the entities are the represent_spans token model's.
    silent_ref, silent = variant(tmp_path / "ref", tmp_path / "silent", ours, decoder_mode=None)
    expected = silent_ref.inference(SAME_LENGTH, LABELS, do_sample=False, **options)
    assert not any("generated_labels" in entity for entities in expected for entity in entities)
    options.pop("max_new_tokens")
    assert_same_outputs(silent.inference(SAME_LENGTH, LABELS, **options), expected)

    # Two training steps, exported.
    train = Path(__file__).parents[2] / "data" / "tiny" / "train.jsonl"
    run = tmp_path / "run.yaml"
    run.write_text(json.dumps({"model": {"init_from": str(tmp_path / "ref")}, "data": {"train": str(train)}}))
    steps = ["trainer.num_steps=2", "trainer.global_batch_size=2", "trainer.save_every=2", "trainer.log_every=1"]
    main(["train", "--config", str(run), f"trainer.output_dir={tmp_path / 'run'}", *steps])
    trained = gliner.GLiNER.from_pretrained(str(tmp_path / "run" / "final"), local_files_only=True, strict=True)
    assert type(trained).__name__ == "UniEncoderTokenDecoderGLiNER"


def token_decoder_reference(directory: Path, target: Path):
    """gliner's token decoder model (span_mode token_level) on the span decoder model's weights (its span head
    unused, the token head at its initial values), saved to `target`."""
    shutil.copytree(directory, target)
    config = json.loads((directory / "gliner_config.json").read_text())
    (target / "gliner_config.json").write_text(json.dumps(config | {"span_mode": "token_level"}))
    ref = gliner.GLiNER.from_pretrained(str(target), local_files_only=True, strict=False)
    assert type(ref).__name__ == "UniEncoderTokenDecoderGLiNER" and ref.config.represent_spans
    ref.save_pretrained(target)
    return ref


# "ner" out of position order (gliner pairs the spans with the labels sorted by position), two labels on one span, a
# span wider than max_width (the token model has no width limit), a label not among the example's (no target).
TOKEN_RECORDS = [
    {
        "tokenized_text": SAME_LENGTH[0].split(),
        "ner": [[9, 9, "city"], [0, 1, "person"], [0, 1, "scientist"], [3, 7, "award"]],
    },
    {"tokenized_text": SAME_LENGTH[1].split(), "ner": [[0, 1, "person"], [4, 6, "organization"], [9, 9, "x"]]},
    {"tokenized_text": SAME_LENGTH[2].split(), "ner": [[6, 6, "city"], [0, 0, "company"]]},
]
TOKEN_LABELS = [["person", "city", "award", "scientist"], ["person", "organization"], ["company", "city"]]
SEED = 5


@pytest.mark.parametrize("blank", [0.0, 1.0], ids=["labels", "blank"])
def test_token_decoder_training_matches_gliner(reference, tmp_path, blank):
    """gliner's token decoder model on its collated training batch (its random negative spans and blank draw from
    one seed; `blank_entity_prob` 1: the prompt is "entity" alone): our data path gives its decoder arrays and prefix
    length; our loss is gliner's (decoder_loss_coef * decoder + token_loss_coef * (token_loss_coef * token +
    span_loss_coef * span)), its decoder term too, and so is every parameter's gradient."""
    ref = token_decoder_reference(reference[1], tmp_path / "ref")
    ref.config.blank_entity_prob = blank
    ref.config.token_loss_coef, ref.config.span_loss_coef, ref.config.decoder_loss_coef = 0.7, 1.3, 0.4
    collator = UniEncoderTokenDecoderDataCollator(ref.config, data_processor=ref.data_processor, prepare_labels=True)
    random.seed(SEED)  # gliner draws its negative spans and blank batches from the global random module
    batch = collator(TOKEN_RECORDS, entity_types=TOKEN_LABELS)
    output, ref_grads = training_output(ref, batch)

    ours = GLiNER.from_pretrained(tmp_path / "ref")
    config = dataclasses.replace(
        ours.config, blank_entity_prob=blank, token_loss_coef=0.7, span_loss_coef=1.3, decoder_loss_coef=0.4
    )
    model = nnx.clone(ours.model)
    model.config = config
    decoder = DecoderBatches.of(config, ours.decoder_tokenizer)
    records = [data_lib.normalize_record(record) for record in TOKEN_RECORDS]
    arrays = data_lib.collate(
        records, TOKEN_LABELS, ours.processor, batch_size=4, decoder=decoder, rng=random.Random(SEED)
    )
    assert (arrays["labels_valid"][:3].sum(axis=1) == 1).all() == bool(blank)
    count = batch["decoder_labels"].shape[0]
    assert count == len(arrays["decoder_spans"][arrays["decoder_labels"][:, 0] != -100]) == 8
    for name in ("decoder_labels_ids", "decoder_labels_mask", "decoder_labels"):
        np.testing.assert_array_equal(arrays[name][:count, : batch[name].shape[1]], batch[name].numpy(), name)
    assert arrays["decoder_prefix_len"][0] == output.decoder_embedding.shape[2]

    def loss(model):
        return loss_terms(model, jax.tree.map(jnp.asarray, arrays), LossConfig())

    (total, terms), grads = nnx.jit(nnx.value_and_grad(loss, has_aux=True))(model)
    np.testing.assert_allclose(float(terms["decoder"]), float(output.decoder_loss.detach()), rtol=1e-5)
    np.testing.assert_allclose(float(total), float(output.loss.detach()), rtol=1e-5)
    assert_packed_loss_equal(model, arrays, total, terms)
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    assert_gradients_close(state_to_torch(nnx.merge(graphdef, grads, rest), gliner_table(config)), ref_grads)


def test_new_decoder_model_takes_the_causal_lm(parts, tmp_path):
    """A new decoder model (`model.gliner.labels_decoder` naming a causal LM) takes its weights, config and tokenizer
    as gliner's from-pretrained decoder does: gliner loads our new model strictly, with the causal LM's tensors and
    gliner's decoder tokenizer, and the model trains (two steps, packed rows) into a directory gliner loads
    strictly."""
    backbone, decoder = parts
    fields = dict(labels_decoder=str(decoder), decoder_mode="span", hidden_size=32, max_width=MAX_WIDTH)
    build_model(ModelSection(encoder=str(backbone), gliner=fields), seed=0).save_pretrained(tmp_path / "new")
    back = gliner.GLiNER.from_pretrained(str(tmp_path / "new"), local_files_only=True, strict=True)
    state = back.model.state_dict()
    causal = transformers.AutoModelForCausalLM.from_pretrained(decoder).state_dict()
    for key, tensor in causal.items():
        np.testing.assert_array_equal(state["decoder.decoder_layer.model." + key].numpy(), tensor.numpy(), key)
    config = gliner.GLiNERConfig(model_name=str(backbone), **fields)
    ref = gliner.GLiNER.from_config(config, backbone_from_pretrained=True, local_files_only=True)
    assert state.keys() == ref.model.state_dict().keys()
    ours_tokenizer, ref_tokenizer = back.data_processor.decoder_tokenizer, ref.data_processor.decoder_tokenizer
    assert ours_tokenizer.get_vocab() == ref_tokenizer.get_vocab()
    assert ours_tokenizer.pad_token == ref_tokenizer.pad_token == ref_tokenizer.eos_token
    assert ours_tokenizer("Paris").input_ids == ref_tokenizer("Paris").input_ids  # a prefix space, as gliner's

    train = Path(__file__).parents[2] / "data" / "tiny" / "train.jsonl"
    data = {"train": str(train), "packing": True, "row_length": 128}  # several examples a row
    run = {"model": {"encoder": str(backbone), "gliner": fields}, "data": data}
    (tmp_path / "run.yaml").write_text(json.dumps(run))
    steps = ["trainer.num_steps=2", "trainer.global_batch_size=4", "trainer.save_every=2", "trainer.log_every=1"]
    main(["train", "--config", str(tmp_path / "run.yaml"), f"trainer.output_dir={tmp_path / 'run'}", *steps])
    trained = gliner.GLiNER.from_pretrained(str(tmp_path / "run" / "final"), local_files_only=True, strict=True)
    key = "decoder.decoder_layer.model.lm_head.weight"
    assert not np.array_equal(trained.model.state_dict()[key].numpy(), causal["lm_head.weight"].numpy())
