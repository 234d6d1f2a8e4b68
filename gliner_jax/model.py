"""`GLiNER`, the user's front door: a GLiNER network with its tokenizer and input pipeline, read from and written to
gliner's directory format; entity prediction over texts of any length and label sets of any size, and evaluation.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from gliner_jax.buckets import label_bucket
from gliner_jax.checkpoint_io import load_gliner, save_gliner
from gliner_jax.config import GLiNERConfig
from gliner_jax.data_formats import read_eval_data
from gliner_jax.evaluation import Evaluation, RelationEvaluation, evaluate_examples, evaluate_relations
from gliner_jax.hub import HubOptions, resolve_gliner
from gliner_jax.label_generation import GenerationOptions, LabelGeneration, generation_ids, label_trie
from gliner_jax.modeling.decoders.generation import TrieTable, beam_generate, greedy_generate
from gliner_jax.modeling.gliner import GLiNERModel, PrecomputedPrompts
from gliner_jax.modeling.relations import PairSelection
from gliner_jax.pipeline import Chunk, DetailedSpan, LabelTable, Pipeline, RelationStage, RelationTuple, WordSpan
from gliner_jax.sharding import Placement, round_up
from gliner_jax.streaming import Sessions
from gliner_jax.streaming_engines import AsyncStreamingEngine, StreamingBatch
from gliner_jax.text.collate import Batch, Processor
from gliner_jax.text.labels import Labels, LabelSet, normalize_labels
from gliner_jax.text.wire import WireSizes, from_wire
from gliner_jax.text.words import Word, joined_word_offsets

# The jitted inference entry points (tests count their compiled programs): the forward pass of every model kind, and
# a bi-encoder's label encoder.


@functools.partial(jax.jit, static_argnums=(0, 3, 4), static_argnames=("vectors", "label_vectors", "span_states"))
def _forward(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    transfer: jax.Array,
    sizes: WireSizes,
    probabilities: bool,
    labels: dict[str, jax.Array] | None = None,
    *,
    vectors: bool = False,
    label_vectors: bool = False,
    span_states: bool = False,
) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
    """The model on a batch's wire array (`to_wire`), taken apart on the device; a bi-encoder's `labels` are the rows'
    labels_index and the request's label table, labels_embeddings. With `vectors` / `label_vectors`, also what
    entity vectors are read from, and with `span_states` what a represent_spans token model's span stage reads
    (`GLiNERModel.__call__`), left on the device."""
    model = nnx.merge(graphdef, state)
    kept_names = dict(vectors=vectors, label_vectors=label_vectors, span_states=span_states)
    asked = {name: True for name, on in kept_names.items() if on}  # only what this model kind is asked for
    output = model(**from_wire(transfer, sizes, xp=jnp), **(labels or {}), **asked)
    logits, kept = output if any(kept_names.values()) else (output, None)
    scores = jax.nn.sigmoid(logits) if probabilities else logits
    return scores if kept is None else (scores, kept)


@functools.partial(jax.jit, static_argnums=0)
def _encode_labels(graphdef: nnx.GraphDef, state: nnx.State, input_ids: jax.Array, mask: jax.Array) -> jax.Array:
    """A bi-encoder's label embeddings of tokenized labels."""
    return nnx.merge(graphdef, state).encode_labels(input_ids, mask)


@functools.partial(jax.jit, static_argnums=0)
def _span_probs(
    graphdef: nnx.GraphDef, state: nnx.State, span_words: jax.Array, prompts: jax.Array, span_idx: jax.Array
) -> jax.Array:
    """A represent_spans token model's span stage: the label probabilities [B, N, C] of spans span_idx [B, N, 2]."""
    return jax.nn.sigmoid(nnx.merge(graphdef, state).span_scores(span_words, prompts, span_idx))


