"""PyTorch <-> Flax parameter mapping for encoders and GLiNER networks, and Hugging Face / gliner directory I/O.

The key table is explicit: every PyTorch tensor name, the parameter it becomes here and how
(a Linear weight is transposed into a kernel; LayerNorm weight -> scale; Embedding weight ->
embedding). Each encoder family lists its modules (`hf_modules` in `gliner_jax.modeling.encoders`); encoder
layers are stacked here, so `encoder.layer.{i}.X` maps to row i of `encoder.layer.X`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pickle
import shutil
import tempfile
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from gliner_jax.config import GLiNERConfig
from gliner_jax.config_streaming import StreamingSpanConfig
from gliner_jax.hub import (
    CONFIG_FILE,
    DECODER_TOKENIZER_DIR,
    GLINER_CONFIG_FILE,
    LABELS_TOKENIZER_DIR,
    HubOptions,
    read_json_object,
    read_layout,
    resolve_gliner,
)
from gliner_jax.modeling.context_encoders import ContextEncoderConfig, RNNEncoderConfig
from gliner_jax.modeling.decoders import build_decoder, decoder_config_from_hf, decoder_family_of_config
from gliner_jax.modeling.dropout import network_rngs
from gliner_jax.modeling.encoders import build_encoder, encoder_config_from_hf, family_of_config
from gliner_jax.modeling.encoders.modernbert import ModernBertConfig
from gliner_jax.modeling.fusion import SELF_ATTENTION, parse_schema
from gliner_jax.modeling.gliner import GLiNERModel, PrecomputedPrompts
from gliner_jax.modeling.streaming import StreamingSpanModel

logger = logging.getLogger(__name__)

SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "pytorch_model.bin"
NATIVE_PARAMS_FILE = "flax_params.safetensors"
# Tokenizer files that transformers writes and reads (sentencepiece, WordPiece and BPE vocabularies included);
# copied as they are by convert/hf_encoder.py.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "spm.model",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
)
# Where the gliner library keeps the backbone, and a bi-encoder's label encoder, inside its state dict.
GLINER_ENCODER_PREFIX = "token_rep_layer.bert_layer.model."
GLINER_LABELS_ENCODER_PREFIX = "token_rep_layer.labels_encoder.model."
GLINER_LABELS_DECODER_PREFIX = "decoder.decoder_layer.model."
GLINER_DECODER_PREFIX = "token_rep_layer.decoder_layer.model."  # a streaming model's causal backbone

# PyTorch parameter suffix -> (our parameter name, transpose?), per module kind.
_KIND_PARAMS = {
    "linear": {"weight": ("kernel", True), "bias": ("bias", False)},
    "linear_no_bias": {"weight": ("kernel", True)},
    "conv1d": {"weight": ("kernel", False), "bias": ("bias", False)},  # GPT-2's Conv1D: weight [in, out]
    "layer_norm": {"weight": ("scale", False), "bias": ("bias", False)},
    "layer_norm_no_bias": {"weight": ("scale", False)},
    "embedding": {"weight": ("embedding", False)},
}


@dataclasses.dataclass(frozen=True)
class TensorMapping:
    """One PyTorch tensor and the slot it fills in our parameters."""

    torch_key: str
    path: tuple[str, ...]
    transpose: bool
    layer: int | None  # row of the stacked layer axis, or None for unstacked parameters


class CheckpointMismatchError(ValueError):
    """A checkpoint whose tensors do not match the model: names every offender."""


def encoder_table(config: Any, torch_prefix: str = "", path_prefix: tuple[str, ...] = ()) -> list[TensorMapping]:
    """The full key table for one encoder config (any registered family), with optional prefixes on both sides."""
    family = family_of_config(config)
    absent = set(family.hf_absent(config))
    table = []
    for module, kind in family.hf_modules(config).items():
        layers = range(config.num_hidden_layers) if "{i}" in module else [None]
        ours = tuple(module.replace(".{i}", "").split("."))
        for torch_param, (param, transpose) in _KIND_PARAMS[kind].items():
            for i in layers:
                key = module.format(i=i) + "." + torch_param
                if key not in absent:
                    table.append(TensorMapping(torch_prefix + key, path_prefix + ours + (param,), transpose, i))
    return table


def decoder_table(config: Any, torch_prefix: str = "", path_prefix: tuple[str, ...] = ()) -> list[TensorMapping]:
    """The full key table of one causal decoder config (any registered decoder family): its causal-LM class's state
    dict, with optional prefixes on both sides."""
    table = []
    for module, kind in decoder_family_of_config(config).hf_modules(config).items():
        layers = range(config.num_hidden_layers) if "{i}" in module else [None]
        ours = tuple(module.replace(".{i}", "").split("."))
        for torch_param, (param, transpose) in _KIND_PARAMS[kind].items():
            table += [
                TensorMapping(
                    torch_prefix + module.format(i=i) + "." + torch_param, path_prefix + ours + (param,), transpose, i
                )
                for i in layers
            ]
    return table


def label_decoder_table(decoder_config: Any, projects: bool, path_prefix: tuple[str, ...] = ()) -> list[TensorMapping]:
    """The key table of gliner's generative label head (`modeling.label_decoder.LabelDecoder` at `path_prefix`):
    the causal LM under `decoder.decoder_layer.model.`, and `_enc2dec_proj` where it `projects`."""
    table = decoder_table(decoder_config, GLINER_LABELS_DECODER_PREFIX, (*path_prefix, "decoder"))
    if projects:
        table += _projection_mlp_entries("_enc2dec_proj", (*path_prefix, "enc2dec_proj"))
    return table


def _linear_entries(torch_module: str, path: tuple[str, ...]) -> list[TensorMapping]:
    return [
        TensorMapping(f"{torch_module}.weight", (*path, "kernel"), True, None),
        TensorMapping(f"{torch_module}.bias", (*path, "bias"), False, None),
    ]


def _projection_mlp_entries(torch_module: str, path: tuple[str, ...]) -> list[TensorMapping]:
    """gliner's `create_projection_layer` Sequential: Linear at index 0, Linear at index 3."""
    return _linear_entries(f"{torch_module}.0", (*path, "linear_in")) + _linear_entries(
        f"{torch_module}.3", (*path, "linear_out")
    )


