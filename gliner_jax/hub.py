"""Resolving a model name or path to a local snapshot (huggingface_hub), and reading every layout of a GLiNER
directory that gliner 0.2.29 reads, legacy ones included.

A name is taken as gliner takes it: an existing path is a local directory; anything else is a Hugging Face Hub repo
id, fetched by `huggingface_hub.snapshot_download` into (or, offline, read from) its standard cache. The cache is
`cache_dir`, else `HF_HUB_CACHE`, else `HF_HOME/hub`; `HF_HUB_OFFLINE=1` or `local_files_only=True` read the cache
only; `token` (else `HF_TOKEN` or the saved login) opens private and gated repos. Nothing here looks in the cache by
itself: huggingface_hub does.

Legacy layouts (models saved by older gliner versions) are completed as gliner's `from_pretrained` completes them:
the backbone's config.json and tokenizer come from the repo or directory named by `model_name` when the checkpoint
lacks `encoder_config` or tokenizer files; `[FLERT]`, the entity and the separator tokens are added when
`class_token_index` or `vocab_size` is -1 (absent), and the class token index and the embedding rows then follow the
tokenizer.

A decoder model (`labels_decoder` set) is read as gliner reads it: its decoder tokenizer from the directory's
`decoder_tokenizer/` folder, else from what `labels_decoder` names, as is the decoder's config when
`labels_decoder_config` is absent. With `relations_layer` also set, gliner builds a relation model without decoder:
its decoder fields are kept as they were read, and nothing of the decoder is loaded.

A bi-encoder (`labels_encoder` set) is read as gliner reads it: the label tokenizer from the directory's
`labels_tokenizer/` folder, else from the repo or directory `labels_encoder` names, as is the label encoder's config
when `labels_encoder_config` is absent. Its text tokenizer gets no special tokens and its embeddings keep their rows:
gliner adds the tokens to the tokenizer but never embeds them (a text holding one is refused by the processor).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (
    HFValidationError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from gliner_jax.config import (
    STREAMING_MODEL_TYPE,
    GLiNERConfig,
    builds_labels_decoder,
    builds_labels_encoder,
    refuse_other_architectures,
)
from gliner_jax.config_streaming import StreamingSpanConfig
from gliner_jax.modeling.encoders.config_checks import check_field_types

GLINER_CONFIG_FILE = "gliner_config.json"
CONFIG_FILE = "config.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
TOKENIZER_FILE = "tokenizer.json"
# The JSON files AutoTokenizer reads: a corrupt one is named by `load_tokenizer`.
TOKENIZER_JSON_FILES = (
    TOKENIZER_FILE,
    TOKENIZER_CONFIG_FILE,
    "special_tokens_map.json",
    "added_tokens.json",
    CONFIG_FILE,
)
LABELS_TOKENIZER_DIR = "labels_tokenizer"  # a bi-encoder's label tokenizer, inside its GLiNER directory
DECODER_TOKENIZER_DIR = "decoder_tokenizer"  # a decoder model's label decoder tokenizer, inside its GLiNER directory
# What is fetched of a repo. Configs and tokenizer files (tokenizer.json, vocab.txt, merges.txt, spm.model,
# sentencepiece.bpe.model, ...) for a backbone named by `model_name`; its weights too for an encoder to train;
# a GLiNER repo's weights (model.safetensors, pytorch_model.bin, our flax_params.safetensors), not its ONNX exports.
TOKENIZER_PATTERNS = ("*.json", "*.txt", "*.model")
ENCODER_PATTERNS = (*TOKENIZER_PATTERNS, "model.safetensors", "pytorch_model.bin")
GLINER_PATTERNS = (*ENCODER_PATTERNS, "flax_params.safetensors")
# Tokens gliner adds to the backbone's tokenizer, in this order, before the entity and separator tokens
# ([FLERT] is flair's context separator, kept from the flair-based gliner versions).
FLERT_TOKEN = "[FLERT]"


class ModelNotFoundError(FileNotFoundError):
    """A model name that is neither an existing directory nor a repo huggingface_hub can provide."""


@dataclasses.dataclass(frozen=True)
class HubOptions:
    """How repos are fetched: gliner's `from_pretrained` arguments (the revision is the named repo's only; a
    backbone named by `model_name` is read at its default branch, as gliner reads it)."""

    revision: str | None = None
    cache_dir: str | Path | None = None
    token: str | bool | None = None
    local_files_only: bool = False


def resolve(name_or_path: str | Path, patterns: Sequence[str], options: HubOptions = HubOptions()) -> Path:
    """The local directory of `name_or_path`: the path itself if it exists, else the snapshot of that hub repo
    (its files matching `patterns`), downloaded unless offline.

    Raises ModelNotFoundError naming it when it is neither: "no such directory" for a name that cannot be a repo id;
    "not in the Hugging Face cache" when offline; "no model repo" when the hub has none (or refuses access).
    """
    path = Path(name_or_path)
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"{name_or_path}: not a directory (a model is a directory or a hub repo id)")
        return path
    name = str(name_or_path)
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ModelNotFoundError(f"{name}: no such directory") from None
    try:
        return Path(
            snapshot_download(
                name,
                revision=options.revision,
                cache_dir=options.cache_dir,
                token=options.token,
                local_files_only=options.local_files_only,
                allow_patterns=list(patterns),
            )
        )
    except IncompleteSnapshotError:
        raise  # its message says which files the cached snapshot lacks
    except LocalEntryNotFoundError:
        cache = Path(options.cache_dir or constants.HF_HUB_CACHE)
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "local_files_only=True"
        if not (constants.HF_HUB_OFFLINE or options.local_files_only):
            why = "the hub could not be reached"
        at = f" at revision {options.revision!r}" if options.revision else ""
        raise ModelNotFoundError(
            f"{name}: no such directory, and the model repo {name!r}{at} is not in the Hugging Face cache {cache} "
            f"({why}: nothing was downloaded)"
        ) from None
    except RevisionNotFoundError:
        raise ModelNotFoundError(f"the model repo {name!r} has no revision {options.revision!r}") from None
    except RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"{name}: no such directory, and no model repo {name!r} on the Hugging Face Hub "
            "(if it is private or gated, log in or pass a token)"
        ) from None


@dataclasses.dataclass(frozen=True)
class GLiNERLayout:
    """A GLiNER directory as gliner reads it: its complete config (the backbone's config embedded as
    `encoder_config`; a uni-encoder's `class_token_index` and `vocab_size` set, a bi-encoder's
    `labels_encoder_config` embedded), its tokenizer (a uni-encoder's with gliner's special tokens) and a
    bi-encoder's label tokenizer."""

    directory: Path
    config: GLiNERConfig
    tokenizer: PreTrainedTokenizerBase
    labels_tokenizer: PreTrainedTokenizerBase | None = None
    decoder_tokenizer: PreTrainedTokenizerBase | None = None


