"""Configuration dataclasses mirroring the Hugging Face / gliner JSON files."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

# Defaults that transformers' DebertaV2 code falls back to when a key is absent from config.json.
# They differ from the deberta-v3 values, so a config read from JSON must use these, not ours.
_HF_ABSENT_DEFAULTS: dict[str, Any] = {
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 0,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-7,
    "relative_attention": False,
    "max_relative_positions": -1,
    "position_buckets": -1,
    "position_biased_input": True,
    "pos_att_type": None,
    "share_att_key": False,
    "norm_rel_ebd": "none",
    "conv_kernel_size": 0,
}
_SUPPORTED_POS_ATT_TYPES = ("c2p", "p2c")
_SUPPORTED_REL_NORMS = ("none", "layer_norm")


@dataclasses.dataclass(frozen=True)
class DebertaConfig:
    """A DeBERTa-v2/v3 encoder configuration (the subset of `DebertaV2Config` our encoder implements).

    Defaults are those of microsoft/deberta-v3-base. Keys of a Hugging Face config that do not
    change the encoder's computation (pooler settings, token ids, ...) are kept in `extra` so that
    a load/save round trip loses nothing.
    """

    vocab_size: int = 128100
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-7
    initializer_range: float = 0.02
    position_buckets: int = 256
    max_relative_positions: int = -1
    pos_att_type: tuple[str, ...] = ("p2c", "c2p")
    share_att_key: bool = True
    norm_rel_ebd: str = "layer_norm"
    position_biased_input: bool = False
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.hidden_act != "gelu":
            raise NotImplementedError(f"hidden_act={self.hidden_act!r} is not supported (only 'gelu')")
        unknown = [t for t in self.pos_att_type if t not in _SUPPORTED_POS_ATT_TYPES]
        if unknown:
            raise NotImplementedError(f"pos_att_type {unknown} is not supported (only c2p and p2c)")
        unknown = [t for t in self.rel_norms if t not in _SUPPORTED_REL_NORMS]
        if unknown:
            raise NotImplementedError(f"norm_rel_ebd {unknown} is not supported (only layer_norm or none)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rel_norms(self) -> tuple[str, ...]:
        """`norm_rel_ebd` split on '|', as transformers reads it."""
        return tuple(t.strip() for t in self.norm_rel_ebd.lower().split("|"))

    @property
    def max_relative_distance(self) -> int:
        """`max_relative_positions`, or `max_position_embeddings` when it is < 1."""
        if self.max_relative_positions < 1:
            return self.max_position_embeddings
        return self.max_relative_positions

    @property
    def attention_span(self) -> int:
        """Half the number of relative-position embeddings (`pos_ebd_size` in transformers)."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative_distance

    @classmethod
    def from_hf_dict(cls, hf: Mapping[str, Any]) -> DebertaConfig:
        """Build from a transformers `DebertaV2Config` dict; refuse what our encoder does not implement."""
        model_type = hf.get("model_type", "deberta-v2")
        if model_type not in ("deberta-v2", None):
            raise NotImplementedError(f"model_type={model_type!r} is not supported (only 'deberta-v2')")

        def get(key: str) -> Any:
            return hf[key] if key in hf else _HF_ABSENT_DEFAULTS[key]

        hidden, heads = hf["hidden_size"], hf["num_attention_heads"]
        refusals = {
            "relative_attention": (get("relative_attention") is not True, "must be true"),
            "conv_kernel_size": (get("conv_kernel_size") > 0, "convolution layers are not implemented"),
            "type_vocab_size": (get("type_vocab_size") > 0, "token type embeddings are not implemented"),
            "attention_head_size": (
                hf.get("attention_head_size", hidden // heads) != hidden // heads,
                f"must equal hidden_size // num_attention_heads = {hidden // heads}",
            ),
            "embedding_size": (
                hf.get("embedding_size", hidden) != hidden,
                f"must equal hidden_size = {hidden}",
            ),
        }
        for key, (refused, why) in refusals.items():
            if refused:
                raise NotImplementedError(f"unsupported DeBERTa config {key}={hf.get(key)!r}: {why}")

        pos_att_type = get("pos_att_type") or ()
        if isinstance(pos_att_type, str):
            pos_att_type = [t.strip() for t in pos_att_type.lower().split("|")]
        fields = {f.name for f in dataclasses.fields(cls)} - {"extra", "pos_att_type"}
        values = {key: get(key) if key in _HF_ABSENT_DEFAULTS else hf[key] for key in fields}
        used = fields | {"pos_att_type"}
        extra = {k: v for k, v in hf.items() if k not in used}
        return cls(**values, pos_att_type=tuple(pos_att_type), extra=extra)

    def to_hf_dict(self) -> dict[str, Any]:
        """A dict that `transformers.DebertaV2Config(**d)` turns into the same encoder."""
        out = dict(self.extra)
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"})
        out.update(
            model_type="deberta-v2",
            pos_att_type=list(self.pos_att_type),
            relative_attention=True,
            type_vocab_size=0,
        )
        return out


SPAN_MODES = ("markerV0", "token_level")


@dataclasses.dataclass(frozen=True)
class GLiNERConfig:
    """`gliner_config.json`: every field the `gliner` library writes, with its defaults.

    The backbone's configuration is embedded as `encoder_config`. Keys we do not model (old
    training settings, fields of other gliner architectures, `transformers_version`, ...) are kept
    in `extra` and written back unchanged.
    """

    model_name: str = "microsoft/deberta-v3-small"
    name: str = "gliner"
    max_width: int = 12
    hidden_size: int = 512
    dropout: float = 0.4
    fine_tune: bool = True
    subtoken_pooling: str = "first"
    span_mode: str = "markerV0"
    post_fusion_schema: str = ""
    num_post_fusion_layers: int = 1
    vocab_size: int = -1
    max_neg_type_ratio: int = 1
    max_types: int = 25
    max_len: int = 384
    words_splitter_type: str = "whitespace"
    num_rnn_layers: int = 1
    fuse_layers: bool = False
    embed_ent_token: bool = True
    class_token_index: int = -1
    ent_token: str = "<<ENT>>"
    sep_token: str = "<<SEP>>"
    token_loss_coef: float = 1.0
    span_loss_coef: float = 1.0
    represent_spans: bool = False
    neg_spans_ratio: float = 1.0
    precomputed_prompts_mode: Any = None
    id_to_classes: Any = None
    encoder_config: DebertaConfig = dataclasses.field(default_factory=DebertaConfig)
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        refusals = {
            "span_mode": (self.span_mode not in SPAN_MODES, f"only {SPAN_MODES} are implemented"),
            "subtoken_pooling": (self.subtoken_pooling != "first", "only 'first' is implemented"),
            "fuse_layers": (bool(self.fuse_layers), "layer fusion is not implemented"),
            "post_fusion_schema": (bool(self.post_fusion_schema), "cross fusion is not implemented"),
            "represent_spans": (bool(self.represent_spans), "token-model span representations are not implemented"),
            "precomputed_prompts_mode": (bool(self.precomputed_prompts_mode), "precomputed prompts: not implemented"),
            "num_rnn_layers": (self.num_rnn_layers < 0, "must be >= 0"),
        }
        # Fields that select other gliner architectures (bi-encoder, decoder, relation extraction).
        for key in ("labels_encoder", "labels_decoder", "relations_layer", "span_encoder_config"):
            refusals[key] = (self.extra.get(key) is not None, "this gliner architecture is not implemented")
        for key, (refused, why) in refusals.items():
            if refused:
                value = getattr(self, key) if hasattr(self, key) else self.extra[key]
                raise NotImplementedError(f"unsupported GLiNER config {key}={value!r}: {why}")
        if self.num_rnn_layers and self.hidden_size % 2:
            raise ValueError(f"hidden_size must be even for the BiLSTM, got {self.hidden_size}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GLiNERConfig:
        """Build from a `gliner_config.json` dict (which must embed `encoder_config`)."""
        if not data.get("encoder_config"):
            raise ValueError(
                "gliner_config.json has no encoder_config; the backbone config is needed offline "
                "(re-save the model with a recent gliner version)"
            )
        fields = {f.name for f in dataclasses.fields(cls)} - {"extra", "encoder_config"}
        values = {k: v for k, v in data.items() if k in fields}
        extra = {k: v for k, v in data.items() if k not in fields and k != "encoder_config"}
        return cls(**values, encoder_config=DebertaConfig.from_hf_dict(data["encoder_config"]), extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The `gliner_config.json` dict: our fields, the preserved extras, the full encoder config."""
        out = dict(self.extra)
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"})
        out["encoder_config"] = self.encoder_config.to_hf_dict()
        return out

    @property
    def projects_encoder_output(self) -> bool:
        """Whether a Linear maps the encoder width to `hidden_size` (`token_rep_layer.projection`)."""
        return self.hidden_size != self.encoder_config.hidden_size
