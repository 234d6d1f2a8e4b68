"""The training run configuration: YAML files of nested sections, with `key=value` overrides from the command line."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from gliner_jax.config import STREAMING_MODEL_TYPE, GLiNERConfig
from gliner_jax.config_streaming import StreamingSpanConfig
from gliner_jax.data_formats import SOURCE_FORMATS, read_text
from gliner_jax.modeling.encoders import family_of
from gliner_jax.modeling.encoders.config_checks import check_field_types, check_known_keys, fits, type_name
from gliner_jax.modeling.encoders.deberta import MODEL_TYPE as DEBERTA
from gliner_jax.modeling.layer_stack import REMAT_POLICIES
from gliner_jax.sharding import MeshConfig
from gliner_jax.training.loss import LossConfig
from gliner_jax.training.optim import OptimizerConfig

# The scores `trainer.best_by` may choose a checkpoint by (higher is better), as the evaluations log them.
BEST_BY = ("dev/f1", "benchmark/zero_shot_f1", "benchmark/all_f1")


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """What to train: a new GLiNER (gliner_config.json fields plus an encoder) or an existing one.

    `encoder` is either the fields of a DeBERTa config (a randomly initialised encoder) or a Hugging Face DeBERTa
    model, pretrained weights: a local directory or a hub repo id such as microsoft/deberta-v3-small. `init_from` is
    a GLiNER model to fine-tune, a local directory (gliner's, any version, or ours) or a hub repo id; its own
    gliner_config.json then defines the network, and `gliner` must be empty. `tokenizer` is a tokenizer directory
    or repo id (defaults to the encoder's or init_from's).
    `labels_encoder` makes a new GLiNER a bi-encoder (gliner's `labels_encoder`): a Hugging Face encoder of any
    registered family, pretrained weights, as a local directory or repo id, or the fields of its config.json
    (`model_type` included; a random encoder); `labels_tokenizer` is its tokenizer (defaults to the encoder's).
    `gliner.labels_decoder` (a causal LM's directory or repo id: GPT-2, Llama, Qwen2) makes a new GLiNER a decoder
    model, which takes that LM's weights, config and tokenizer (`training.model_init.build_model`).
    `gliner.model_type: gliner_streaming_span` makes it a streaming span model (the fields of a streaming
    gliner_config.json) on the causal LM `encoder` names, whose base model's weights it takes.
    `unroll_layers` unrolls the encoder's scan over layers in the train step: faster, compile time growing with depth
    (evaluation and export keep the scan). `remat` ("none", "dots", "full") rematerialises each encoder layer in the
    backward pass (`modeling/layer_stack.py`): the same numbers, less activation memory, more compute.
    `dtype` is the compute dtype; `param_dtype` the dtype the train step holds the parameters in: with
    "bfloat16", the optimizer keeps float32 master weights (`optim.with_master_weights`), and evaluation and export
    read those. `encoder_attributes` sets attributes of the encoder's modules by name for training, evaluation and
    export (e.g. DeBERTa's blockwise attention: `{blockwise_above: 2048, query_block: 256}`); a name no module has
    is refused.
    """

    gliner: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    encoder: Mapping[str, Any] | str | None = None
    init_from: str | None = None
    tokenizer: str | None = None
    labels_encoder: Mapping[str, Any] | str | None = None
    labels_tokenizer: str | None = None
    dtype: str = "float32"
    param_dtype: str = "float32"
    unroll_layers: bool = True
    remat: str = "none"
    encoder_attributes: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        streaming = self.gliner.get("model_type") == STREAMING_MODEL_TYPE
        config_class = StreamingSpanConfig if streaming else GLiNERConfig
        gliner_fields = {f.name for f in dataclasses.fields(config_class)} - {"extra"}
        gliner_fields |= {"model_type"} if streaming else set()
        check_known_keys(self.gliner, gliner_fields, "model.gliner")
        check_field_types({k: v for k, v in self.gliner.items() if k != "model_type"}, config_class, "model.gliner:")
        if streaming and not isinstance(self.encoder, str):
            raise ValueError("model.encoder must name the causal LM (a directory or repo id) of a new streaming model")
        if isinstance(self.encoder, Mapping):  # a random encoder: the fields of its family's config
            config_class = family_of(self.encoder.get("model_type", DEBERTA)).config_class
            known = {f.name for f in dataclasses.fields(config_class)} - {"extra"} | {"model_type"}
            check_known_keys(self.encoder, known, "model.encoder")
            check_field_types(self.encoder, config_class, "model.encoder:")
        if (self.encoder is None) == (self.init_from is None):
            raise ValueError("model: give exactly one of `encoder` (a new GLiNER) or `init_from` (an existing one)")
        if self.init_from is not None and self.gliner:
            raise ValueError("model.gliner must be empty with model.init_from: the checkpoint's config is used")
        if isinstance(self.encoder, Mapping) and self.tokenizer is None:
            raise ValueError("model.tokenizer is required for an encoder defined by its config fields")
        if self.init_from is not None and (self.labels_encoder is not None or self.labels_tokenizer is not None):
            raise ValueError("model.labels_encoder must be empty with model.init_from: the checkpoint's config is used")
        if isinstance(self.labels_encoder, Mapping) and self.labels_tokenizer is None:
            raise ValueError("model.labels_tokenizer is required for a label encoder defined by its config fields")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in ("float32", "bfloat16"):
                raise ValueError(f"model.{name} must be float32 or bfloat16, got {getattr(self, name)!r}")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"model.remat must be one of {sorted(REMAT_POLICIES)}, got {self.remat!r}")


SOURCE_KEYS = ("path", "weight", "format", "name")


def source_name(source: Mapping[str, Any]) -> str:
    """A mixture source's name in the logs and metrics (`data/<name>`): its `name`, else its path's stem."""
    return source.get("name") or Path(str(source["path"]).rstrip("/")).stem


def check_sources(sources: tuple[Any, ...]) -> None:
    """ValueError naming the first `data.sources` entry that is not {path, weight > 0, format, name}."""
    names = set()
    for i, source in enumerate(sources):
        where = f"data.sources[{i}]"
        if not isinstance(source, Mapping):
            raise ValueError(f"{where} must be a mapping of {', '.join(SOURCE_KEYS)}, got {source!r}")
        check_known_keys(source, SOURCE_KEYS, where)
        if not isinstance(source.get("path"), str) or not source["path"]:
            raise ValueError(f"{where}.path is required (a file, a folder of ArrayRecord shards or tfds:NAME:SPLIT)")
        weight = source.get("weight", 1.0)
        if not fits(weight, float) or not weight > 0:
            raise ValueError(f"{where}.weight must be a number > 0, got {weight!r}")
        if source.get("format", "auto") not in SOURCE_FORMATS:
            raise ValueError(f"{where}.format must be one of {', '.join(SOURCE_FORMATS)}, got {source['format']!r}")
        if source_name(source) in names:
            raise ValueError(f"{where}: a second source named {source_name(source)!r}; give each a distinct `name`")
        names.add(source_name(source))


@dataclasses.dataclass(frozen=True)
class DataSection:
    """Training and dev data: a JSON/JSONL file, a folder of ArrayRecord shards, or `tfds:NAME:SPLIT`.

    `sources`, instead of `train`: a weighted mixture, a list of {path, weight (default 1), format (default auto,
    see `data_formats.SOURCE_FORMATS`), name (default the path's stem)}, each source shuffled and repeated on its
    own and drawn in proportion to its weight.

    Label sampling follows the model's gliner config (max_types, max_neg_type_ratio), as in the reference.
    `strict`: refuse a training file with bad records instead of skipping them (with a report).
    `packing`: put several examples in each encoder row of about `row_length` tokens (`gliner_jax.packing`): the
    same examples, labels and loss per step, less padding; off by default, which gives the reference's batches.
    `benchmark`: a folder in gliner's benchmark layout (`gliner_jax.benchmark_suite`), evaluated with the dev data.
    `shuffle`: false reads the training records in file order, pass after pass (gliner's
    `train_sampling_strategy="sequential"`), for data already in the order it is to be seen; true (default)
    reshuffles every pass.
    """

    train: str | None = None
    sources: tuple[Mapping[str, Any], ...] = ()
    dev: str | None = None
    benchmark: str | None = None
    strict: bool = False
    packing: bool = False
    row_length: int = 512
    shuffle: bool = True

    def __post_init__(self) -> None:
        if bool(self.train) == bool(self.sources):
            raise ValueError("data: give exactly one of `train` (one source) or `sources` (a weighted mixture)")
        check_sources(self.sources)
        if self.row_length < 1:
            raise ValueError(f"data.row_length must be >= 1, got {self.row_length}")


@dataclasses.dataclass(frozen=True)
class TrainerSection:
    """The loop: steps, batch, seed, logging, evaluation and checkpoint cadence, output folder. Each dev evaluation
    scores `eval_threshold` (the headline dev/f1) and the `eval_thresholds` sweep (empty: none) from one model pass.

    `best_by` (one of `BEST_BY`, or None) also saves every evaluation as a checkpoint with its scores, keeps the
    best-scoring one besides the newest `keep_checkpoints`, and exports it to OUTPUT/best beside OUTPUT/final.
    """

    output_dir: str = "runs/default"
    num_steps: int = 1000
    global_batch_size: int = 8
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0  # 0: only at the end (when data.dev or data.benchmark is set)
    eval_threshold: float = 0.5
    eval_thresholds: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    eval_batch_size: int = 16
    save_every: int = 500
    keep_checkpoints: int = 3
    export: bool = True
    best_by: str | None = None

    def __post_init__(self) -> None:
        for name in ("num_steps", "global_batch_size", "log_every", "save_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"trainer.{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise ValueError(f"trainer.eval_every must be >= 0, got {self.eval_every}")
        if not all(fits(t, float) and 0 <= t <= 1 for t in self.eval_thresholds):
            raise ValueError(f"trainer.eval_thresholds must be numbers in [0, 1], got {list(self.eval_thresholds)}")
        if self.best_by is not None and self.best_by not in BEST_BY:
            raise ValueError(f"trainer.best_by must be null or one of {', '.join(BEST_BY)}, got {self.best_by!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A whole training run; each field is one top-level YAML section."""

    model: ModelSection
    data: DataSection
    optimizer: OptimizerConfig  # num_steps defaults to trainer.num_steps / grad_accum_steps
    trainer: TrainerSection = dataclasses.field(default_factory=TrainerSection)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    rules: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # logical axis -> mesh axes, over the defaults

    def __post_init__(self) -> None:
        best_by = self.trainer.best_by
        needed = "data.dev" if best_by == "dev/f1" else "data.benchmark"
        if best_by is not None and not getattr(self.data, needed.removeprefix("data.")):
            raise ValueError(f"trainer.best_by={best_by} needs {needed}: no evaluation of this run gives {best_by}")


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    """Instantiate dataclass `cls` from a mapping, recursing into dataclass fields; unknown keys are errors."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where or 'the config'} must be a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    check_known_keys(data, [f.name for f in dataclasses.fields(cls)], where or "the config")
    values = {}
    for key, value in data.items():
        hint, name = hints[key], f"{where}.{key}".lstrip(".")
        if dataclasses.is_dataclass(hint):
            value = _build(hint, value, name)
        elif isinstance(value, list) and _is_tuple_hint(hint):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        elif isinstance(value, str | int) and not isinstance(value, bool) and float in _options(hint):
            value = _to_float(value, name)
        if not fits(value, hint):
            raise ValueError(f"{name} must be {type_name(hint)}, got {value!r}")
        values[key] = value
    try:
        return cls(**values)
    except TypeError as error:  # a value of the wrong type, compared or computed with in __post_init__
        raise ValueError(f"{where or 'config'}: {error}") from None


def _options(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)


def _is_tuple_hint(hint: Any) -> bool:
    return any(typing.get_origin(option) is tuple or option is tuple for option in _options(hint))


def _to_float(value: str | int, where: str) -> float:
    """YAML reads 1e-5 (no dot) as a string; accept it, and ints, where a float is expected."""
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{where} must be a number, got {value!r}") from None


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
        if not isinstance(tree, dict):
            raise ValueError(f"override {dotted!r}: {key!r} is not a section")
    tree[leaf] = value


def load_train_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML run config and apply `section.key=value` overrides (values parsed as YAML scalars)."""
    try:
        tree = yaml.safe_load(read_text(Path(path))) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not a YAML file: {error}") from None
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: a run config is a mapping of sections, got a {type(tree).__name__}")
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key:
            raise ValueError(f"override {override!r} is not of the form section.key=value")
        try:
            _set_dotted(tree, key.strip(), yaml.safe_load(value))
        except yaml.YAMLError as error:
            raise ValueError(f"override {override!r}: the value is not YAML: {error}") from None
    optimizer = tree.setdefault("optimizer", {})
    if isinstance(optimizer, dict) and "num_steps" not in optimizer:
        trainer = tree.get("trainer") or {}
        trainer_steps = trainer.get("num_steps", TrainerSection.num_steps) if isinstance(trainer, dict) else 1
        accumulation = optimizer.get("grad_accum_steps", 1)
        for name, value in (("trainer.num_steps", trainer_steps), ("optimizer.grad_accum_steps", accumulation)):
            if not fits(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        optimizer["num_steps"] = max(1, trainer_steps // accumulation)
    try:
        return _build(TrainConfig, tree, "")
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