def _span_mode_entries(span_mode: str, max_width: int) -> list[TensorMapping]:
    """gliner's `span_rep_layer.span_rep_layer.*` tensors of a span mode -> our `span_rep` parameters.

    Each module is listed as (gliner's name, ours, kind): "mlp" a Sequential with Linears at 0 and 3
    (`create_projection_layer`, or marker's narrower one), "linear" a Linear or a Conv1d (weight [out, in, k] ->
    kernel [k, in, out]), "tensor" a bare parameter as it is, "kernel" a bare conv weight transposed like a Conv1d's.
    """

    def mlps(*names: str) -> list[tuple[str, str, str]]:
        return [(name, name, "mlp") for name in names]

    modules = {
        "marker": [*mlps("project_start", "project_end"), ("out_project", "out_project", "linear")],
        "markerV0": mlps("project_start", "project_end", "out_project"),
        "markerV1": mlps("project_start", "project_end", "project_first", "out_project"),
        "markerV2": mlps("project_start", "project_end", "project_context", "out_project"),
        "query": [("query_seg", "query_seg", "tensor"), ("project.0", "project", "linear")],
        "cat": [("query_seg", "query_seg", "tensor"), ("project.0", "project", "linear")],
        "mlp": [("mlp", "mlp", "linear")],
        "conv_share": [("conv_weigth", "conv_weight", "kernel"), ("project.1", "project", "linear")],  # sic
    }.get(span_mode, [("project.1", "project", "linear")])  # conv_conv / conv_max / conv_mean / conv_sum
    if span_mode == "conv_conv":  # one Conv1d per kernel size 2 .. max_width
        modules += [(f"convs.{i}.conv", f"convs.{i}", "linear") for i in range(max_width - 1)]
    table = []
    for torch_module, ours, kind in modules:
        torch_name, path = "span_rep_layer.span_rep_layer." + torch_module, ("span_rep", *ours.split("."))
        if kind == "mlp":
            table += _projection_mlp_entries(torch_name, path)
        elif kind == "linear":
            table += _linear_entries(torch_name, path)
        else:
            table.append(TensorMapping(torch_name, path, kind == "kernel", None))
    return table