@functools.partial(jax.jit, static_argnums=0)
def _relex_entities(
    graphdef: nnx.GraphDef, state: nnx.State, arrays: dict[str, jax.Array]
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A relation model's first stage: entity probabilities, span representations, relation prompts."""
    logits, spans, relations = nnx.merge(graphdef, state).relex(**arrays)
    return jax.nn.sigmoid(logits), spans, relations


@functools.partial(jax.jit, static_argnums=0)
def _relex_relations(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    spans: jax.Array,
    entity_index: jax.Array,
    entity_mask: jax.Array,
    relations: jax.Array,
    examples: jax.Array,
    relations_valid: jax.Array,
    adjacency_threshold: jax.Array,
) -> tuple[jax.Array | None, jax.Array]:
    """A relation model's second stage on the selected entities: adjacency and pair probabilities (`examples`,
    `relations_valid` and `adjacency_threshold`: the pairs gliner scores, which a TuckER layer reads)."""
    selection = PairSelection(examples, relations_valid, adjacency_threshold=adjacency_threshold)
    model = nnx.merge(graphdef, state)
    adjacency, pair_logits = model.relation_scores(spans, entity_index, entity_mask, relations, selection)
    return adjacency, jax.nn.sigmoid(pair_logits)


@functools.partial(jax.jit, static_argnums=(0, 6, 7, 8, 9, 10))
def _generate_labels(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    span_reps: jax.Array,
    examples: jax.Array,
    positions: jax.Array,
    span_words: jax.Array,
    prefix_len: int,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    num_sequences: int,
    context: tuple[jax.Array, jax.Array] | None,
    trie: TrieTable | None,
) -> jax.Array:
    """A decoder model's generated label tokens [M, num_sequences, max_new_tokens] of the spans at (example, flat
    span position) of span representations [B, W, K, H]: their prefixes (with their words' decoder tokens where
    `context` holds the batch's decoder rows) through `_generate`."""
    model = nnx.merge(graphdef, state)
    reps = span_reps.reshape(span_reps.shape[0], -1, span_reps.shape[-1])[examples, positions]
    rows = () if context is None else (context[0][examples], context[1][examples], prefix_len)
    prefix, _ = model.label_decoder.prefixes(reps, span_words, *rows)
    return _generate(model.label_decoder.decoder, prefix, max_new_tokens, eos_id, pad_id, num_sequences, trie)


@functools.partial(jax.jit, static_argnums=(0, 5, 6, 7, 8, 9))
def _generate_token_labels(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    span_words: jax.Array,
    examples: jax.Array,
    bounds: jax.Array,
    prefix_len: int,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    num_sequences: int,
    context: tuple[jax.Array, jax.Array] | None,
    trie: TrieTable | None,
) -> jax.Array:
    """A token decoder model's generated label tokens [M, num_sequences, max_new_tokens] of spans `bounds` [M, 2]
    (first and last word) of rows `examples` [M]: their representations from the word states `span_words` [B, W, H],
    their prefixes (gliner's token decoder reads its words from the word before the span: word_base 0),
    `_generate`."""
    model = nnx.merge(graphdef, state)
    reps = model.span_rep.endpoints(span_words[examples], bounds[:, None, :])[:, 0]
    rows = () if context is None else (context[0][examples], context[1][examples], prefix_len)
    prefix, _ = model.label_decoder.prefixes(reps, bounds, *rows, word_base=0)
    return _generate(model.label_decoder.decoder, prefix, max_new_tokens, eos_id, pad_id, num_sequences, trie)


def _generate(
    decoder: nnx.Module,
    prefix: jax.Array,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    num_sequences: int,
    trie: TrieTable | None,
) -> jax.Array:
    """Tokens [M, num_sequences, max_new_tokens] generated from prefixes [M, P, d] as gliner's `do_sample=False`:
    greedy for one sequence, else a beam search of `num_sequences` beams."""
    options = dict(max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id, trie=trie)
    if num_sequences == 1:
        return greedy_generate(decoder, prefix, **options)[:, None]
    return beam_generate(decoder, prefix, num_beams=num_sequences, **options)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _prompt_states(
    graphdef: nnx.GraphDef, state: nnx.State, transfer: jax.Array, sizes: WireSizes, num_relations: int
) -> tuple[jax.Array, jax.Array | None]:
    """A uni-encoder's label prompt states [B, C, H] of a batch's wire array read from its text (what
    `compress_prompt_embeddings` averages), and a relation model's relation prompt states [B, num_relations, H]
    (None when 0)."""
    model = nnx.merge(graphdef, state)
    arrays = from_wire(transfer, sizes, xp=jnp)
    input_ids, mask = arrays["input_ids"], arrays["attention_mask"]
    tokens = model.encode_text(input_ids, mask)
    num_labels = arrays["labels_valid"].shape[-1]
    prompts = model.prompt_states(tokens, input_ids, mask, 1, num_labels, from_text=True)
    if not num_relations:
        return prompts, None
    return prompts, model.prompt_states(tokens, input_ids, mask, 1, num_relations, relations=True, from_text=True)


# Labels encoded per call of the label encoder when `inference` embeds a request's labels (padded to a label bucket).
LABEL_CHUNK = 1024


class GLiNER:
    """A GLiNER model (a span model of any `span_mode`, or token `token_level`; uni-encoder, or bi-encoder with its
    label encoder and `labels_tokenizer`) that reads and writes `gliner` directories.

    Inference runs on all of this process's devices (see `distribute`). `pipelined` (default True): the host
    prepares the next batch and decodes the previous one while the devices run a batch; False runs batches one
    after the other (the same results). `pack_tokens` (default None): pack several texts into each encoder row of
    up to that many tokens, as gliner's inference packing (`InferencePackingConfig.max_length`) does: attention
    stays inside each text and positions restart in it, so the entities are those found unpacked, with less
    padding for the encoder; a text longer than `pack_tokens` gets a row of its own (relation models too: each
    batch's texts packed, the same entities and relations). Uni- and bi-encoders run
    through the same pipeline; a bi-encoder's request encodes its distinct labels once (`encode_labels`), and that
    label table goes to the devices with the batches.
    """

    def __init__(
        self,
        model: GLiNERModel,
        config: GLiNERConfig,
        tokenizer: PreTrainedTokenizerBase,
        labels_tokenizer: PreTrainedTokenizerBase | None = None,
        decoder_tokenizer: PreTrainedTokenizerBase | None = None,
    ):
        self.model = model
        self.config = config
        self.tokenizer = tokenizer
        self.labels_tokenizer = labels_tokenizer if config.is_bi_encoder else None
        if config.is_decoder and decoder_tokenizer is None:
            raise ValueError(f"a decoder model (labels_decoder={config.labels_decoder!r}) needs its decoder tokenizer")
        self.decoder_tokenizer = decoder_tokenizer if config.is_decoder else None
        self.processor = Processor.from_config(config, tokenizer, self.labels_tokenizer)
        self.placement: Placement | None = None
        self.pipelined = True
        self.pack_tokens: int | None = None
        self.sessions = Sessions(model, config, self.processor) if config.is_streaming else None
        if config.is_bi_encoder:
            return
        tokens = {"class_token_index": config.prompt_token}
        if config.is_streaming:
            tokens["sep_token_index"] = config.sep_token
        if config.is_relex:
            tokens["rel_token_index"] = config.rel_token
        for field, token in tokens.items():
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id != getattr(config, field):
                raise ValueError(
                    f"the tokenizer's id for {token!r} is {token_id}, but the config's {field} is "
                    f"{getattr(config, field)}"
                )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        dtype: jax.typing.DTypeLike = jnp.float32,
    ) -> GLiNER:
        """Load a GLiNER model: a local directory (written by `gliner.GLiNER.save_pretrained`, by `save_pretrained`
        here, or by an older gliner version), or a Hugging Face Hub repo id such as "urchade/gliner_small-v2.1".

        A repo id is fetched with huggingface_hub (`revision`, `cache_dir`, `token`, `local_files_only`, and the
        HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE / HF_TOKEN variables, as gliner passes them); read offline from the
        cache when HF_HUB_OFFLINE=1. Legacy layouts are completed as gliner completes them: the backbone's config and
        tokenizer come from `model_name` when the checkpoint lacks them (`gliner_jax.hub`). `dtype` is the compute
        dtype; parameters are float32.
        """
        options = HubOptions(revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only)
        layout = resolve_gliner(name_or_path, options)
        model, config = load_gliner(layout.directory, config=layout.config, dtype=dtype)
        return cls(model, config, layout.tokenizer, layout.labels_tokenizer, layout.decoder_tokenizer)

    def save_pretrained(self, path: str | Path, *, native: bool = False, overwrite: bool = False) -> None:
        """Write a directory that `gliner.GLiNER.from_pretrained(path)` loads with every key matched (a bi-encoder's
        label tokenizer in its `labels_tokenizer/` folder, a decoder model's decoder tokenizer in
        `decoder_tokenizer/`, as gliner writes them).

        `native=True` writes our own parameter layout instead (flax_params.safetensors), which only
        gliner-jax reads. The folder is written beside `path` and renamed into place; an existing `path` must be
        empty, or with `overwrite` a model folder, replaced whole (ValueError otherwise, before anything is written).
        """
        save_gliner(
            self.model,
            self.config,
            path,
            self.tokenizer,
            self.labels_tokenizer,
            native=native,
            overwrite=overwrite,
            decoder_tokenizer=self.decoder_tokenizer,
        )

    def batch_logits(self, texts: list[str], labels: Labels, *, bucket: bool = True) -> tuple[Batch, np.ndarray]:
        """The processed batch and the raw logits: span [B, W, K, C] or token [B, W, C, 3]."""
        label_sets = self._label_sets(labels, len(texts))
        placement, graphdef, state = self._placed()
        table = self._label_table(placement, label_sets)
        batch = self.processor.collate_rows(
            [self.processor.split_words(text) for text in texts],
            [list(label_set) for label_set in label_sets],
            bucket=bucket,
            label_table=None if table is None else table.prompts,
            encode_table=False,
        )
        labels = None if table is None else table.arrays(placement.place_rows(batch.labels_index))
        output = _forward(graphdef, state, placement.place_rows(batch.to_wire()), batch.wire_sizes, False, labels)
        return batch, np.asarray(output)[: batch.input_ids.shape[0]]

    def distribute(
        self,
        mesh: jax.sharding.Mesh | None = None,
        state_shardings: Any = None,
        batch_sharding: jax.sharding.NamedSharding | None = None,
    ) -> None:
        """Run inference on `mesh` (default: a "data" axis over all of this process's devices). The parameters move
        there, replicated, or sharded by `state_shardings` for a model too large for one device (e.g.
        `sharding.state_shardings(nnx.state(model.model), mesh)`); each batch's rows are split over
        `batch_sharding` (default: over every mesh axis; `sharding.batch_sharding(mesh)` splits them over
        data and fsdp), and batch sizes are rounded up to a multiple of the number of row splits. Called with the
        defaults on first use."""
        self.placement = Placement.create(mesh, state_shardings, batch_sharding)
        nnx.update(self.model, self.placement.place_state(nnx.state(self.model)))

    def _label_sets(self, labels: Labels, num_texts: int) -> list[dict[str, str]]:
        """`normalize_labels`; in `precomputed_prompts_mode` the stored labels for every text instead, as gliner: the
        labels given are checked, then ignored, and label descriptions refused."""
        label_sets = normalize_labels(labels, num_texts)
        stored = self.config.precomputed_labels
        if stored is None:
            return label_sets
        described = isinstance(labels, Mapping) or any(isinstance(label_set, Mapping) for label_set in labels)
        if described:  # gliner refuses any mapping, descriptions equal to their labels too
            raise ValueError("Label descriptions are not supported with precomputed prompt embeddings")
        return normalize_labels(stored, num_texts)

    def _relation_sets(
        self, relations: str | Sequence[str] | Sequence[Sequence[str]], num_texts: int
    ) -> list[list[str]]:
        """`_relation_sets`; in `precomputed_prompts_mode` the stored relation labels for every text instead (none
        when the model stores none: gliner then finds no relations)."""
        relation_sets = _relation_sets(relations, num_texts)
        if not self.config.precomputed_prompts_mode:
            return relation_sets
        return [list(self.config.precomputed_relations or [])] * num_texts

    def compress_prompt_embeddings(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        rel_labels: Sequence[str] | None = None,
        batch_size: int = 8,
        distill: bool = False,
        **distill_options: Any,
    ) -> None:
        """gliner's `compress_prompt_embeddings`: store each label's prompt embedding averaged over `texts`, so that
        the model reads no label prompt again (`precomputed_prompts_mode`).

        Each batch of `batch_size` texts, in order, is encoded with all of `labels` (deduplicated) in its prompt (a
        relation model's with all of `rel_labels` too); each label's prompt state (after the projection, before the
        prompt MLP; a relation label's state at its `<<REL>>`) is summed over the texts and divided by their number.
        The config then stores the labels (`id_to_classes`, 1..N; `rel_id_to_classes`) and the mode; from then on
        every prediction scores those labels (and relations) whatever labels it is given (descriptions are
        refused), and `save_pretrained` writes the embeddings as gliner's `precomputed_prompts` (and
        `precomputed_rel_prompts`) tensors. A relation model compressed without `rel_labels` keeps the relation
        prompts it stored before, if any (without any it finds no relations, as gliner). `distill` (gliner's
        fine-tuning on pseudo-labels, a training run) raises NotImplementedError naming
        `gliner_jax.training.distill.compress_and_distill`, which does it; so do a bi-encoder (no prompts) and a
        streaming model (gliner's compression fails on both)."""
        if distill or distill_options:
            raise NotImplementedError(
                "compress_prompt_embeddings(distill=True): call gliner_jax.training.distill.compress_and_distill("
                "model, texts, labels, output_dir, ...), which trains the compressed model"
            )
        if self.config.is_bi_encoder or self.config.is_streaming:
            raise NotImplementedError(
                "compress_prompt_embeddings needs a uni-encoder model with label prompts (not a bi-encoder or a "
                "streaming model)"
            )
        if rel_labels is not None and not self.config.is_relex:
            raise ValueError("rel_labels are compressed only by a relation extraction model (config.relations_layer)")
        if not texts or not labels:
            raise ValueError("`texts` and `labels` must both be non-empty.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        labels = list(dict.fromkeys(labels))
        relations = list(dict.fromkeys(rel_labels)) if rel_labels else []
        plain = dataclasses.replace(self.config, precomputed_prompts_mode=False)
        processor = Processor.from_config(plain, self.tokenizer)
        graphdef, state = nnx.split(self.model)
        hidden = self.config.hidden_size
        totals = [np.zeros((len(labels), hidden), np.float64), np.zeros((len(relations), hidden), np.float64)]
        for begin in range(0, len(texts), batch_size):
            words = [[word for word, _, _ in processor.split_words(text)] for text in texts[begin : begin + batch_size]]
            per_text = [relations] * len(words) if self.config.is_relex else None
            batch = processor.collate_words(words, labels, batch_size=batch_size, relations=per_text)
            width = 0 if not relations else batch.relations_valid.shape[-1]
            states = _prompt_states(graphdef, state, batch.to_wire(), batch.wire_sizes, width)
            for total, value in zip(totals, states, strict=True):
                if value is not None:
                    total += np.asarray(value, np.float64)[: len(words), : len(total)].sum(axis=0)
        stored = {"id_to_classes": {i + 1: label for i, label in enumerate(labels)}}
        if relations:
            stored["rel_id_to_classes"] = {i + 1: label for i, label in enumerate(relations)}
        config = dataclasses.replace(self.config, precomputed_prompts_mode=True, **stored)
        self.model.config = self.config = config
        mean = [PrecomputedPrompts(jnp.asarray(total / len(texts), jnp.float32)) for total in totals]
        self.model.precomputed_prompts = nnx.data(mean[0])
        if relations:
            self.model.precomputed_rel_prompts = nnx.data(mean[1])
        self.processor = Processor.from_config(config, self.tokenizer)

    def _placed(self) -> tuple[Placement, nnx.GraphDef, nnx.State]:
        """The placement, and the model split for `_forward` with its state on the placement's devices."""
        if self.placement is None:
            self.distribute()
        graphdef, state = nnx.split(self.model)
        return self.placement, graphdef, self.placement.place_state(state)

    def _label_table(
        self,
        placement: Placement,
        label_sets: list[dict[str, str]],
        given: tuple[list[str], np.ndarray] | None = None,
    ) -> LabelTable | None:
        """A bi-encoder request's label table on the placement's devices: `given` (prompts, embeddings), or the
        distinct prompts of `label_sets` embedded by `encode_labels`; None for a uni-encoder."""
        if not self.config.is_bi_encoder:
            return None
        if given is None:
            prompts = list(dict.fromkeys(prompt for label_set in label_sets for prompt in label_set))
            embeddings = self.encode_labels(prompts, min(label_bucket(len(prompts)), LABEL_CHUNK))
        else:
            prompts, embeddings = given
        padded = _padded_rows(np.asarray(embeddings, np.float32), label_bucket(len(embeddings)))
        return LabelTable(prompts, placement.replicate(padded))

    def encode_labels(self, labels: Sequence[str], batch_size: int = 8, *, progress: bool = False) -> np.ndarray:
        """A bi-encoder's label embeddings [len(labels), hidden_size] (float32 NumPy), one row per label in order, as
        gliner's `encode_labels`: the label encoder over each label tokenized alone, mean-pooled over its tokens,
        `batch_size` labels at a time. Give them to `predict_with_embeds` / `batch_predict_with_embeds` to predict
        without running the label encoder again.

        Raises NotImplementedError for a uni-encoder, ValueError for anything but a list of strings."""
        if not self.config.is_bi_encoder:
            raise NotImplementedError("Labels pre-encoding is supported only for bi-encoder model.")
        if isinstance(labels, str) or not all(isinstance(label, str) for label in labels):
            raise ValueError("labels must be a list of label strings")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        labels = list(labels)
        graphdef, state = nnx.split(self.model)
        chunks = range(0, len(labels), batch_size)
        embeddings = [np.zeros((0, self.config.hidden_size), np.float32)]
        for begin in tqdm(chunks, desc="Encoding labels", unit="batch", disable=not progress or len(chunks) < 2):
            chunk = labels[begin : begin + batch_size]
            input_ids, mask = self.processor.tokenize_labels(chunk, rows=batch_size)
            encoded = _encode_labels(graphdef, state, jnp.asarray(input_ids), jnp.asarray(mask))
            embeddings.append(np.asarray(encoded, np.float32)[: len(chunk)])
        return np.concatenate(embeddings)

    def predict_with_embeds(
        self,
        text: str,
        labels_embeddings: Any,
        labels: Sequence[str],
        flat_ner: bool = True,
        threshold: float = 0.5,
        multi_label: bool = False,
        return_class_probs: bool = False,
        *,
        return_vectors: bool = False,
        return_label_vectors: bool = False,
        **kwargs: Any,
    ) -> list[dict]:
        """Entities of `labels` in `text` from precomputed label embeddings (`encode_labels(labels)`): only the text
        encoder runs. gliner's signature; see `batch_predict_with_embeds`."""
        return self.batch_predict_with_embeds(
            [text],
            labels_embeddings,
            labels,
            flat_ner=flat_ner,
            threshold=threshold,
            multi_label=multi_label,
            return_class_probs=return_class_probs,
            return_vectors=return_vectors,
            return_label_vectors=return_label_vectors,
            **kwargs,
        )[0]

    def batch_predict_with_embeds(
        self,
        texts: Sequence[str],
        labels_embeddings: Any,
        labels: Sequence[str],
        flat_ner: bool = True,
        threshold: float = 0.5,
        multi_label: bool = False,
        batch_size: int = 8,
        packing_config: Any = None,
        input_spans: Any = None,
        return_class_probs: bool = False,
        *,
        return_vectors: bool = False,
        return_label_vectors: bool = False,
        truncate: bool = False,
        progress: bool = False,
    ) -> list[list[dict]]:
        """Entities for each text (as `inference`, with its `input_spans`, `return_class_probs`, `return_vectors` and
        `return_label_vectors`) from precomputed label embeddings: row i of `labels_embeddings` [len(labels),
        hidden_size] (a NumPy or JAX array, or a CPU torch tensor) embeds `labels[i]`, as `encode_labels(labels)`
        returns them; one label list for every text. gliner's signature; `packing_config` raises NotImplementedError
        when set (see `pack_tokens`).

        Where `labels` repeats a label, gliner pairs the de-duplicated labels with the first rows of the
        embeddings, which shifts every label after the repeat; here each label keeps its own (first) row."""
        if packing_config is not None:
            raise NotImplementedError("packing_config is not supported; set GLiNER.pack_tokens instead")
        if not self.config.is_bi_encoder:
            raise NotImplementedError("Predicting with label embeddings is supported only for bi-encoder models.")
        normalize_labels(labels, len(texts))  # the same checks as inference
        if labels and isinstance(labels[0], list | tuple):
            raise ValueError("predicting with label embeddings takes one label list for all texts")
        table = np.asarray(labels_embeddings, np.float32)
        if table.shape != (len(labels), self.config.hidden_size):
            raise ValueError(
                f"labels_embeddings has shape {table.shape}; {len(labels)} labels need "
                f"({len(labels)}, {self.config.hidden_size}): one row of hidden_size per label, in order"
            )
        words = [self.processor.split_words(text) for text in texts]
        details = dict(class_probs=return_class_probs, vectors=return_vectors, label_vectors=return_label_vectors)
        spans = _word_input_spans(words, input_spans)
        options = (flat_ner, multi_label, batch_size, truncate, progress, (list(labels), table))
        found = self._word_spans(words, labels, threshold, *options, input_spans=spans, **details)
        return [_entity_dicts(*item) for item in zip(texts, words, found, strict=True)]

    def predict_entities(
        self,
        text: str,
        labels: LabelSet,
        threshold: float = 0.5,
        flat_ner: bool = True,
        multi_label: bool = False,
        *,
        input_spans: Sequence[Sequence[Mapping[str, int]]] | None = None,
        return_class_probs: bool = False,
        return_vectors: bool = False,
        return_label_vectors: bool = False,
        truncate: bool = False,
        gen_constraints: Sequence[str] | None = None,
        num_gen_sequences: int = 1,
        max_new_tokens: int = 15,
    ) -> list[dict]:
        """Entities of `labels` in `text`: dicts {start, end, text, label, score}, character offsets, by start.

        `labels` is a list of labels, or a {label: description} mapping: the model then reads each description in
        its label's place, and entities carry the label (as gliner does). `input_spans`, the `return_*` options and
        a decoder model's generation options are those of `inference` for the one text: as in gliner,
        `input_spans` holds one list of {start, end} dicts."""
        details = dict(
            return_class_probs=return_class_probs,
            return_vectors=return_vectors,
            return_label_vectors=return_label_vectors,
        )
        generation = dict(
            gen_constraints=gen_constraints, num_gen_sequences=num_gen_sequences, max_new_tokens=max_new_tokens
        )
        options = dict(input_spans=input_spans, truncate=truncate, **details, **generation)
        return self.inference([text], labels, threshold, flat_ner, multi_label, **options)[0]

    def inference(
        self,
        texts: Sequence[str],
        labels: Labels,
        threshold: float = 0.5,
        flat_ner: bool = True,
        multi_label: bool = False,
        batch_size: int = 8,
        *,
        input_spans: Sequence[Sequence[Mapping[str, int]]] | None = None,
        return_class_probs: bool = False,
        return_vectors: bool = False,
        return_label_vectors: bool = False,
        truncate: bool = False,
        progress: bool = False,
        relations: str | Sequence[str] | Sequence[Sequence[str]] | None = None,
        adjacency_threshold: float | None = None,
        relation_threshold: float | None = None,
        session_id: list[str] | None = None,
        recompute: bool = False,
        gen_constraints: Sequence[str] | None = None,
        num_gen_sequences: int = 1,
        max_new_tokens: int = 15,
        do_sample: bool = False,
    ) -> list[list[dict]] | tuple[list[list[dict]], list[list[dict]]]:
        """Entities for each text (see `predict_entities`); `labels` is one label set (a list, or a
        {label: description} mapping) for all texts, or one per text.

        A text longer than `max_len` words is read in overlapping windows of `max_len` words, so an
        entity anywhere in it can be found; `truncate=True` instead reads only its first `max_len`
        words, as the gliner library does. A label set whose prompt (2 words per label, plus one) does
        not fit in `max_len` words is run in several passes. Empty or whitespace-only texts give [].

        As gliner's options: `input_spans`, one list of {"start", "end"} character spans per text, restricts the
        candidates to those spans (a span whose ends are not a word's start and end is dropped; a span model never
        classifies one wider than max_width). `return_class_probs` (span models; gliner's token model gives none)
        adds "class_probs", the entity's 5 most probable labels {label: probability} best first; `return_vectors`
        adds "vector", a span model's span representation or a token model's mean word state over the entity;
        `return_label_vectors` adds "label_vector", the label embedding its score came from (a span model's
        projected label, a token model's label prompt); both NumPy float32 arrays [hidden_size]. An entity seen
        in several windows or label passes takes these from the row that gave its score.

        Relation extraction models (`config.relations_layer`): with `relations` (a relation label, a list for all
        texts, or one list per text) this returns (entities, relations) of each text as gliner's `inference` does:
        texts read up to `max_len` words, relations as dicts {head, tail, relation, score}, head and tail
        {start, end, text, type, entity_idx} (the entity's index in that text's entities).
        `adjacency_threshold` and `relation_threshold` default to `threshold`.

        Streaming span models (`config.is_streaming`) with `session_id` (one id per text) append each text to its
        session and return each session's entities so far, as gliner's session inference (`gliner_jax.streaming`);
        `recompute=True` rereads a session's whole text (and takes new labels).

        Decoder models (`config.labels_decoder`, decoder_mode "span"): each entity also carries "generated_labels",
        the labels its decoder writes for the span, generated as gliner's `inference(do_sample=False)` does (see
        `gliner_jax.label_generation`): greedily (a list of one), or the `num_gen_sequences` best of a beam search
        of that many beams; at most `max_new_tokens` tokens, within `gen_constraints` (labels the decoder may
        write) when given; texts read up to `max_len` words, batched as gliner batches them. `do_sample=True`
        (gliner's default: sampling at temperature 0.01) is not implemented.
        """
        if do_sample:
            raise NotImplementedError("do_sample=True: sampled generation is not implemented (use do_sample=False)")
        if session_id is not None:
            if self.sessions is None:
                raise ValueError("session_id needs a streaming span model (model_type 'gliner_streaming_span')")
            asked = dict(  # gliner refuses each of them with session inference too
                input_spans=input_spans is not None,
                return_vectors=return_vectors,
                return_label_vectors=return_label_vectors,
                relations=relations is not None,
            )
            if any(asked.values()):
                names = ", ".join(name for name, on in asked.items() if on)
                raise NotImplementedError(f"{names}: not available with session inference")
            options = dict(threshold=threshold, flat_ner=flat_ner, multi_label=multi_label, recompute=recompute)
            options |= dict(batch_size=batch_size, return_class_probs=return_class_probs)
            return self.sessions.infer(texts, labels, session_id, **options)
        generation = _generation(self.config, GenerationOptions(gen_constraints, num_gen_sequences, max_new_tokens))
        if relations is not None:
            asked = dict(
                input_spans=input_spans is not None,
                return_class_probs=return_class_probs,
                return_vectors=return_vectors,
                return_label_vectors=return_label_vectors,
            )
            if any(asked.values()):
                names = ", ".join(name for name, on in asked.items() if on)
                raise ValueError(f"{names}: not available with relations (entities and relations only)")
            return self._relations(
                texts,
                labels,
                relations,
                threshold,
                adjacency_threshold,
                relation_threshold,
                flat_ner,
                multi_label,
                batch_size,
            )
        words = [self.processor.split_words(text) for text in texts]
        details = dict(class_probs=return_class_probs, vectors=return_vectors, label_vectors=return_label_vectors)
        spans = _word_input_spans(words, input_spans)
        options = (flat_ner, multi_label, batch_size, truncate, progress)
        found = self._word_spans(
            words, labels, threshold, *options, input_spans=spans, generation=generation, **details
        )
        return [_entity_dicts(*item) for item in zip(texts, words, found, strict=True)]

    def clear_session(self, session_id: str | list[str]) -> None:
        """Forget one or more streaming sessions (see `inference`'s `session_id`)."""
        self._sessions().clear(session_id)

    def clear_sessions(self) -> None:
        """Forget every streaming session."""
        self._sessions().clear()

    @property
    def session_count(self) -> int:
        """How many streaming sessions are held."""
        return len(self._sessions())

    def create_streaming_batch(self, session_ids: list[str], labels: list[str]) -> StreamingBatch:
        """A streaming span model's fixed batch of sessions with one label list (gliner's `StreamingBatch`,
        `gliner_jax.streaming_engines`), apart from the model's own sessions."""
        sessions = self._sessions()
        return StreamingBatch(Sessions(sessions.model, sessions.config, sessions.processor), session_ids, labels)

    def create_async_streaming_engine(
        self, *, max_batch_size: int = 32, batch_wait_timeout_ms: float = 2.0, queue_capacity: int = 4096
    ) -> AsyncStreamingEngine:
        """An asyncio front to a streaming span model's sessions that batches appends arriving independently
        (gliner's `AsyncStreamingEngine`, `gliner_jax.streaming_engines`)."""
        options = dict(max_batch_size=max_batch_size, batch_wait_timeout_ms=batch_wait_timeout_ms)
        return AsyncStreamingEngine(self._sessions(), queue_capacity=queue_capacity, **options)

    def _sessions(self) -> Sessions:
        if self.sessions is None:
            raise ValueError("sessions exist only for streaming span models (model_type 'gliner_streaming_span')")
        return self.sessions

    def predict_relations(
        self,
        text: str,
        labels: LabelSet,
        relations: str | Sequence[str],
        threshold: float = 0.5,
        flat_ner: bool = True,
        multi_label: bool = False,
        *,
        adjacency_threshold: float | None = None,
        relation_threshold: float | None = None,
    ) -> tuple[list[dict], list[dict]]:
        """(entities, relations) of one text with a relation extraction model (see `inference`)."""
        entities, found = self.inference(
            [text],
            labels,
            threshold,
            flat_ner,
            multi_label,
            relations=relations,
            adjacency_threshold=adjacency_threshold,
            relation_threshold=relation_threshold,
        )
        return entities[0], found[0]

    def _relations(
        self,
        texts: Sequence[str],
        labels: Labels,
        relations: str | Sequence[str] | Sequence[Sequence[str]],
        threshold: float,
        adjacency_threshold: float | None,
        relation_threshold: float | None,
        flat_ner: bool,
        multi_label: bool,
        batch_size: int,
    ) -> tuple[list[list[dict]], list[list[dict]]]:
        """`inference` with relations: (entities, relations) of each text."""
        words = [self.processor.split_words(text) for text in texts]
        thresholds = (threshold, adjacency_threshold, relation_threshold)
        found = self._relation_rows(words, labels, relations, *thresholds, flat_ner, multi_label, batch_size)
        return _relation_dicts(list(texts), words, [spans for spans, _ in found], [rels for _, rels in found])

    def _relation_pipeline(
        self,
        threshold: float,
        adjacency_threshold: float | None,
        relation_threshold: float | None,
        flat_ner: bool,
        multi_label: bool,
        batch_size: int,
    ) -> Pipeline:
        """A relation extraction model's pipeline on its placement, for these options (checked here; the pair and
        relation thresholds default to `threshold`), batched as gliner batches it (see `Pipeline`)."""
        if not self.config.is_relex:
            raise ValueError("relations are extracted only by relation extraction models (config.relations_layer)")
        adjacency_threshold = threshold if adjacency_threshold is None else adjacency_threshold
        relation_threshold = threshold if relation_threshold is None else relation_threshold
        for value in (threshold, adjacency_threshold, relation_threshold):
            _check_options(value, batch_size)
        self._check_packing()
        placement, graphdef, state = self._placed()
        stage = RelationStage(
            lambda *arrays: _relex_relations(graphdef, state, *arrays), adjacency_threshold, relation_threshold
        )
        return Pipeline(
            self.processor,
            place_rows=placement.place_rows,
            forward=lambda arrays, sizes, labels: _relex_entities(graphdef, state, arrays),
            batch_rows=round_up(batch_size, placement.row_multiple),
            gliner_batch=batch_size,
            row_multiple=placement.row_multiple,
            threshold=threshold,
            flat_ner=flat_ner,
            multi_label=multi_label,
            pipelined=self.pipelined,
            pack_tokens=self.pack_tokens,
            relations=stage,
        )

    def _check_packing(self) -> None:
        """Refuse a `pack_tokens` the pipeline cannot use."""
        if self.pack_tokens is not None and self.pack_tokens < 1:
            raise ValueError(f"pack_tokens must be None or >= 1, got {self.pack_tokens}")
        if self.pack_tokens is not None and self.config.is_streaming:
            raise ValueError("inference packing is not supported with a streaming model (its causal decoder)")
        if self.pack_tokens is not None and self.config.fuse_layers:
            raise ValueError("inference packing is not supported with fuse_layers (it averages over whole rows)")
        if self.pack_tokens is not None and self.tokenizer.padding_side == "left":
            raise ValueError("inference packing needs a right-padding tokenizer (a left-padded row's positions differ)")

    def predict_word_relations(
        self,
        word_lists: Sequence[Sequence[str]],
        labels: Labels,
        relations: str | Sequence[str] | Sequence[Sequence[str]],
        threshold: float = 0.5,
        adjacency_threshold: float | None = None,
        relation_threshold: float | None = None,
        flat_ner: bool = True,
        multi_label: bool = False,
        batch_size: int = 8,
    ) -> list[tuple[list[WordSpan], list[tuple[int, str, int, float]]]]:
        """A relation model's (entities, relations) of pre-split texts: entities as (first word, last word inclusive,
        label, score), relations as (head, relation, tail, score), head and tail indexing the text's entities, as
        gliner's relation decoder gives them (what `evaluation.evaluate_relations` scores)."""
        rows = [joined_word_offsets(list(words)) for words in word_lists]
        return self._relation_rows(
            rows,
            labels,
            relations,
            threshold,
            adjacency_threshold,
            relation_threshold,
            flat_ner,
            multi_label,
            batch_size,
        )

    def _relation_rows(
        self,
        words: list[list[Word]],
        labels: Labels,
        relations: str | Sequence[str] | Sequence[Sequence[str]],
        threshold: float,
        adjacency_threshold: float | None,
        relation_threshold: float | None,
        flat_ner: bool,
        multi_label: bool,
        batch_size: int,
    ) -> list[tuple[list[WordSpan], list[tuple[int, str, int, float]]]]:
        """The relation pipeline's (entities, relations) of rows of words, in gliner's batches."""
        thresholds = (threshold, adjacency_threshold, relation_threshold)
        pipeline = self._relation_pipeline(*thresholds, flat_ner, multi_label, batch_size)
        label_sets, relation_sets = self._label_sets(labels, len(words)), self._relation_sets(relations, len(words))
        chunk = (None, words, label_sets, None, relation_sets)
        ((_, spans, found),) = pipeline.run_relations([chunk])
        return list(zip(spans, found, strict=True))

    def inference_stream(
        self,
        chunks: Iterable[Sequence[str]],
        labels: LabelSet,
        threshold: float = 0.5,
        flat_ner: bool = True,
        multi_label: bool = False,
        batch_size: int = 8,
        *,
        truncate: bool = False,
        relations: Sequence[str] | None = None,
        adjacency_threshold: float | None = None,
        relation_threshold: float | None = None,
        generation: GenerationOptions | None = None,
    ) -> Iterator[list[list[dict]]] | Iterator[tuple[list[list[dict]], list[list[dict]]]]:
        """For each chunk of texts, in order, the entities of each of its texts (as `inference` gives them), with
        one label set (a list, or a {label: description} mapping) for all texts. All chunks flow through one
        pipeline, so the devices never wait for the next chunk; rows are sorted by length within a chunk (kept in
        order, in gliner's batches, for the span modes that read their batch), and memory holds a few chunks
        whatever the stream's length.
        A text's entities are those `inference` finds; their scores may differ in float rounding, as batches of
        other shapes round differently, but the same chunks give the same results every time.

        A relation extraction model with `relations` (one list of relation labels for all texts) gives for each
        chunk (entities, relations) of its texts, as `inference` with relations gives them for the chunk's texts.
        A decoder model's entities carry their generated labels (`generation`: its options, as `inference` takes
        them; the defaults when None).
        """
        if not isinstance(labels, Mapping) and any(isinstance(group, list | tuple | Mapping) for group in labels):
            raise ValueError("inference_stream takes one label set for all texts")
        label_sets = self._label_sets(labels, 1)
        relation_set = None if relations is None else self._relation_sets(relations, 1)

        def planned() -> Iterator[Chunk]:  # runs in the pipeline's host thread
            for chunk in chunks:
                texts = list(chunk)
                words = [self.processor.split_words(text) for text in texts]
                per_text = None if relation_set is None else relation_set * len(texts)
                yield (texts, words), words, label_sets * len(texts), None, per_text

        if relation_set is not None:
            thresholds = (threshold, adjacency_threshold, relation_threshold)
            pipeline = self._relation_pipeline(*thresholds, flat_ner, multi_label, batch_size)
            return (
                _relation_dicts(texts, words, *found) for (texts, words), *found in pipeline.run_relations(planned())
            )
        generation = _generation(self.config, generation or GenerationOptions())
        options = (flat_ner, multi_label, batch_size, truncate, label_sets)
        pipeline = self._pipeline(threshold, *options, generation=generation)
        return (
            [_entity_dicts(*item) for item in zip(texts, words, found, strict=True)]
            for (texts, words), found in pipeline.run(planned())
        )

    def predict_words(
        self,
        word_lists: Sequence[Sequence[str]],
        labels: Labels,
        threshold: float = 0.5,
        flat_ner: bool = True,
        multi_label: bool = False,
        batch_size: int = 8,
        *,
        progress: bool = False,
    ) -> list[list[tuple[int, int, str, float]]]:
        """Entities of pre-split texts (e.g. `tokenized_text` of training data) as (first word, last word
        inclusive, label, score), by start; long texts are read in windows as in `inference`."""
        rows = [joined_word_offsets(words) for words in word_lists]
        return self._word_spans(rows, labels, threshold, flat_ner, multi_label, batch_size, False, progress)

    def predict_words_sweep(
        self,
        word_lists: Sequence[Sequence[str]],
        labels: Labels,
        thresholds: Sequence[float],
        flat_ner: bool = True,
        multi_label: bool = False,
        batch_size: int = 8,
        *,
        progress: bool = False,
    ) -> dict[float, list[list[tuple[int, int, str, float]]]]:
        """`predict_words` at each of `thresholds` from one model pass: {threshold: entities of each text}, each
        what `predict_words` gives at that threshold (the probabilities are decoded at each)."""
        if not thresholds:
            raise ValueError("thresholds must not be empty")
        rows = [joined_word_offsets(words) for words in word_lists]
        first, *sweep = thresholds
        options = (flat_ner, multi_label, batch_size, False, progress)
        return self._word_spans_sweep(rows, labels, first, tuple(sweep), *options)

    def evaluate(
        self,
        data: str | Path | Sequence[Mapping],
        threshold: float = 0.5,
        flat_ner: bool = True,
        multi_label: bool = False,
        batch_size: int = 8,
        labels: Sequence[str] | None = None,
        *,
        progress: bool = False,
        relations: Sequence[str] | None = None,
        adjacency_threshold: float | None = None,
        relation_threshold: float | None = None,
    ) -> Evaluation | RelationEvaluation:
        """Span-level exact-match micro and per-label P/R/F1 on gold data: a JSON / JSONL / CoNLL file (detected by
        extension or content) or a list of {"tokenized_text", "ner"} records. Every text gets every label of
        `labels` (default: the sorted set of the data's labels), as gliner's `evaluate(..., entity_types=labels)`;
        `str()` of the result is its summary line. A relation model (records with "relations") returns a
        `RelationEvaluation`, entities and relations scored as gliner's relation model's `evaluate(...,
        relation_types=relations)` (default: the sorted set of the data's relation types)."""
        if self.config.is_relex:
            return evaluate_relations(
                self,
                read_eval_data(data),
                labels=labels,
                relations=relations,
                threshold=threshold,
                adjacency_threshold=adjacency_threshold,
                relation_threshold=relation_threshold,
                batch_size=batch_size,
                flat_ner=flat_ner,
                multi_label=multi_label,
            )
        return evaluate_examples(
            self,
            read_eval_data(data),
            labels=labels,
            threshold=threshold,
            batch_size=batch_size,
            flat_ner=flat_ner,
            multi_label=multi_label,
            progress=progress,
        )

    def _word_spans(
        self,
        words: list[list[Word]],
        labels: Labels,
        threshold: float,
        flat_ner: bool,
        multi_label: bool,
        batch_size: int,
        truncate: bool,
        progress: bool,
        label_table: tuple[list[str], np.ndarray] | None = None,
        *,
        input_spans: list[list[tuple[int, int]]] | None = None,
        generation: GenerationOptions | None = None,
        **details: bool,
    ) -> list[list[WordSpan | DetailedSpan]]:
        """Word-level entities of each text: all windows and label passes run, decoded and merged.

        A bi-encoder scores every row against one table of label embeddings: `label_table` (labels, embeddings)
        when given, else the request's distinct labels, encoded once. `input_spans`: per text, the only (first,
        last) word spans to classify; `details`: the Pipeline's class_probs / vectors / label_vectors; `generation`: a
        decoder model's generation options (None: no labels generated, entities only)."""
        options = (flat_ner, multi_label, batch_size, truncate, progress, label_table)
        found = self._word_spans_sweep(
            words, labels, threshold, (), *options, input_spans=input_spans, generation=generation, **details
        )
        return found[threshold]

    def _word_spans_sweep(
        self,
        words: list[list[Word]],
        labels: Labels,
        threshold: float,
        sweep: tuple[float, ...],
        flat_ner: bool,
        multi_label: bool,
        batch_size: int,
        truncate: bool,
        progress: bool,
        label_table: tuple[list[str], np.ndarray] | None = None,
        *,
        input_spans: list[list[tuple[int, int]]] | None = None,
        generation: GenerationOptions | None = None,
        **details: bool,
    ) -> dict[float, list[list[WordSpan | DetailedSpan]]]:
        """`_word_spans` at `threshold` and each of `sweep`, from one model pass: {threshold: entities}."""
        for extra in sweep:
            _check_options(extra, batch_size)
        label_sets = self._label_sets(labels, len(words))
        options = (flat_ner, multi_label, batch_size, truncate, label_sets, label_table)
        pipeline = self._pipeline(threshold, *options, generation=generation, **details)
        pipeline.sweep = sweep
        chunk = (None, words, label_sets, input_spans, None)
        with tqdm(desc="batches", unit="batch", disable=not progress) as bar:

            def advance(num_batches: int) -> None:
                bar.total = num_batches
                bar.update()

            pipeline.on_batch = advance
            ((_, found),) = pipeline.run_sweep([chunk])
        return found

    def _pipeline(
        self,
        threshold: float,
        flat_ner: bool,
        multi_label: bool,
        batch_size: int,
        truncate: bool,
        label_sets: list[dict[str, str]],
        label_table: tuple[list[str], np.ndarray] | None = None,
        *,
        class_probs: bool = False,
        vectors: bool = False,
        label_vectors: bool = False,
        generation: GenerationOptions | None = None,
    ) -> Pipeline:
        """The inference pipeline of this model on its placement, for these options (checked here); a bi-encoder's
        carries the label table of `label_sets` (see `_label_table`); a decoder model's, given `generation` (its
        options), its label generation stage. `class_probs`, `vectors`, `label_vectors`: what each
        entity comes with (see `Pipeline`)."""
        _check_options(threshold, batch_size)
        self._check_packing()
        placement, graphdef, state = self._placed()
        stage = None if generation is None else self._label_generation(graphdef, state, generation)
        spans = self.config.represents_spans
        reps = stage is not None and not stage.token_level  # a span model's label stage reads its span representations
        kept = dict(vectors=vectors or reps, label_vectors=label_vectors, span_states=spans)
        return Pipeline(
            self.processor,
            place_rows=placement.place_rows,
            forward=lambda transfer, sizes, labels: _forward(graphdef, state, transfer, sizes, True, labels, **kept),
            batch_rows=round_up(batch_size, placement.row_multiple),
            gliner_batch=batch_size if self.config.spans_depend_on_batch or stage is not None else None,
            row_multiple=placement.row_multiple,
            threshold=threshold,
            flat_ner=flat_ner,
            multi_label=multi_label,
            truncate=truncate,
            pipelined=self.pipelined,
            pack_tokens=self.pack_tokens,
            label_table=self._label_table(placement, label_sets, label_table),
            class_probs=class_probs,
            vectors=vectors,
            label_vectors=label_vectors,
            label_generation=stage,
            span_stage=(lambda *arrays: _span_probs(graphdef, state, *arrays)) if spans else None,
        )

    def _label_generation(
        self, graphdef: nnx.GraphDef, state: nnx.State, options: GenerationOptions
    ) -> LabelGeneration | None:
        """A decoder model's label generation stage (decoder_mode "span"; None for any other model)."""
        if not self.config.generates_labels:
            return None
        tokenizer = self.decoder_tokenizer
        eos_id, pad_id = generation_ids(tokenizer, self.config.labels_decoder_config)
        statics = (options.max_new_tokens, eos_id, pad_id, options.num_gen_sequences)
        token_level = self.config.span_mode == "token_level"

        def generate(span_reps, examples, positions, span_words, context, prefix_len, trie):
            return _generate_labels(
                graphdef, state, span_reps, examples, positions, span_words, prefix_len, *statics, context, trie
            )

        def generate_tokens(states, examples, bounds, context, prefix_len, trie):
            return _generate_token_labels(
                graphdef, state, states, examples, bounds, prefix_len, *statics, context, trie
            )

        trie = label_trie(tokenizer, options.gen_constraints) if options.gen_constraints else None  # [] as gliner: none
        return LabelGeneration(
            generate_tokens if token_level else generate,
            tokenizer,
            self.config.max_width,
            self.config.decoder_context,
            trie,
            token_level=token_level,
        )


def _entity_dicts(text: str, words: list[Word], spans: list[WordSpan | DetailedSpan]) -> list[dict]:
    """Word-level entities of `text` as {start, end, text, label, score} with character offsets, and the extra keys
    of a `DetailedSpan`."""
    return [
        {
            "start": words[s][1],
            "end": words[e][2],
            "text": text[words[s][1] : words[e][2]],
            "label": label,
            "score": score,
            **(details[0] if details else {}),
        }
        for s, e, label, score, *details in spans
    ]


def _word_input_spans(
    words: list[list[Word]], input_spans: Sequence[Sequence[Mapping[str, int]]] | None
) -> list[list[tuple[int, int]]] | None:
    """gliner's `input_spans` (per text, {"start", "end"} character offsets) as (first, last) word spans; a span
    whose start is no word's start, or whose end is no word's end, is dropped as gliner drops it. ValueError for a
    list per text missing, or a span without integer start and end."""
    if input_spans is None:
        return None
    per_text = not isinstance(input_spans, str | Mapping) and len(input_spans) == len(words)
    if not per_text or any(isinstance(spans, str | Mapping) for spans in input_spans):
        raise ValueError(f"input_spans must hold one list of {{start, end}} spans per text ({len(words)} texts)")
    converted = []
    for index, (text_words, spans) in enumerate(zip(words, input_spans, strict=True)):
        starts = {start: i for i, (_, start, _) in enumerate(text_words)}
        ends = {end: i for i, (_, _, end) in enumerate(text_words)}
        kept = []
        for number, span in enumerate(spans):
            bounds = [span.get(key) if isinstance(span, Mapping) else None for key in ("start", "end")]
            if not all(isinstance(bound, int | np.integer) and not isinstance(bound, bool) for bound in bounds):
                raise ValueError(f"input_spans[{index}][{number}]: {span!r} is not a {{start, end}} dict of ints")
            first, last = starts.get(bounds[0]), ends.get(bounds[1])
            if first is not None and last is not None and last >= first:
                kept.append((first, last))
        converted.append(kept)
    return converted


def _relation_dicts(
    texts: list[str], words: list[list[Word]], spans: list[list[WordSpan]], found: list[list[RelationTuple]]
) -> tuple[list[list[dict]], list[list[dict]]]:
    """(entities, relations) of each text as gliner's `inference` gives them: entity dicts, and relations
    {head, tail, relation, score} whose head and tail are `_relation_end`s."""
    entities = [_entity_dicts(*item) for item in zip(texts, words, spans, strict=True)]
    relations = [
        [
            {"head": _relation_end(ents, head), "tail": _relation_end(ents, tail), "relation": name, "score": score}
            for head, name, tail, score in text_relations
        ]
        for ents, text_relations in zip(entities, found, strict=True)
    ]
    return entities, relations


def _relation_end(entities: list[dict], index: int) -> dict:
    """A relation's head or tail, as gliner writes it: the entity's offsets, text and label (as `type`) and index."""
    entity = entities[index]
    return {
        "start": entity["start"],
        "end": entity["end"],
        "text": entity["text"],
        "type": entity["label"],
        "entity_idx": index,
    }


def _relation_sets(relations: str | Sequence[str] | Sequence[Sequence[str]], num_texts: int) -> list[list[str]]:
    """Each text's relation labels, duplicates dropped as gliner drops them: one label, one list for all texts, or
    one list per text (as many as texts: ValueError otherwise)."""
    if isinstance(relations, str):
        return [[relations]] * num_texts
    relations = list(relations)
    if relations and all(isinstance(r, list | tuple) for r in relations):
        if len(relations) != num_texts:
            raise ValueError(f"per-text relations must have length {num_texts}, got {len(relations)}")
        return [list(dict.fromkeys(r)) for r in relations]
    if not all(isinstance(r, str) for r in relations):
        raise ValueError("relations must be a label, a list of labels, or one list of labels per text")
    return [list(dict.fromkeys(relations))] * num_texts


def _generation(config: GLiNERConfig, options: GenerationOptions) -> GenerationOptions:
    """`options`, refused (ValueError) when they are not the defaults and the model generates no labels."""
    if not config.generates_labels and options != GenerationOptions():
        raise ValueError("gen_constraints, num_gen_sequences, max_new_tokens: only decoder models generate labels")
    return options


def _check_options(threshold: float, batch_size: int) -> None:
    """Refuse a threshold outside [0, 1] and a batch size below 1."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _padded_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """`array` with zero rows appended up to `rows` rows (a static shape for jit)."""
    return np.concatenate([array, np.zeros((rows - len(array), *array.shape[1:]), array.dtype)])