def resolve_gliner(name_or_path: str | Path, options: HubOptions = HubOptions()) -> GLiNERLayout:
    """The GLiNER model of a local directory or hub repo id, its layout read as gliner 0.2.29 reads it."""
    return read_layout(resolve(name_or_path, GLINER_PATTERNS, options), options)


def read_layout(directory: str | Path, options: HubOptions = HubOptions()) -> GLiNERLayout:
    """Read a GLiNER directory's config and tokenizer, completing a legacy layout as gliner's `from_pretrained`
    does (see the module docstring); the backbone named by `model_name` is fetched only for what the directory
    lacks.

    A config naming an architecture not implemented here (decoder, relation extraction, streaming) raises
    NotImplementedError naming the field before anything else is read. With `class_token_index` and `vocab_size`
    both set, a uni-encoder's tokenizer must already hold the entity token at that index (ValueError otherwise, as
    in gliner); the weights must then have `vocab_size` embedding rows (`encoder_config`'s when embedded), and
    `len(tokenizer)` rows otherwise. A bi-encoder's text embeddings have `encoder_config`'s rows.
    """
    directory = Path(directory)
    config_path = directory / GLINER_CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory}: no {GLINER_CONFIG_FILE}, not a GLiNER model directory")
    data = read_json_object(config_path)
    if data.get("model_type") == STREAMING_MODEL_TYPE:
        return _streaming_layout(directory, data, options)
    refuse_other_architectures(data)
    check_field_types(data, GLiNERConfig, f"{config_path}:")
    backbone_directory = _snapshot_on_demand(data.get("model_name", GLiNERConfig.model_name), options)

    has_tokenizer = (directory / TOKENIZER_CONFIG_FILE).is_file()
    tokenizer = load_tokenizer(directory if has_tokenizer else backbone_directory())
    encoder = data.get("encoder_config")
    if not encoder:
        encoder = read_json_object(backbone_directory() / CONFIG_FILE)
        if data.get("vocab_size", -1) != -1:
            encoder["vocab_size"] = data["vocab_size"]
    completed = dict(data, encoder_config=encoder)
    if builds_labels_encoder(data):  # a bi-encoder: no prompt, so no special tokens
        completed["labels_encoder_config"], labels_tokenizer = _labels_encoder(directory, data, options)
        return GLiNERLayout(directory, _config(completed, config_path), tokenizer, labels_tokenizer)
    ent_token = data.get("ent_token", GLiNERConfig.ent_token)
    if data.get("class_token_index", -1) == -1 or data.get("vocab_size", -1) == -1:
        sep_token = data.get("sep_token", GLiNERConfig.sep_token)
        if data.get("relations_layer") is not None:  # gliner's relex model appends [ent, sep, rel], no [FLERT]
            tokenizer.add_tokens([ent_token, sep_token, data.get("rel_token", GLiNERConfig.rel_token)], True)
            rows = len(tokenizer)
            completed.update(class_token_index=rows - 3, rel_token_index=rows - 1)
        else:
            add_special_tokens(tokenizer, ent_token, sep_token)
            rows = len(tokenizer)
            completed.update(class_token_index=rows - 2)
        completed.update(vocab_size=rows, encoder_config=dict(encoder, vocab_size=rows))
    else:
        _check_class_token(data["class_token_index"], ent_token, tokenizer, config_path)
    decoder_tokenizer = None
    if builds_labels_decoder(data):
        completed["labels_decoder_config"], decoder_tokenizer = _labels_decoder(directory, data, options)
    return GLiNERLayout(directory, _config(completed, config_path), tokenizer, decoder_tokenizer=decoder_tokenizer)