def relation_table(relations_layer: str, triples_layer: str | None) -> list[TensorMapping]:
    """gliner's relex tensors (`relations_rep_layer.relation_rep_layer.*`, then `pair_rep_layer.*` or
    `triples_score_layer.interaction.*`) -> our `relation_head` parameters."""
    attn = [
        TensorMapping("attn.in_proj_weight", ("attn", "in_proj", "kernel"), True, None),
        TensorMapping("attn.in_proj_bias", ("attn", "in_proj", "bias"), False, None),
        *_linear_entries("attn.out_proj", ("attn", "out_proj")),
    ]
    linears = {  # gliner's module -> ours, each a Linear
        "mlp": {"mlp.0": "linear_in", "mlp.2": "linear_out"},
        "bilinear": {"proj": "proj"},
        "gcn": {"gcn.linear": "gcn.linear", "proj": "proj"},
        "gat": {"linear": "linear"},
    }.get(relations_layer, {})
    entries = attn if relations_layer in ("attention", "attn", "gat") else []
    for torch_module, ours in linears.items():
        entries += _linear_entries(torch_module, tuple(ours.split(".")))
    table = [
        TensorMapping(
            f"relations_rep_layer.relation_rep_layer.{m.torch_key}",
            ("relation_head", "relation_rep_layer", *m.path),
            m.transpose,
            None,
        )
        for m in entries
    ]
    if triples_layer is None:
        return table + _projection_mlp_entries("pair_rep_layer", ("relation_head", "pair_rep"))
    linears = {  # the Linears of each triples mode with parameters: gliner's name -> ours
        "TransH": ("r_to_rtr", "r_to_w"),
        "TransF": ("r_to_rvec", "r_to_alpha", "r_to_beta"),
        "PairRE": ("r_to_alpha", "r_to_beta"),
        "TripleRE": ("r_to_alpha", "r_to_beta", "r_to_delta", "r_to_gamma"),
        "ConvKB": ("fc",),
    }.get(triples_layer, ())
    renamed = {"ERMLP": {"mlp.0": "linear_in", "mlp.2": "linear_out"}}.get(triples_layer, {})
    prefix, path = "triples_score_layer.interaction.", ("relation_head", "triples_score", "interaction")
    for torch_module, ours in [*((name, name) for name in linears), *renamed.items()]:
        table += _linear_entries(prefix + torch_module, (*path, ours))
    if triples_layer == "ConvKB":  # the Conv1d's weight [32, 3, 1] as it is
        table += [TensorMapping(f"{prefix}conv.{p}", (*path, f"conv_{p}"), False, None) for p in ("weight", "bias")]
    if triples_layer == "TuckER":  # the core tensor [D, D, D] and the BatchNorms' parameters and running statistics
        table.append(TensorMapping(f"{prefix}W", (*path, "W"), False, None))
        for norm in ("bn0", "bn1"):
            for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                table.append(TensorMapping(f"{prefix}{norm}.{name}", (*path, norm, name), False, None))
    return table


def lstm_entries(torch_module: str, path: tuple[str, ...], num_layers: int, bidirectional: bool) -> list[TensorMapping]:
    """A torch `nn.LSTM`'s tensors (`weight_ih_l0`, ..., `_reverse`) -> our `BiLSTM` at `path`."""
    table = []
    directions = (("", "forward"), ("_reverse", "reverse"))[: 2 if bidirectional else 1]
    for layer in range(num_layers):
        for suffix, direction in directions:
            ours = (*path, "layers", str(layer), direction)
            for name, transpose in (("weight_ih", True), ("weight_hh", True), ("bias_ih", False), ("bias_hh", False)):
                table.append(TensorMapping(f"{torch_module}.{name}_l{layer}{suffix}", (*ours, name), transpose, None))
    return table


def context_encoder_table(
    config: ContextEncoderConfig, width: int, torch_prefix: str, path: tuple[str, ...]
) -> list[TensorMapping]:
    """gliner's context encoder tensors (`<torch_prefix>input_projection`, `encoder.*`, `output_projection`) -> our
    `ContextEncoder` at `path`, reading and returning states `width` wide."""
    table = []
    if width != config.hidden_size:
        table += _linear_entries(f"{torch_prefix}input_projection", (*path, "input_projection"))
    if isinstance(config, RNNEncoderConfig):
        layers, bidirectional = config.num_hidden_layers, config.bidirectional
        table += lstm_entries(f"{torch_prefix}encoder", (*path, "encoder"), layers, bidirectional)
    elif isinstance(config, ModernBertConfig):  # the whole model, fed embeddings
        table += encoder_table(config, f"{torch_prefix}encoder.", (*path, "encoder"))
    else:  # DeBERTa: its encoder stack alone, no embeddings
        entries = encoder_table(config, torch_prefix, path)
        table += [m for m in entries if m.torch_key.startswith(f"{torch_prefix}encoder.")]
    if width != config.hidden_size:
        table += _linear_entries(f"{torch_prefix}output_projection", (*path, "output_projection"))
    return table


def cross_fuser_table(schema: str, num_layers: int) -> list[TensorMapping]:
    """gliner's `cross_fuser.layers.{i}.{j}.*` tensors (block j of layer i, as `post_fusion_schema` lists them) ->
    our `cross_fuser` parameters."""
    table = []
    for i in range(num_layers):
        for j, name in enumerate(parse_schema(schema)):
            block = ("cross_fuser", "layers", str(i), str(j))
            attention = "self_attn" if name in SELF_ATTENTION else "cross_attn"
            linears = [f"{attention}.{layer}_layer" for layer in ("query", "key", "value")]
            linears += ["q_proj", "k_proj", "v_proj"] if name in SELF_ATTENTION else ["v_proj"]
            for module in linears:
                table += _linear_entries(f"cross_fuser.layers.{i}.{j}.{module}", (*block, *module.split(".")))
            for norm in ("pre_norm", "post_norm"):
                table.append(
                    TensorMapping(f"cross_fuser.layers.{i}.{j}.{norm}.weight", (*block, norm, "scale"), False, None)
                )
                table.append(
                    TensorMapping(f"cross_fuser.layers.{i}.{j}.{norm}.bias", (*block, norm, "bias"), False, None)
                )
    return table


