"""`gliner-jax encode` on a local encoder directory of each family with its own tokenizer."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from gliner_jax.cli import main
from gliner_jax.modeling.encoders import ENCODERS
from tests.utils.encoders import TINY_HF


@pytest.mark.parametrize("model_type", sorted(ENCODERS))
def test_encode_matches_torch(family_backbone, capsys, model_type):
    directory = family_backbone(model_type)  # TINY_HF sizes, the session's backbone of that family
    tokenizer = AutoTokenizer.from_pretrained(directory)
    texts = ["Marie Curie won the Nobel Prize.", "Zürich, 2021: Apple Inc. and the World Health Organization met."]
    assert main(["encode", "--model", str(directory), "--compare-torch", *texts]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in records] == texts
    assert [r["tokens"] for r in records] == [len(tokenizer(t)["input_ids"]) for t in texts]
    assert all(r["max_rel_diff_vs_torch"] <= 1e-5 for r in records)
    assert all(r["hidden_size"] == TINY_HF[model_type]["hidden_size"] for r in records)