def _streaming_layout(directory: Path, data: dict[str, Any], options: HubOptions) -> GLiNERLayout:
    """A streaming span model's layout as gliner reads it: the tokenizer (the directory's, else the backbone's) with
    a pad token (the eos token, else a new `<|pad|>`) and the label and separator tokens, whose ids
    become `class_token_index` and `sep_token_index` and whose length the embedding rows (`vocab_size`); the decoder's
    config embedded (`decoder_config`), else read from the backbone."""
    config_path = directory / GLINER_CONFIG_FILE
    check_field_types(data, StreamingSpanConfig, f"{config_path}:")
    name = data.get("model_name") or data.get("labels_decoder") or StreamingSpanConfig.model_name
    backbone_directory = _snapshot_on_demand(name, options)
    has_tokenizer = (directory / TOKENIZER_CONFIG_FILE).is_file()
    tokenizer = load_tokenizer(directory if has_tokenizer else backbone_directory())
    tokens = (data.get("label_token", StreamingSpanConfig.label_token), data.get("sep_token", GLiNERConfig.sep_token))
    label_id, sep_id = add_streaming_tokens(tokenizer, *tokens)
    decoder = data.get("decoder_config") or data.get("labels_decoder_config")
    if not decoder:
        decoder = read_json_object(backbone_directory() / CONFIG_FILE)
    rows = len(tokenizer)
    completed = dict(data, decoder_config=dict(decoder, vocab_size=rows), vocab_size=rows)
    completed.update(class_token_index=label_id, sep_token_index=sep_id)
    return GLiNERLayout(directory, _config(completed, config_path, StreamingSpanConfig), tokenizer)


