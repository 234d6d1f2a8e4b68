"""Every architecture option and model class of gliner 0.2.29, walked from gliner's own code: each option value that
gliner's layers branch on (span modes, relation and triples layers, context encoders, fusion blocks, decoder modes) and
each option flag builds a small gliner model offline; it loads here (no option refused), its tensors convert both ways
strictly and bit for bit; each gliner model class predicts gliner's entities here. A value gliner adds to one of these
branches, or a class it adds, is a new case: the walk fails until it is handled. The options' numbers (logits,
gradients, training) are checked in their own parity files; this walk checks that nothing is left out."""

from __future__ import annotations

import inspect
import json
import re

import gliner
import gliner.model
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from gliner.config import CONTEXT_ENCODER_MODEL_TYPES
from gliner.modeling.base import UniEncoderSpanDecoderModel
from gliner.modeling.layers import CrossFuser
from gliner.modeling.multitask.relations_layers import RelationsRepLayer
from gliner.modeling.multitask.triples_layers import TriplesScoreLayer
from gliner.modeling.span_rep import SpanRepLayer

from gliner_jax import GLiNER
from gliner_jax.checkpoint_io import (
    _flat_params,
    build_network,
    model_table,
    read_tensors,
    state_from_torch,
    state_to_torch,
)
from gliner_jax.config import GLiNERConfig
from gliner_jax.hub import read_layout
from gliner_jax.modeling.triples import PARAMETER_FREE, TRIPLES_WIDTH
from gliner_jax.testing.builders import (
    build_label_decoder,
    build_reference,
    build_streaming_reference,
    quantile_thresholds,
)
from tests.utils.gliner_parity import assert_same_outputs

TEXTS = ["Marie Curie worked at the University of Paris in 1903.", "Apple was founded by Steve Jobs in Cupertino."]
LABELS = ["person", "organization", "city", "date"]
RELATIONS = ["works at", "founded by"]
LABELS_ENCODER = "<labels encoder>"  # replaced by the tiny label encoder's directory
LABELS_DECODER = "<labels decoder>"  # replaced by the tiny GPT-2's directory


def literals(obj: object, pattern: str) -> list[str]:
    """The string literals that `pattern` (one group) finds in the source of gliner's `obj`, in order of appearance."""
    found = re.findall(pattern, inspect.getsource(obj))
    return list(dict.fromkeys(re.findall(r'"(\w+)"', " ".join(found)) if '"' in " ".join(found) else found))


