"""gliner's streaming span model (`StreamingSpanGLiNER`: a tiny random GPT-2 backbone with its locally trained
byte-level BPE tokenizer, a projection to hidden_size, a one-layer DeBERTa label encoder, markerV2) against ours:
the gliner-saved directory loads with every key matched, whole-text entities and scores equal gliner's, and our
export is gliner's state dict, which gliner loads and predicts the same with; sessions fed chunk by chunk give
gliner's entities after every chunk (a session's state saved as a pytree and put back continues the same)."""

from __future__ import annotations

import gliner
import jax
import numpy as np
import pytest

from gliner_jax import GLiNER
from gliner_jax.testing.builders import build_label_decoder, build_streaming_reference, quantile_thresholds
from tests.utils.gliner_parity import assert_export_equals_reference, assert_same_outputs

TEXTS = [
    "Barack Obama was born in Honolulu, Hawaii, on August 4, 1961.",
    "Angela Merkel led Germany from 2005 to 2021 as chancellor.",
    "Apple",
    "   ",
]
LABELS = ["person", "city", "organization", "date"]
LABELS_ENCODER = {"model_type": "deberta-v2", "num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 2}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(gliner's streaming model, its directory, ours loaded from it)."""
    tmp = tmp_path_factory.mktemp("streaming")
    backbone = build_label_decoder(tmp / "backbone", dict(n_positions=128, n_embd=24, n_layer=2, n_head=3))
    ref = build_streaming_reference(
        backbone, tmp / "ref", hidden_size=32, max_width=4, labels_encoder_config=LABELS_ENCODER
    )
    return ref, tmp, GLiNER.from_pretrained(tmp / "ref")


def test_whole_text_inference_and_export_match_gliner(models):
    ref, tmp, ours = models
    threshold, nested_threshold = quantile_thresholds(ref, TEXTS, LABELS, (0.9, 0.8))
    for options in (dict(threshold=threshold), dict(threshold=nested_threshold, flat_ner=False, multi_label=True)):
        expected = ref.inference(TEXTS, LABELS, **options)
        assert sum(map(len, expected)) >= 3
        assert_same_outputs(ours.inference(TEXTS, LABELS, **options), expected)

    assert_export_equals_reference(ours, ref, tmp / "export")
    reloaded = gliner.GLiNER.from_pretrained(str(tmp / "export"), local_files_only=True)
    assert type(reloaded).__name__ == "StreamingSpanGLiNER"
    reloaded.eval()
    options = dict(threshold=threshold)
    assert_same_outputs(reloaded.inference(TEXTS, LABELS, **options), ref.inference(TEXTS, LABELS, **options))


# Two sessions fed three chunks: words cut across chunks, a whitespace-only chunk (nothing changes, [] returned).
CHUNKS = [
    ["Barack Obama was born in Honolulu, ", "Angela Merkel led "],
    ["Hawaii, on August 4, 1961 with", "Germany from 2005 to 2021"],
    [" Michelle in Chicago.", "   "],
]


def test_sessions_match_gliner(models):
    ref, _, ours = models
    (threshold,) = quantile_thresholds(ref, [" ".join(texts) for texts in zip(*CHUNKS, strict=True)], LABELS, (0.9,))
    options = dict(threshold=threshold, session_id=["a", "b"])
    found = 0
    for chunk in CHUNKS:
        expected = ref.inference(chunk, LABELS, **options)
        assert_same_outputs(ours.inference(chunk, LABELS, **options), expected)
        found += sum(map(len, expected))
    assert found >= 6 and ours.session_count == 2

    # Labels are fixed per session; recompute rereads the whole text with new ones (descriptions here).
    with pytest.raises(ValueError, match="Labels for session 'a' changed"):
        ours.inference(["More."], LABELS[:2], session_id=["a"])
    described = {"person": "person name", "city": "city"}
    recomputed = dict(threshold=threshold, session_id=["a"], recompute=True)
    expected = ref.inference([" and Paris."], described, **recomputed)
    assert_same_outputs(ours.inference([" and Paris."], described, **recomputed), expected)

    # A session's state is a pytree: saved (to host arrays), the session cleared, put back, it continues as gliner's.
    saved = jax.tree_util.tree_map(np.asarray, ours.sessions.get("b"))
    ours.clear_session(["b"])
    assert ours.session_count == 1
    ours.sessions.put("b", saved)
    options = dict(threshold=threshold, session_id=["b"])
    assert_same_outputs(
        ours.inference([" as chancellor."], LABELS, **options), ref.inference([" as chancellor."], LABELS, **options)
    )