def _config(data: dict[str, Any], path: Path, config_class: type[GLiNERConfig] = GLiNERConfig) -> GLiNERConfig:
    """The config (`config_class`) of a completed config dict; a bad value is a ValueError (an option not implemented
    a NotImplementedError) naming the file it came from."""
    try:
        return config_class.from_dict(data)
    except (ValueError, NotImplementedError) as error:
        raise type(error)(f"{path}: {error}") from None


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object a config file holds; ValueError naming the file (and line) when it holds something else."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 (byte 0x{error.object[error.start]:02x} at offset {error.start})"
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: invalid JSON: {error.msg} (column {error.colno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got a {type(data).__name__}")
    return data


def load_tokenizer(directory: Path, **options: Any) -> PreTrainedTokenizerBase:
    """`AutoTokenizer.from_pretrained(directory, **options)`; a corrupt tokenizer file is a ValueError naming the
    directory and, for a JSON file, the file and line."""
    try:
        return AutoTokenizer.from_pretrained(directory, **options)
    except Exception as error:  # the tokenizers library raises bare Exceptions
        for name in TOKENIZER_JSON_FILES:
            if (directory / name).is_file():
                read_json_object(directory / name)
        why = f"{type(error).__name__}: {error}" if isinstance(error, KeyError) else str(error) or type(error).__name__
        raise ValueError(
            f"{directory}: cannot read the tokenizer, its files are corrupt or of another kind ({why})"
        ) from error


def _snapshot_on_demand(name: str, options: HubOptions) -> Callable[[], Path]:
    """A function giving the local directory (configs and tokenizer files) of the encoder `name` names, resolved on
    its first call only, at the default revision: gliner reads backbones and label encoders there."""
    return functools.cache(lambda: resolve(name, TOKENIZER_PATTERNS, dataclasses.replace(options, revision=None)))


def _labels_encoder(directory: Path, data: dict, options: HubOptions) -> tuple[dict, PreTrainedTokenizerBase]:
    """A bi-encoder's label encoder config and label tokenizer, each from the GLiNER directory where it is there (the
    embedded `labels_encoder_config`, the `labels_tokenizer/` folder), else from what `labels_encoder` names, read
    at its default revision as gliner reads it. A config read from there takes the GLiNER config's `vocab_size`
    when that is set, as in gliner."""
    source_directory = _snapshot_on_demand(data["labels_encoder"], options)
    folder = directory / LABELS_TOKENIZER_DIR
    labels_tokenizer = load_tokenizer(folder if (folder / TOKENIZER_CONFIG_FILE).is_file() else source_directory())
    config = data.get("labels_encoder_config")
    if not config:
        config = read_json_object(source_directory() / CONFIG_FILE)
        if data.get("vocab_size", -1) != -1:
            config["vocab_size"] = data["vocab_size"]
    return config, labels_tokenizer


def _labels_decoder(directory: Path, data: dict, options: HubOptions) -> tuple[dict, PreTrainedTokenizerBase]:
    """A decoder model's label decoder config and tokenizer as gliner reads them: the tokenizer from the directory's
    `decoder_tokenizer/` folder, else from what `labels_decoder` names (with `add_prefix_space`), its pad token the
    end-of-sequence token where it has none; the config embedded (`labels_decoder_config`), else from there."""
    source_directory = _snapshot_on_demand(data["labels_decoder"], options)
    folder = directory / DECODER_TOKENIZER_DIR
    has_folder = (folder / TOKENIZER_CONFIG_FILE).is_file()
    decoder_tokenizer = load_decoder_tokenizer(folder if has_folder else source_directory(), saved=has_folder)
    config = data.get("labels_decoder_config") or read_json_object(source_directory() / CONFIG_FILE)
    return config, decoder_tokenizer


def load_decoder_tokenizer(directory: Path, *, saved: bool = False) -> PreTrainedTokenizerBase:
    """A label decoder's tokenizer as gliner makes it: the causal LM's (with `add_prefix_space`; a `saved` one, a
    model's `decoder_tokenizer/`, as it was written), its pad token the end-of-sequence token where it has none."""
    decoder_tokenizer = load_tokenizer(directory) if saved else load_tokenizer(directory, add_prefix_space=True)
    if decoder_tokenizer.pad_token is None:
        decoder_tokenizer.pad_token = decoder_tokenizer.eos_token
    return decoder_tokenizer


def add_streaming_tokens(tokenizer: PreTrainedTokenizerBase, label_token: str, sep_token: str) -> tuple[int, int]:
    """A streaming span model's tokens as gliner adds them to its causal LM's tokenizer: a pad token (the
    end-of-sequence token, else a new `<|pad|>`), then the label marker and the separator; returns their ids."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
        else:
            tokenizer.pad_token = tokenizer.eos_token
    tokenizer.add_tokens([label_token, sep_token], special_tokens=True)
    label_id, sep_id = tokenizer.convert_tokens_to_ids([label_token, sep_token])
    return label_id, sep_id


def add_special_tokens(tokenizer: PreTrainedTokenizerBase, ent_token: str, sep_token: str) -> None:
    """Add gliner's special tokens ([FLERT], the entity and separator tokens, in that order) where missing."""
    tokenizer.add_tokens([FLERT_TOKEN, ent_token, sep_token], special_tokens=True)


def _check_class_token(index: int, ent_token: str, tokenizer: PreTrainedTokenizerBase, where: Path) -> None:
    """gliner's checks of an explicit class_token_index: in the tokenizer's range, and the entity token known."""
    if not 0 <= index < len(tokenizer):
        raise ValueError(
            f"{where}: class_token_index={index} is out of range for the tokenizer (len={len(tokenizer)}): the "
            f"tokenizer lacks gliner's special tokens (set class_token_index and vocab_size to -1 to add them)"
        )
    unknown = tokenizer.convert_tokens_to_ids(ent_token) in (None, tokenizer.unk_token_id)
    if unknown and ent_token != tokenizer.unk_token:
        raise ValueError(f"{where}: the entity token {ent_token!r} is not in the tokenizer's vocabulary")