def option_cases() -> dict[str, dict]:
    """Case name -> gliner config fields, one case per option value gliner branches on and per option flag."""
    cases = {f"span_mode={m}": dict(span_mode=m) for m in literals(SpanRepLayer, r'span_mode == "(\w+)"')}
    relation_modes = [*literals(RelationsRepLayer, r"\bm (?:==|in) ([^:\n]+):"), "none"]  # "none": no adjacency layer
    cases |= {f"relations_layer={m}": dict(relations_layer=m) for m in relation_modes}
    cases["relations_layer=dot, span_mode=token_level"] = dict(relations_layer="dot", span_mode="token_level")
    for mode in literals(TriplesScoreLayer, r'interaction_mode == "(\w+)"'):  # gliner builds them 768 wide
        width = {} if mode in PARAMETER_FREE else dict(hidden_size=TRIPLES_WIDTH)
        cases[f"triples_layer={mode}"] = dict(relations_layer="dot", triples_layer=mode, **width)
    cases["triples_layer=TransH, hidden_size=32"] = dict(relations_layer="dot", triples_layer="TransH")
    cases |= {  # transformers 5.16 cannot build a ModernBERT of fewer than 3 layers
        f"span_encoder_config={m}": dict(span_encoder_config={"model_type": m, "num_hidden_layers": 3})
        for m in CONTEXT_ENCODER_MODEL_TYPES
    }
    blocks = literals(CrossFuser, r'self\.schema\[id\] == "(\w+)"')
    cases |= {f"post_fusion_schema={b}": dict(labels_encoder=LABELS_ENCODER, post_fusion_schema=b) for b in blocks}
    cases |= {
        "labels_encoder, span": dict(labels_encoder=LABELS_ENCODER),
        "labels_encoder, token_level": dict(labels_encoder=LABELS_ENCODER, span_mode="token_level"),
        "labels_encoder with relations_layer (ignored)": dict(labels_encoder=LABELS_ENCODER, relations_layer="dot"),
        "fuse_layers": dict(fuse_layers=True),
        "represent_spans": dict(span_mode="token_level", represent_spans=True),
        "represent_spans, labels_encoder": dict(
            span_mode="token_level", represent_spans=True, labels_encoder=LABELS_ENCODER
        ),
        "num_rnn_layers=0": dict(num_rnn_layers=0),
    }
    for mode in [None, *literals(UniEncoderSpanDecoderModel, r'decoder_mode == "(\w+)"')]:
        cases[f"labels_decoder, decoder_mode={mode}"] = dict(labels_decoder=LABELS_DECODER, decoder_mode=mode)
    cases |= {
        "labels_decoder, token_level": dict(
            labels_decoder=LABELS_DECODER, decoder_mode="span", span_mode="token_level"
        ),
        "labels_encoder with labels_decoder (ignored)": dict(
            labels_decoder=LABELS_DECODER, labels_encoder=LABELS_ENCODER
        ),
        "labels_decoder with relations_layer (ignored)": dict(labels_decoder=LABELS_DECODER, relations_layer="dot"),
    }
    for mode in CONTEXT_ENCODER_MODEL_TYPES:  # the streaming model's label encoder: a context encoder of each kind
        cases[f"streaming, labels_encoder_config={mode}"] = dict(
            streaming=True, labels_encoder_config={"model_type": mode, "num_hidden_layers": 3, "hidden_size": 16}
        )
    cases["streaming, span_encoder_config=rnn"] = dict(
        streaming=True, span_encoder_config={"model_type": "rnn", "num_hidden_layers": 1}
    )
    # gliner builds the cross fuser and never runs it; its causal backbone reads no fuse_layers
    cases["streaming, post_fusion_schema, fuse_layers"] = dict(
        streaming=True, post_fusion_schema="l2l-l2t-t2t-t2l", fuse_layers=True
    )
    return cases


CASES = option_cases()
# What gliner 0.2.29 builds but cannot run (its first relation forward pass fails, so no trained checkpoint of it
# exists): refused here at load, naming the field.
GLINER_FAILS = {  # case: (the built case whose config it changes, the field our refusal names)
    "triples_layer=ConvE": ("relations_layer=dot", "triples_layer"),  # ConvE needs emb_dim1, which no field gives
    # a mode with parameters on a model not 768 wide
    "triples_layer=TransH, hidden_size=32": ("relations_layer=dot", "hidden_size"),
    # gliner's inference and training fail on its three-dimensional decoder inputs
    "labels_decoder, decoder_mode=prompt": ("labels_decoder, decoder_mode=span", "decoder_mode"),
}
# Walked by a test of its own: TuckER's 768^3 core takes gliner most of a minute to build
# (tests/parity/test_relex_training_vs_gliner.py::test_tucker_matches_gliner builds it once for everything).
ELSEWHERE = {"triples_layer=TuckER"}
GLINER_CLASSES = sorted(
    name
    for name, cls in vars(gliner.model).items()
    if isinstance(cls, type)
    and issubclass(cls, gliner.model.BaseGLiNER)
    and not inspect.isabstract(cls)
    and cls.__module__ == gliner.model.__name__
    and name.endswith("GLiNER")
    and not name.startswith("Base")
)


@pytest.fixture(scope="module")
def labels_decoder(tmp_path_factory):
    """A tiny GPT-2 with its tokenizer (an untied head: a random tied one repeats its last input token)."""
    config = dict(n_positions=128, n_embd=24, n_layer=2, n_head=3, tie_word_embeddings=False)
    return build_label_decoder(tmp_path_factory.mktemp("labels_decoder"), config)


