"""`gliner-jax encode` on a local DeBERTa directory with its own tokenizer."""

from __future__ import annotations

import json

from gliner_jax.cli import main
from gliner_jax.testing.builders import train_tokenizer
from tests.utils.encoders import make_torch_encoder


def test_encode_matches_torch(tmp_path, capsys):
    tokenizer = train_tokenizer(tmp_path)
    make_torch_encoder(vocab_size=len(tokenizer)).save_pretrained(tmp_path)
    texts = ["Marie Curie won the Nobel Prize.", "Zürich, 2021: Apple Inc. and the World Health Organization met."]
    assert main(["encode", "--model", str(tmp_path), "--compare-torch", *texts]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in records] == texts
    assert [r["tokens"] for r in records] == [len(tokenizer(t)["input_ids"]) for t in texts]
    assert all(r["max_rel_diff_vs_torch"] <= 1e-5 for r in records)
    assert all(r["hidden_size"] == 64 for r in records)
