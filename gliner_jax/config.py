"""`gliner_config.json` as a dataclass; the backbone's own config (`encoder_config`), and a bi-encoder's label encoder
config (`labels_encoder_config`), are their encoder family's dataclass (`gliner_jax.modeling.encoders`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from gliner_jax.modeling.context_encoders import ContextEncoderConfig, context_encoder_config
from gliner_jax.modeling.decoders import decoder_config_from_hf
from gliner_jax.modeling.encoders import encoder_config_from_hf
from gliner_jax.modeling.encoders.config_checks import check_field_types
from gliner_jax.modeling.encoders.deberta import DebertaConfig
from gliner_jax.modeling.relations import ATTENTION_HEADS
from gliner_jax.modeling.span_modes import BATCH_DEPENDENT_MODES
from gliner_jax.modeling.span_modes import SPAN_MODES as SPAN_REPRESENTATIONS
from gliner_jax.modeling.triples import PARAMETER_FREE, TRIPLES_LAYERS, TRIPLES_WIDTH
from gliner_jax.modeling.word_pooling import SUBTOKEN_POOLING

SPAN_MODES = (*SPAN_REPRESENTATIONS, "token_level")  # every span_mode gliner 0.2.29 accepts
# Every words_splitter_type gliner 0.2.29 accepts (its WordsSplitter); `text/splitters.py` implements each.
WORDS_SPLITTER_TYPES = (
    "whitespace",
    "spacy",
    "mecab",
    "jieba",
    "hanlp",
    "janome",
    "camel",
    "hindi",
    "stanza",
    "universal",
)


# Parts of gliner's label-generating decoder models (`labels_decoder`) not implemented here: the field, and why.
DECODER_REFUSED = {
    "decoder_mode": "decoder_mode='prompt' is not implemented (gliner 0.2.29 fails in its own inference and training "
    "with it: its decoder inputs are three-dimensional)",
}
DECODER_MODES = (None, "span", "prompt")  # gliner 0.2.29's decoder_mode values
STREAMING_MODEL_TYPE = "gliner_streaming_span"
# gliner 0.2.29's `RelationsRepLayer` modes (the adjacency of the selected entities), and "none": no adjacency, every
# ordered pair of selected entities is scored.
RELATIONS_LAYERS = ("dot", "mlp", "attention", "attn", "bilinear", "gcn", "gat", "none")
# The relation model's fields that gliner writes only for relation models (its other configs have relations_layer
# alone): kept as extras elsewhere, so that a config is written back as it was read.
RELEX_ONLY_FIELDS = (
    "triples_layer",
    "embed_rel_token",
    "rel_token_index",
    "rel_token",
    "adjacency_loss_coef",
    "relation_loss_coef",
    "rel_id_to_classes",
)
# The decoder model's fields (gliner's UniEncoderSpanDecoderConfig), written only for decoder models (kept as extras
# elsewhere, so that a config is written back as it was read).
DECODER_ONLY_FIELDS = (
    "labels_decoder",
    "decoder_mode",
    "full_decoder_context",
    "blank_entity_prob",
    "labels_decoder_config",
    "decoder_loss_coef",
)
TRIPLES_REFUSED = {  # triples_layer modes gliner 0.2.29 accepts that are not implemented here
    "ConvE": "gliner 0.2.29 cannot build it either (its ConvE needs emb_dim1, which no config field gives)",
}


def builds_labels_encoder(data: Mapping[str, Any]) -> bool:
    """Whether gliner builds a bi-encoder from a gliner_config.json dict (its `_get_gliner_class`): `labels_encoder`
    set, and neither `relations_layer` nor `labels_decoder`, which win over it (their models ignore labels_encoder:
    no label encoder, no `labels_encoder_config` needed)."""
    ignored = ("relations_layer", "labels_decoder")
    return data.get("labels_encoder") is not None and all(data.get(key) is None for key in ignored)


def builds_labels_decoder(data: Mapping[str, Any]) -> bool:
    """Whether gliner builds a label-generating decoder model from a gliner_config.json dict (its
    `_get_gliner_class`): `labels_decoder` set and no `relations_layer`, which wins over it (the relation model it
    builds has no decoder: no decoder weights, tokenizer or `labels_decoder_config`)."""
    return data.get("labels_decoder") is not None and data.get("relations_layer") is None


def refuse_other_architectures(data: Mapping[str, Any]) -> None:
    """Raise NotImplementedError naming the field when a gliner_config.json dict selects an architecture not
    implemented here; checked before anything else of a model is read."""
    if data.get("model_type") == STREAMING_MODEL_TYPE:
        raise ValueError(
            f"GLiNER config model_type={STREAMING_MODEL_TYPE!r} is a streaming span model: read it with "
            "gliner_jax.modeling.streaming.StreamingSpanConfig (GLiNER.from_pretrained does)"
        )
    if data.get("labels_decoder") is None:
        return
    refused = {"decoder_mode": data.get("decoder_mode") == "prompt"}
    for key, why in DECODER_REFUSED.items():
        if refused[key]:
            raise NotImplementedError(f"unsupported GLiNER config {key}={data[key]!r}: {why}")


@dataclasses.dataclass(frozen=True)
class GLiNERConfig:
    """`gliner_config.json`: every field the `gliner` library writes, with its defaults.

    The backbone's configuration is embedded as `encoder_config`. A bi-encoder (gliner's `BiEncoderSpanGLiNER` /
    `BiEncoderTokenGLiNER`) names its label encoder in `labels_encoder` and embeds that encoder's configuration as
    `labels_encoder_config`; the uni-encoder has neither. Keys we do not model (old training settings, fields of
    other gliner architectures, `transformers_version`, ...) are kept in `extra` and written back unchanged.
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
    id_to_classes: Any = dataclasses.field(default=None, compare=False)  # precomputed_prompts_mode's labels
    encoder_config: Any = dataclasses.field(default_factory=DebertaConfig)  # an encoder family's config
    relations_layer: str | None = None  # relation extraction (gliner's UniEncoderSpanRelexGLiNER): RELATIONS_LAYERS
    triples_layer: str | None = None
    embed_rel_token: bool = True
    rel_token_index: int = -1
    rel_token: str = "<<REL>>"
    adjacency_loss_coef: float = 1.0
    relation_loss_coef: float = 1.0
    # precomputed_prompts_mode's relation labels (compress_prompt_embeddings with rel_labels)
    rel_id_to_classes: Any = dataclasses.field(default=None, compare=False)
    labels_encoder: str | None = None  # bi-encoder: the label encoder's name or path, as gliner records it
    labels_encoder_config: Any = None  # bi-encoder: the label encoder's config (an encoder family's)
    # gliner's context encoder before the span representation: a `modeling.context_encoders` config (a dict is
    # completed with gliner's defaults), or None (identity)
    span_encoder_config: Any = None
    # gliner's label-generating decoder models (UniEncoderSpanDecoderGLiNER; UniEncoderTokenDecoderGLiNER with
    # span_mode "token_level"): the causal LM's name or path as gliner records it, its config (a `modeling.decoders`
    # config), decoder_mode (None or "span"), its training options
    labels_decoder: str | None = None
    decoder_mode: str | None = None
    full_decoder_context: bool = True
    blank_entity_prob: float = 0.1
    labels_decoder_config: Any = None
    decoder_loss_coef: float = 0.5
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        check_field_types(self.__dict__, GLiNERConfig, "GLiNER config")
        if self.is_relex and self.labels_decoder is not None:  # gliner's relation model ignores the decoder fields
            defaults = {key: GLiNERConfig.__dataclass_fields__[key].default for key in DECODER_ONLY_FIELDS}
            ignored = {key: getattr(self, key) for key, default in defaults.items() if getattr(self, key) != default}
            object.__setattr__(self, "extra", {**self.extra, **ignored})
            for key, default in defaults.items():
                object.__setattr__(self, key, default)
        if self.span_encoder_config is not None and not isinstance(self.span_encoder_config, ContextEncoderConfig):
            span_encoder = context_encoder_config(
                self.span_encoder_config, hidden_size=self.hidden_size, dropout=self.dropout
            )
            object.__setattr__(self, "span_encoder_config", span_encoder)
        checked = (
            ("span_mode", SPAN_MODES),
            ("subtoken_pooling", SUBTOKEN_POOLING),
            ("words_splitter_type", WORDS_SPLITTER_TYPES),
        )
        for key, known in checked:
            if getattr(self, key) not in known:  # gliner refuses these too
                raise ValueError(f"unknown GLiNER config {key}={getattr(self, key)!r}; known: {known}")
        refusals = {
            "num_rnn_layers": (self.num_rnn_layers < 0, "must be >= 0"),
        }
        refuse_other_architectures(self.extra)
        for key, (refused, why) in refusals.items():
            if refused:
                raise NotImplementedError(f"unsupported GLiNER config {key}={getattr(self, key)!r}: {why}")
        if self.is_relex:
            self._check_relex()
        if self.precomputed_prompts_mode:
            self._check_precomputed()
        if self.is_decoder:
            self._check_decoder()
        if self.is_bi_encoder and self.labels_encoder_config is None:
            raise ValueError(f"bi-encoder config (labels_encoder={self.labels_encoder!r}) lacks labels_encoder_config")
        heads = self.encoder_config.num_attention_heads
        if self.post_fusion_schema and self.is_bi_encoder and self.hidden_size % heads:
            raise ValueError(  # gliner's cross fuser splits hidden_size into the text encoder's heads and fails
                f"GLiNER config post_fusion_schema={self.post_fusion_schema!r} needs hidden_size divisible by the "
                f"encoder's {heads} attention heads, got {self.hidden_size}"
            )
        if self.num_rnn_layers and self.hidden_size % 2:
            raise ValueError(f"hidden_size must be even for the BiLSTM, got {self.hidden_size}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GLiNERConfig:
        """Build from a complete `gliner_config.json` dict, `encoder_config` (and a bi-encoder's
        `labels_encoder_config`) embedded: `gliner_jax.hub.read_layout` completes the legacy layouts that lack them."""
        refuse_other_architectures(data)
        embedded = {"encoder_config": ("model_name", "backbone")}
        if builds_labels_encoder(data):
            embedded["labels_encoder_config"] = ("labels_encoder", "label encoder")
        if builds_labels_decoder(data):
            embedded["labels_decoder_config"] = ("labels_decoder", "label decoder")
        for key, (name, what) in embedded.items():
            if not data.get(key):
                raise ValueError(
                    f"gliner_config.json has no {key}: read the directory with gliner_jax.hub.read_layout (or "
                    f"GLiNER.from_pretrained), which takes the {what}'s config from {name} as gliner does"
                )
        # a labels_encoder_config beside an ignored labels_encoder stays an extra, written back as it was read
        fields = {f.name for f in dataclasses.fields(cls)} - {"extra", "labels_encoder_config"} - embedded.keys()
        if data.get("relations_layer") is None:
            fields -= set(RELEX_ONLY_FIELDS)
        if not builds_labels_decoder(data):
            fields -= set(DECODER_ONLY_FIELDS)
        values = {k: v for k, v in data.items() if k in fields}
        extra = {k: v for k, v in data.items() if k not in fields and k not in embedded}
        configs = {
            key: (decoder_config_from_hf if key == "labels_decoder_config" else encoder_config_from_hf)(data[key])
            for key in embedded
        }
        return cls(**values, **configs, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The `gliner_config.json` dict: our fields, the preserved extras, the full encoder configs."""
        out = dict(self.extra)
        skipped = {"extra", "labels_encoder_config"} | (set() if self.is_relex else set(RELEX_ONLY_FIELDS))
        skipped |= set() if self.is_decoder else set(DECODER_ONLY_FIELDS)
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skipped})
        out["encoder_config"] = self.encoder_config.to_hf_dict()
        if self.span_encoder_config is not None:
            out["span_encoder_config"] = self.span_encoder_config.to_hf_dict()
        if self.labels_encoder_config is not None:
            out["labels_encoder_config"] = self.labels_encoder_config.to_hf_dict()
        if self.labels_decoder_config is not None:
            out["labels_decoder_config"] = self.labels_decoder_config.to_hf_dict()
        return out

    def _check_decoder(self) -> None:
        refuse_other_architectures(
            {"labels_decoder": self.labels_decoder, "decoder_mode": self.decoder_mode, "span_mode": self.span_mode}
        )
        if self.decoder_mode not in DECODER_MODES:
            raise ValueError(f"unknown GLiNER config decoder_mode={self.decoder_mode!r}; known: {DECODER_MODES}")
        if self.labels_decoder_config is None:
            raise ValueError(f"decoder config (labels_decoder={self.labels_decoder!r}) lacks labels_decoder_config")
        if isinstance(self.labels_decoder_config, Mapping):
            object.__setattr__(self, "labels_decoder_config", decoder_config_from_hf(self.labels_decoder_config))

    def _check_relex(self) -> None:
        if self.relations_layer not in RELATIONS_LAYERS:  # gliner: "Unknown relation mode"
            raise ValueError(
                f"unknown GLiNER config relations_layer={self.relations_layer!r}; known: {RELATIONS_LAYERS}"
            )
        if self.relations_layer in ("attention", "attn", "gat") and self.hidden_size % ATTENTION_HEADS:
            raise ValueError(  # gliner's nn.MultiheadAttention refuses it too
                f"GLiNER config relations_layer={self.relations_layer!r} needs hidden_size divisible by its "
                f"{ATTENTION_HEADS} attention heads, got {self.hidden_size}"
            )
        if self.triples_layer is not None:
            self._check_triples()

    def _check_precomputed(self) -> None:
        mode = self.precomputed_prompts_mode
        if not isinstance(self.id_to_classes, Mapping) or not self.id_to_classes:
            raise ValueError(
                f"GLiNER config precomputed_prompts_mode={mode!r} needs the stored labels in id_to_classes "
                f"(compress_prompt_embeddings writes them), got id_to_classes={self.id_to_classes!r}"
            )
        stored = {"id_to_classes": self.id_to_classes, "rel_id_to_classes": self.rel_id_to_classes or {}}
        if not isinstance(stored["rel_id_to_classes"], Mapping):
            raise ValueError(f"GLiNER config rel_id_to_classes must be a mapping, got {self.rel_id_to_classes!r}")
        for key, labels in stored.items():
            if {str(i) for i in labels} != {str(i) for i in range(1, len(labels) + 1)}:
                raise ValueError(f"GLiNER config {key} keys must be 1..N, got {list(labels)}")

    @property
    def precomputed_labels(self) -> list[str] | None:
        """The labels whose prompt embeddings the model stores (`precomputed_prompts_mode`), in row order; None
        otherwise. A bi-encoder stores none: its label encoder reads these labels (gliner's collator gives every text
        the config's labels in this mode)."""
        if not self.precomputed_prompts_mode:
            return None
        return [self.id_to_classes[key] for key in sorted(self.id_to_classes, key=int)]

    @property
    def precomputed_relations(self) -> list[str] | None:
        """A relation model's relation labels whose prompt embeddings it stores (`precomputed_prompts_mode` with
        `rel_id_to_classes`), in row order; None otherwise (gliner then reads relation prompts from the text, which
        holds none: no relations)."""
        if not self.precomputed_prompts_mode or not self.is_relex or not self.rel_id_to_classes:
            return None
        return [self.rel_id_to_classes[key] for key in sorted(self.rel_id_to_classes, key=int)]

    def _check_triples(self) -> None:
        mode, hidden = self.triples_layer, self.hidden_size
        if mode in TRIPLES_REFUSED:
            raise NotImplementedError(f"unsupported GLiNER config triples_layer={mode!r}: {TRIPLES_REFUSED[mode]}")
        if mode not in TRIPLES_LAYERS:  # gliner: "Unknown interaction mode"
            raise ValueError(f"unknown GLiNER config triples_layer={mode!r}; known: {tuple(TRIPLES_LAYERS)}")
        # gliner builds the layer 768 wide whatever hidden_size is, and splits vectors into halves or quarters: other
        # widths fail in its forward pass
        multiple = {"QuatE": 4, "SimplE": 2, "ComplEx": 2}.get(mode, 1)
        if (mode not in PARAMETER_FREE and hidden != TRIPLES_WIDTH) or hidden % multiple:
            need = f"a multiple of {multiple}" if mode in PARAMETER_FREE else str(TRIPLES_WIDTH)
            raise ValueError(
                f"GLiNER config triples_layer={mode!r} needs hidden_size {need}, got {hidden} (gliner builds it "
                f"{TRIPLES_WIDTH} wide and fails on other widths)"
            )

    @property
    def prompt_token(self) -> str:
        """The token whose states are the label prompts (at `class_token_index`)."""
        return self.ent_token

    @property
    def is_streaming(self) -> bool:
        """Whether the backbone is a causal decoder (gliner's streaming span model, `modeling.streaming`)."""
        return False

    @property
    def is_decoder(self) -> bool:
        """Whether this is a label-generating decoder model (gliner selects one by `labels_decoder`)."""
        return self.labels_decoder is not None

    @property
    def generates_labels(self) -> bool:
        """Whether inference writes generated labels (`decoder_mode` "span"; with None gliner's decoder output is
        never read)."""
        return self.is_decoder and self.decoder_mode == "span"

    @property
    def decoder_context(self) -> bool:
        """Whether a span's decoder prefix holds its words' decoder tokens after its representation
        (`full_decoder_context` in decoder_mode "span")."""
        return self.generates_labels and self.full_decoder_context

    @property
    def is_relex(self) -> bool:
        """Whether this is a relation extraction model (gliner selects one by `relations_layer` alone)."""
        return self.relations_layer is not None

    @property
    def has_span_encoder(self) -> bool:
        """Whether gliner builds a span context encoder (`span_encoder_config`): span models, a token relation
        model's entity representation and a token model's span representation (`represents_spans`); another token
        model builds none."""
        return self.span_encoder_config is not None and (
            self.span_mode != "token_level" or self.is_relex or self.represents_spans
        )

    @property
    def represents_spans(self) -> bool:
        """Whether a token model scores spans too (`represent_spans`: gliner's token models without relations; its
        span models and token relation models ignore the field, and its token decoder model forces it on)."""
        return (self.represent_spans or self.is_decoder) and self.span_mode == "token_level" and not self.is_relex

    @property
    def spans_depend_on_batch(self) -> bool:
        """Whether a row's logits depend on the other rows of its batch (markerV1 / markerV2 read the batch's
        longest row; gliner's span context encoder reads every word slot of the batch's width, a row's padding too;
        `fuse_layers` averages over the batch's padded length), so that rows must be batched as gliner batches them to
        give gliner's numbers."""
        return self.span_mode in BATCH_DEPENDENT_MODES or self.has_span_encoder or self.fuse_layers

    @property
    def is_bi_encoder(self) -> bool:
        """Whether labels are read by their own encoder (gliner's bi-encoder) rather than from a prompt: gliner's
        class choice (`builds_labels_encoder`; a relation or decoder model ignores `labels_encoder`)."""
        return builds_labels_encoder({**self.extra, **vars(self)})

    @property
    def projects_encoder_output(self) -> bool:
        """Whether a Linear maps the encoder width to `hidden_size` (`token_rep_layer.projection`)."""
        return self.hidden_size != self.encoder_config.hidden_size

    @property
    def projects_labels_encoder_output(self) -> bool:
        """Whether a Linear maps the label encoder's width to `hidden_size` (`token_rep_layer.labels_projection`)."""
        return self.is_bi_encoder and self.hidden_size != self.labels_encoder_config.hidden_size