@pytest.fixture(scope="module")
def reference(gliner_backbone, labels_backbone, labels_decoder, tmp_path_factory):
    """Factory: case name -> (the gliner model of that case, its saved directory), built once."""
    built = {}

    def get(case: str):
        if case not in built:
            paths = {LABELS_ENCODER: labels_backbone, LABELS_DECODER: labels_decoder}
            fields = {k: str(paths[v]) if isinstance(v, str) and v in paths else v for k, v in CASES[case].items()}
            directory = tmp_path_factory.mktemp(re.sub(r"\W+", "-", case))
            fields = {"hidden_size": 32, "max_width": 3, **fields}
            if fields.pop("streaming", False):  # a causal backbone: the tiny GPT-2
                built[case] = build_streaming_reference(labels_decoder, directory, **fields), directory
            else:
                built[case] = build_reference(gliner_backbone, directory, **fields), directory
        return built[case]

    return get


def gliner_fails(case: str, reference) -> bool:
    """Whether gliner fails to build `case`'s model or to run it on TEXTS (with relations for a relation model),
    while our config refuses its gliner_config.json (a built case's, with the case's fields) naming the field."""
    base, field = GLINER_FAILS[case]
    _, directory = reference(base)
    changed = {k: v for k, v in CASES[case].items() if v not in (LABELS_ENCODER, LABELS_DECODER)}
    config = {**json.loads((directory / "gliner_config.json").read_text()), **changed}
    with pytest.raises((ValueError, NotImplementedError), match=field):
        GLiNERConfig.from_dict(config)
    relations = dict(relations=RELATIONS, relation_threshold=0.5) if config.get("relations_layer") else {}
    try:
        config = gliner.GLiNERConfig(**{k: v for k, v in config.items() if k != "model_type"})
        model = gliner.GLiNER.from_config(config, backbone_from_pretrained=True, local_files_only=True)
        model.inference(TEXTS, LABELS, threshold=0.5, **relations)
    except Exception:  # gliner's failure, whatever it is
        return True
    return False


@pytest.mark.parametrize("case", [case for case in CASES if case not in ELSEWHERE])
def test_every_option_loads_and_converts_both_ways(case, reference):
    if case in GLINER_FAILS:
        assert gliner_fails(case, reference)
        return
    ref, directory = reference(case)
    config = read_layout(directory).config
    model = nnx.eval_shape(
        lambda: build_network(config, dtype=jnp.float32, rngs=nnx.Rngs(0))
    )  # shapes only: the tensors come next
    for variable in _flat_params(model).values():
        variable.set_value(jnp.zeros(variable.shape, variable.dtype))
    table = model_table(config)
    state_from_torch(model, read_tensors(directory), table)  # strict: names every missing or unexpected tensor
    expected = ref.model.state_dict()
    exported = state_to_torch(model, table)
    assert exported.keys() == expected.keys()
    for key, tensor in expected.items():
        np.testing.assert_array_equal(exported[key], tensor.numpy(), err_msg=key)


def class_case(name: str, reference) -> str:
    """The first option case whose gliner model is of class `name`."""
    for case in CASES:
        if case not in set(GLINER_FAILS) | ELSEWHERE and type(reference(case)[0]).__name__ == name:
            return case
    raise AssertionError(f"no case builds gliner's {name}")


@pytest.mark.parametrize("name", GLINER_CLASSES)
def test_every_model_class_predicts_gliners_entities(name, reference):
    case = class_case(name, reference)
    ref, directory = reference(case)
    threshold = quantile_thresholds(ref, TEXTS, LABELS, (0.9,))[0]
    options = dict(threshold=threshold)
    if "Relex" in name:  # entities and relations; the relations' numbers are checked in test_relex_vs_gliner.py
        options |= dict(relations=RELATIONS, relation_threshold=0.5)
    with torch.no_grad():
        expected = ref.inference(TEXTS, LABELS, **options)
    ours = GLiNER.from_pretrained(directory).inference(TEXTS, LABELS, **options)
    if "Relex" in name:
        (ours, _), (expected, _) = ours, expected
    assert sum(map(len, expected)) > 0, "no entity above the threshold: the comparison would be empty"
    assert_same_outputs(ours, expected)