def gliner_table(config: GLiNERConfig) -> list[TensorMapping]:
    """The key table between a `gliner` uni- or bi-encoder state dict and `GLiNERModel` parameters.

    A bi-encoder's BiLSTM (`rnn.*`) is in the table: gliner builds and saves it although it never runs it."""
    table = encoder_table(config.encoder_config, GLINER_ENCODER_PREFIX, ("encoder",))
    fusers = [("token_rep_layer.bert_layer.layers_fuser", "layers_fuser")]
    if config.is_bi_encoder:
        fusers.append(("token_rep_layer.labels_encoder.layers_fuser", "labels_layers_fuser"))
    for torch_module, ours in fusers if config.fuse_layers else ():
        for linear in ("squeeze", "W1", "W2", "output_projection"):
            table += _linear_entries(f"{torch_module}.{linear}", (ours, linear))
    if config.projects_encoder_output:
        table += _linear_entries("token_rep_layer.projection", ("projection",))
    if config.is_bi_encoder:
        table += encoder_table(config.labels_encoder_config, GLINER_LABELS_ENCODER_PREFIX, ("labels_encoder",))
    if config.projects_labels_encoder_output:
        table += _linear_entries("token_rep_layer.labels_projection", ("labels_projection",))
    table += lstm_entries("rnn.lstm", ("rnn",), config.num_rnn_layers, bidirectional=True)
    if config.has_span_encoder:
        prefix = "span_rep_layer.context_encoder."
        table += context_encoder_table(config.span_encoder_config, config.hidden_size, prefix, ("context_encoder",))
    if config.span_mode == "token_level":
        table += _linear_entries("scorer.proj_token", ("scorer", "proj_token"))
        table += _linear_entries("scorer.proj_label", ("scorer", "proj_label"))
        table += _linear_entries("scorer.out_mlp.0", ("scorer", "linear_in"))
        table += _linear_entries("scorer.out_mlp.3", ("scorer", "linear_out"))
        if config.is_relex or config.represents_spans:  # gliner's TokenMarker (markerV0's MLPs)
            table += _span_mode_entries("markerV0", config.max_width)
        if config.is_relex or config.is_decoder:  # and a token relation / decoder model's prompt projection
            table += _projection_mlp_entries("prompt_rep_layer", ("prompt_rep",))
    else:
        table += _span_mode_entries(config.span_mode, config.max_width)
        table += _projection_mlp_entries("prompt_rep_layer", ("prompt_rep",))
    if config.is_relex:
        table += relation_table(config.relations_layer, config.triples_layer)
    if config.precomputed_prompts_mode and not config.is_bi_encoder:
        table.append(TensorMapping("precomputed_prompts", ("precomputed_prompts",), False, None))
    if config.precomputed_relations is not None:
        table.append(TensorMapping("precomputed_rel_prompts", ("precomputed_rel_prompts",), False, None))
    if config.post_fusion_schema:
        table += cross_fuser_table(config.post_fusion_schema, config.num_post_fusion_layers)
    if config.is_decoder:
        decoder = config.labels_decoder_config
        table += label_decoder_table(decoder, config.hidden_size != decoder.hidden_size, ("label_decoder",))
    return table


def streaming_table(config: StreamingSpanConfig) -> list[TensorMapping]:
    """The key table between a gliner streaming span model's state dict and `StreamingSpanModel` parameters: the
    decoder's base model under `token_rep_layer.decoder_layer.model.` (its causal-LM keys without their first part,
    `transformer.` / `model.`), the projection, label encoder, span layers, unused cross fuser and prompt projection."""
    tied = dataclasses.replace(config.encoder_config, tie_word_embeddings=True)
    table = [
        dataclasses.replace(m, torch_key=GLINER_DECODER_PREFIX + m.torch_key.split(".", 1)[1])
        for m in decoder_table(tied, "", ("encoder",))
    ]
    hidden = config.hidden_size
    if hidden != config.encoder_config.hidden_size:
        table += _linear_entries("token_projection", ("token_projection",))
    labels_prefix = "labels_encoder.encoder."
    table += context_encoder_table(config.labels_encoder_config, hidden, labels_prefix, ("prompt_encoder",))
    table += lstm_entries("rnn.lstm", ("rnn",), config.num_rnn_layers, bidirectional=True)
    if config.span_encoder_config is not None:
        prefix = "span_rep_layer.context_encoder."
        table += context_encoder_table(config.span_encoder_config, hidden, prefix, ("context_encoder",))
    table += _span_mode_entries(config.span_mode, config.max_width)
    if config.post_fusion_schema:
        table += cross_fuser_table(config.post_fusion_schema, config.num_post_fusion_layers)
    return table + _projection_mlp_entries("prompt_rep_layer", ("prompt_rep",))


