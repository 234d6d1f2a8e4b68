"""gliner's streaming span model's `gliner_config.json` (its `StreamingSpanConfig`, model_type
"gliner_streaming_span"): a `GLiNERConfig` whose backbone is a causal decoder (`gliner_jax.modeling.streaming`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from gliner_jax.config import RELEX_ONLY_FIELDS, STREAMING_MODEL_TYPE, GLiNERConfig
from gliner_jax.modeling.context_encoders import context_encoder_config
from gliner_jax.modeling.decoders import decoder_config_from_hf
from gliner_jax.modeling.encoders.config_checks import check_field_types

# gliner's default label encoder: a two-layer DeBERTa-v2 context encoder as wide as hidden_size.
DEFAULT_LABELS_ENCODER = {"model_type": "deberta-v2", "num_hidden_layers": 2}
# Keys of gliner's streaming config that are not fields here: the embedded decoder config (held in encoder_config),
# the architecture's name, and the old names gliner still reads for the backbone.
_EMBEDDED = ("model_type", "encoder_config", "decoder_config", "labels_decoder", "labels_decoder_config")


@dataclasses.dataclass(frozen=True)
class StreamingSpanConfig(GLiNERConfig):
    """gliner's `StreamingSpanConfig`: a `GLiNERConfig` whose backbone is a causal decoder (its config, a
    `modeling.decoders` family's, held in `encoder_config`, written as `decoder_config`), with its label encoder
    (`labels_encoder_config`, a context encoder config), the label marker `label_token` and the separator's id
    `sep_token_index`, the session context limit `max_cache_length` (None: the decoder's positions) and the
    `right_context_width` of words whose spans a new chunk rescores (None: `max_width`)."""

    span_mode: str = "markerV2"
    num_rnn_layers: int = 0
    label_token: str = "<<LABEL>>"
    sep_token_index: int = -1
    max_cache_length: int | None = None
    right_context_width: int | None = None

    def __post_init__(self) -> None:
        check_field_types(self.__dict__, StreamingSpanConfig, "streaming GLiNER config")
        labels = DEFAULT_LABELS_ENCODER if self.labels_encoder_config is None else self.labels_encoder_config
        if isinstance(labels, Mapping):
            labels = context_encoder_config(
                labels, hidden_size=self.hidden_size, dropout=self.dropout, default_layers=2
            )
            object.__setattr__(self, "labels_encoder_config", labels)
        if self.right_context_width is None:
            object.__setattr__(self, "right_context_width", self.max_width)
        super().__post_init__()
        refusals = {
            "span_mode": (self.span_mode == "token_level", "a streaming model is a span model"),
            "relations_layer": (self.relations_layer is not None, "streaming relation extraction is not implemented"),
            "precomputed_prompts_mode": (
                bool(self.precomputed_prompts_mode),
                "gliner's compress_prompt_embeddings fails on streaming models, so no such checkpoint comes from it",
            ),
            "labels_encoder": (self.labels_encoder is not None, "a streaming model reads its labels from the prompt"),
        }
        for key, (refused, why) in refusals.items():
            if refused:
                raise NotImplementedError(f"unsupported streaming GLiNER config {key}={getattr(self, key)!r}: {why}")
        if self.max_cache_length is not None and self.max_cache_length < 1:
            raise ValueError(f"streaming GLiNER config max_cache_length={self.max_cache_length!r}: must be positive")
        if self.right_context_width < 0:
            raise ValueError(
                f"streaming GLiNER config right_context_width={self.right_context_width!r}: must be non-negative"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StreamingSpanConfig:
        """Build from gliner's streaming `gliner_config.json` dict (its decoder config embedded as `decoder_config`,
        or, in older files, `labels_decoder_config`)."""
        if data.get("model_type") != STREAMING_MODEL_TYPE:
            raise ValueError(f"model_type={data.get('model_type')!r} is not {STREAMING_MODEL_TYPE!r}")
        decoder = data.get("decoder_config") or data.get("labels_decoder_config")
        if not decoder:
            raise ValueError("streaming gliner_config.json has no decoder_config (the causal backbone's config)")
        fields = {f.name for f in dataclasses.fields(cls)} - {"extra", "encoder_config"} - set(RELEX_ONLY_FIELDS)
        values = {k: v for k, v in data.items() if k in fields}
        extra = {k: v for k, v in data.items() if k not in fields and k not in _EMBEDDED}
        return cls(**values, encoder_config=decoder_config_from_hf(decoder), extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """gliner's streaming `gliner_config.json` dict."""
        out = super().to_dict()
        out["decoder_config"] = out.pop("encoder_config")
        return out | {"model_type": STREAMING_MODEL_TYPE, "encoder_config": None}

    @property
    def prompt_token(self) -> str:
        return self.label_token

    @property
    def is_streaming(self) -> bool:
        return True

    @property
    def context_limit(self) -> int:
        """The most decoder tokens a session may hold: `max_cache_length`, at most the decoder's positions."""
        limit = self.encoder_config.max_tokens
        return limit if self.max_cache_length is None else min(limit, self.max_cache_length)
