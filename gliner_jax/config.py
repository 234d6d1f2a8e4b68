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