def model_table(config: GLiNERConfig) -> list[TensorMapping]:
    """The key table of the network `config` describes (`streaming_table` or `gliner_table`)."""
    return streaming_table(config) if config.is_streaming else gliner_table(config)


def build_network(config: GLiNERConfig, *, dtype: jax.typing.DTypeLike, rngs: nnx.Rngs) -> nnx.Module:
    """The network `config` describes: `StreamingSpanModel` for a streaming config, `GLiNERModel` otherwise."""
    network = StreamingSpanModel if config.is_streaming else GLiNERModel
    return network(config, dtype=dtype, rngs=rngs)


def _flat_params(model: nnx.Module) -> dict[tuple[str, ...], nnx.Variable]:
    """The parameters, BatchNorm statistics and stored prompts of `model` by path."""
    params = nnx.state(model, (nnx.Param, nnx.BatchStat, PrecomputedPrompts))
    return {tuple(str(k) for k in path): var for path, var in params.flat_state()}


def state_from_torch(
    model: nnx.Module,
    tensors: Mapping[str, np.ndarray],
    table: list[TensorMapping],
    optional: Collection[str] = (),
) -> None:
    """Write PyTorch-layout `tensors` into `model`'s parameters as `table` maps them. Rows of a stacked parameter
    that the table does not cover, and `optional` tensors the checkpoint lacks, keep their values.

    Raises CheckpointMismatchError naming every missing, unexpected or mis-shaped tensor.
    """
    params = _flat_params(model)
    expected = {m.torch_key for m in table}
    kept = sorted(expected.intersection(optional) - tensors.keys())
    if kept:
        logger.warning("the checkpoint has no %s; initialised at random, as transformers does", kept)
    missing = sorted(expected - tensors.keys() - set(kept))
    unexpected = sorted(tensors.keys() - expected)
    stacked: dict[tuple[str, ...], list] = {}
    wrong_shape = []
    for m in table:
        if m.torch_key not in tensors:
            continue
        value = np.asarray(tensors[m.torch_key])
        value = value.T if m.transpose else value
        target = params[m.path]
        shape = target.shape if m.layer is None else target.shape[1:]
        if value.shape != tuple(shape):
            source_shape = np.shape(tensors[m.torch_key])
            want = tuple(reversed(shape)) if m.transpose else tuple(shape)
            wrong_shape.append(f"{m.torch_key}: file has {source_shape}, model needs {want}")
            continue
        if m.layer is None:
            target.set_value(jax.numpy.asarray(value, target.dtype))
        else:
            stacked.setdefault(m.path, list(np.asarray(target.get_value())))[m.layer] = value
    problems = []
    if missing:
        problems.append(f"missing tensors: {missing}")
    if unexpected:
        problems.append(f"unexpected tensors: {unexpected}")
    if wrong_shape:
        problems.append(f"mis-shaped tensors: {wrong_shape}")
    if problems:
        raise CheckpointMismatchError("checkpoint does not match the model; " + "; ".join(problems))
    for path, rows in stacked.items():
        params[path].set_value(jax.numpy.asarray(np.stack(rows), params[path].dtype))


def state_to_torch(model: nnx.Module, table: list[TensorMapping]) -> dict[str, np.ndarray]:
    """PyTorch-layout tensors (contiguous float32 NumPy arrays; a BatchNorm's batch counter int64, as torch's) for
    every entry of `table`."""
    params = {path: np.asarray(var.get_value()) for path, var in _flat_params(model).items()}
    out = {}
    for m in table:
        value = params[m.path] if m.layer is None else params[m.path][m.layer]
        value = value.astype(np.int64) if np.issubdtype(value.dtype, np.integer) else value
        out[m.torch_key] = np.ascontiguousarray(value.T if m.transpose else value)
    return out


def read_tensors(directory: str | Path) -> dict[str, np.ndarray]:
    """Tensors of model.safetensors (preferred) or pytorch_model.bin in `directory`, as float32 NumPy."""
    directory = Path(directory)
    safetensors_path, torch_path = directory / SAFETENSORS_FILE, directory / TORCH_FILE
    if safetensors_path.exists():
        return read_tensors_file(safetensors_path)
    if torch_path.exists():
        try:
            import torch
        except ImportError as err:
            raise ImportError(
                f"{torch_path} is a PyTorch pickle; install PyTorch (pip install 'gliner-jax[torch]') to read it"
            ) from err
        try:
            state = torch.load(torch_path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # what weights_only refuses: code, or objects other than tensors
            raise ValueError(f"{torch_path}: not a plain tensor checkpoint (it holds pickled objects)") from None
        except (RuntimeError, EOFError, OSError) as error:
            why = " ".join(str(error).split()) or type(error).__name__
            raise ValueError(f"{torch_path}: not a PyTorch checkpoint, or truncated: {why}") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{torch_path}: not a plain tensor checkpoint (not a name -> tensor mapping)")
        return {k: _to_float32(v.float().numpy() if v.is_floating_point() else v.numpy()) for k, v in state.items()}
    raise FileNotFoundError(f"no {SAFETENSORS_FILE} or {TORCH_FILE} in {directory}")


def read_tensors_file(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of one safetensors file as NumPy, floating point upcast to float32."""
    from safetensors import SafetensorError, safe_open

    # The "flax" framework reads bfloat16 too, which NumPy alone cannot.
    try:
        with safe_open(path, framework="flax") as f:
            return {k: _to_float32(np.asarray(f.get_tensor(k))) for k in f.keys()}  # noqa: SIM118
    except SafetensorError as error:
        raise ValueError(f"{path}: not a safetensors file, or truncated: {error}") from None


def _to_float32(x: np.ndarray) -> np.ndarray:
    floating = np.issubdtype(x.dtype, np.floating) or x.dtype.name == "bfloat16"
    return x.astype(np.float32, copy=False) if floating else x


def write_safetensors(tensors: Mapping[str, np.ndarray], path: str | Path) -> None:
    """Write `tensors` as a safetensors file that transformers and gliner accept."""
    from safetensors.numpy import save_file

    save_file(dict(tensors), str(path), metadata={"format": "pt"})
    Path(path).chmod(0o644)  # readable by others: safetensors writes through a private temporary file


def _without_transformers_skips(tensors: dict[str, np.ndarray], config: Any, prefix: str = "") -> dict[str, np.ndarray]:
    skipped = {prefix + key for key in family_of_config(config).hf_ignored(config)}
    return {k: v for k, v in tensors.items() if k not in skipped}


def _legacy_renamed(key: str) -> str:
    """transformers' renaming of TensorFlow-era names: `LayerNorm.gamma` / `LayerNorm.beta` -> `weight` / `bias`."""
    return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def _encoder_tensors(tensors: dict[str, np.ndarray], config: Any) -> dict[str, np.ndarray]:
    """The encoder's own tensors: legacy names renamed, base-model prefix stripped, task heads and buffers set
    aside."""
    tensors = {_legacy_renamed(k): v for k, v in tensors.items()}
    base = family_of_config(config).hf_base_prefix
    if not any(k.startswith("embeddings.") for k in tensors) and any(k.startswith(base) for k in tensors):
        heads = sorted(k for k in tensors if not k.startswith(base))
        if heads:
            logger.info("ignoring %d task-head tensors outside the encoder: %s", len(heads), heads)
        tensors = {k[len(base) :]: v for k, v in tensors.items() if k.startswith(base)}
    return _without_transformers_skips(tensors, config)


def load_hf_encoder(
    path: str | Path, *, dtype: jax.typing.DTypeLike = jax.numpy.float32, seed: int = 0
) -> tuple[nnx.Module, Any]:
    """Load a Hugging Face encoder directory (config.json + weights) of any registered family, in eval mode.

    `dtype` is the compute dtype; parameters are float32. A checkpoint of a task model
    (`DebertaV2ForMaskedLM`, `BertForMaskedLM`, ...) loads its encoder and ignores the head, as transformers does;
    tensors the family marks optional (BERT's pooler, absent from task models) keep their random init if missing.
    """
    path = Path(path)
    hf_config = read_json_object(path / CONFIG_FILE)
    try:
        config = encoder_config_from_hf(hf_config)
    except ValueError as error:
        raise ValueError(f"{path / CONFIG_FILE}: {error}") from None
    model = build_encoder(config, dtype=dtype, rngs=network_rngs(seed))
    optional = family_of_config(config).hf_optional(config)
    state_from_torch(model, _encoder_tensors(read_tensors(path), config), encoder_table(config), optional)
    model.eval()
    return model, config


def load_hf_decoder(
    path: str | Path, *, dtype: jax.typing.DTypeLike = jax.numpy.float32, seed: int = 0
) -> tuple[nnx.Module, Any]:
    """Load a Hugging Face causal LM directory (config.json + weights) of any registered decoder family, in eval
    mode: gliner's `labels_decoder` as a new decoder model reads it (its causal-LM class's `from_pretrained`). What the
    family does not read (a tied head's copy, old attention-bias buffers) is skipped; anything else must match."""
    path = Path(path)
    try:
        config = decoder_config_from_hf(read_json_object(path / CONFIG_FILE))
    except (ValueError, NotImplementedError) as error:
        raise type(error)(f"{path / CONFIG_FILE}: {error}") from None
    model = build_decoder(config, dtype=dtype, rngs=network_rngs(seed))
    ignored = set(decoder_family_of_config(config).hf_ignored(config))
    state_from_torch(model, {k: v for k, v in read_tensors(path).items() if k not in ignored}, decoder_table(config))
    model.eval()
    return model, config


def save_hf_encoder(model: nnx.Module, config: Any, path: str | Path) -> None:
    """Write `model` as a directory that transformers' base model of its family loads exactly."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    hf_config = {"architectures": [family_of_config(config).hf_architecture], **config.to_hf_dict()}
    (path / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    write_safetensors(state_to_torch(model, encoder_table(config)), path / SAFETENSORS_FILE)


def native_table(model: nnx.Module) -> list[TensorMapping]:
    """Identity table for our own format: each parameter stored under its '/'-joined path, as laid out here."""
    return [TensorMapping("/".join(path), path, False, None) for path in _flat_params(model)]


def is_native(path: str | Path) -> bool:
    """Whether `path` holds our native format rather than a gliner (PyTorch layout) directory. A directory holding
    both (the weights of two models, perhaps) is refused: ValueError naming the files."""
    path = Path(path)
    if not (path / NATIVE_PARAMS_FILE).exists():
        return False
    torch_files = [name for name in (SAFETENSORS_FILE, TORCH_FILE) if (path / name).exists()]
    if torch_files:
        raise ValueError(
            f"{path} holds both {' and '.join(torch_files)} (gliner's layout) and {NATIVE_PARAMS_FILE} (ours): "
            "which model it is cannot be told; remove the weights that are not its own"
        )
    return True


def check_new_folder(path: str | Path, overwrite: bool = False, model_file: str = GLINER_CONFIG_FILE) -> None:
    """Whether a model may be written to `path`: a new or empty folder, or with `overwrite` a model folder (one
    holding `model_file`), which is then replaced whole. ValueError naming `path` otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder to write a model into")
    if not path.is_dir() or not any(path.iterdir()):
        return
    if not overwrite:
        raise ValueError(
            f"{path} is not empty: choose another folder, or pass --overwrite (overwrite=True) to replace it whole"
        )
    if not (path / model_file).is_file():
        raise ValueError(
            f"{path} holds no {model_file}: not a model folder, so it is not replaced; choose another folder"
        )


@contextlib.contextmanager
def new_folder(path: str | Path, *, overwrite: bool = False, model_file: str = GLINER_CONFIG_FILE) -> Iterator[Path]:
    """A temporary folder beside `path` to write a model into, put in `path`'s place when the block ends (removed
    if it raises): a crash never leaves a half-written model, and a replaced folder goes whole, never mixing two
    models' files. What may be replaced is `check_new_folder`'s (checked before anything is written)."""
    check_new_folder(path, overwrite, model_file)
    path = Path(os.path.realpath(path))  # a link to a folder: the folder it names is replaced
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield temporary
        temporary.chmod(0o755)  # mkdtemp's folder is private
        if path.is_dir() and any(path.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old)
            try:
                os.replace(temporary, path)
            except OSError:
                os.replace(old, path)
                raise
            shutil.rmtree(old)
        else:
            os.replace(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def load_gliner(
    path: str | Path,
    *,
    config: GLiNERConfig | None = None,
    dtype: jax.typing.DTypeLike = jax.numpy.float32,
    seed: int = 0,
) -> tuple[GLiNERModel, GLiNERConfig]:
    """Load the network of a local GLiNER directory, in eval mode: one written by `gliner` (gliner_config.json +
    model.safetensors, preferred, or pytorch_model.bin), or by `save_gliner(..., native=True)`
    (flax_params.safetensors). `config` is the directory's complete config as `gliner_jax.hub.read_layout` gives
    it; by default it is read from there (legacy layouts completed as gliner completes them).

    Every tensor must match (the reference loads non-strictly; we do not): a missing, unexpected or mis-shaped
    tensor raises CheckpointMismatchError naming it. Only what transformers itself skips when loading the backbone
    (e.g. the `embeddings.position_ids` buffer older files carry) is left out.
    """
    path = Path(path)
    config = config or read_layout(path).config
    model = build_network(config, dtype=dtype, rngs=network_rngs(seed))
    if is_native(path):
        state_from_torch(model, read_tensors_file(path / NATIVE_PARAMS_FILE), native_table(model))
    elif config.is_streaming:
        state_from_torch(model, read_tensors(path), streaming_table(config))
    else:
        tensors = _without_transformers_skips(read_tensors(path), config.encoder_config, GLINER_ENCODER_PREFIX)
        if config.is_bi_encoder:
            tensors = _without_transformers_skips(tensors, config.labels_encoder_config, GLINER_LABELS_ENCODER_PREFIX)
        if config.is_decoder:  # the tied lm_head copy, old attention-bias buffers
            decoder = config.labels_decoder_config
            skipped = {
                GLINER_LABELS_DECODER_PREFIX + key for key in decoder_family_of_config(decoder).hf_ignored(decoder)
            }
            tensors = {k: v for k, v in tensors.items() if k not in skipped}
        state_from_torch(model, tensors, gliner_table(config))
    model.eval()
    return model, config


def save_gliner(
    model: GLiNERModel,
    config: GLiNERConfig,
    path: str | Path,
    tokenizer: Any,
    labels_tokenizer: Any = None,
    *,
    native: bool = False,
    overwrite: bool = False,
    decoder_tokenizer: Any = None,
) -> list[str]:
    """Write a complete GLiNER folder through `new_folder` (`overwrite` replaces a model folder): gliner_config.json
    and model.safetensors that `gliner.GLiNER.from_pretrained` loads strictly, or with `native`,
    flax_params.safetensors in our parameter layout (no PyTorch needed; only gliner-jax reads it), and the
    tokenizers (`save_tokenizers`). Returns the tokenizer files written, relative to the folder."""
    with new_folder(path, overwrite=overwrite) as folder:
        (folder / GLINER_CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        if native:
            write_safetensors(state_to_torch(model, native_table(model)), folder / NATIVE_PARAMS_FILE)
        else:
            write_safetensors(state_to_torch(model, model_table(config)), folder / SAFETENSORS_FILE)
        written = save_tokenizers(folder, tokenizer, labels_tokenizer, decoder_tokenizer)
        return [str(Path(name).relative_to(folder)) for name in written]


def save_tokenizers(
    path: str | Path, tokenizer: Any, labels_tokenizer: Any = None, decoder_tokenizer: Any = None
) -> list[str]:
    """Write a GLiNER directory's tokenizers as gliner does: the text tokenizer's files at the top, a bi-encoder's
    label tokenizer in `labels_tokenizer/`, a decoder model's decoder tokenizer in `decoder_tokenizer/`. Returns the
    files written."""
    written = list(tokenizer.save_pretrained(path))
    for folder, extra in ((LABELS_TOKENIZER_DIR, labels_tokenizer), (DECODER_TOKENIZER_DIR, decoder_tokenizer)):
        if extra is not None:
            written += extra.save_pretrained(Path(path) / folder)
    return written


@dataclasses.dataclass(frozen=True)
class ConversionSummary:
    """What `convert_directory` did."""

    source: str
    destination: str
    direction: str
    span_mode: str
    tensors: int
    parameters: int
    tokenizer_files: tuple[str, ...]

    def __str__(self) -> str:
        files = ", ".join(self.tokenizer_files) or "none"
        return (
            f"converted {self.source} -> {self.destination} ({self.direction}): {self.span_mode} model, "
            f"{self.tensors} tensors, {self.parameters:,} parameters; tokenizer files written: {files}"
        )


def convert_directory(
    src: str | Path,
    dst: str | Path,
    to: str | None = None,
    options: HubOptions | None = None,
    *,
    overwrite: bool = False,
) -> ConversionSummary:
    """Convert a GLiNER model (a local directory or a hub repo id, any layout gliner reads) into a gliner (PyTorch
    layout) directory or our native format, with its complete config and tokenizer.

    The direction is detected from `src` unless `to` ("torch" or "jax") is given; converting to the source's own
    format re-writes it through a strict load (a validation pass, and a legacy layout made complete). `dst` is
    written as `save_gliner` writes: a non-empty folder is refused, before `src` is read, unless `overwrite`.
    """
    if to not in (None, "torch", "jax"):
        raise ValueError(f"to must be 'torch' or 'jax', got {to!r}")
    check_new_folder(dst, overwrite)
    layout = resolve_gliner(src, options or HubOptions())
    source_format = "jax" if is_native(layout.directory) else "torch"
    to = to or ("torch" if source_format == "jax" else "jax")
    model, config = load_gliner(layout.directory, config=layout.config)
    written = save_gliner(
        model,
        config,
        dst,
        layout.tokenizer,
        layout.labels_tokenizer,
        native=to == "jax",
        overwrite=overwrite,
        decoder_tokenizer=layout.decoder_tokenizer,
    )
    # Parameters as gliner counts them (our stacked layout may hold rows PyTorch has no tensor for).
    tensors = state_to_torch(model, gliner_table(config))
    return ConversionSummary(
        source=str(src),
        destination=str(dst),
        direction=f"{source_format} -> {to}",
        span_mode=config.span_mode,
        tensors=len(tensors) if to == "torch" else len(_flat_params(model)),
        parameters=sum(value.size for value in tensors.values()),
        tokenizer_files=tuple(sorted(written)),
    )
