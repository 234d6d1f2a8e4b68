"""The worker of the inference benchmark's `--corpus` runs: one configuration in its own interpreter, run by path
(`python -c RUN file spec`) so that it also measures an earlier gliner-jax source tree put first on PYTHONPATH; it
imports only what such a tree has (no `gliner_jax.bench`)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

CORPUS_LABELS = ["person", "location", "organization", "product", "event"]


def corpus_texts(path: Path) -> list[str]:
    """Texts of a CoNLL file (tokens joined by spaces) or of a JSONL file of `tokenized_text` records."""
    from gliner_jax.data_formats import read_conll, read_examples

    examples = read_conll(path) if path.suffix in (".txt", ".conll", ".bio") else read_examples(path)[0]
    return [" ".join(example["tokenized_text"]) for example in examples]


def corpus_worker(spec: dict) -> dict:
    """One configuration, in its own interpreter: texts/s (best of `repeats` after a warm-up run), host ms/text with
    the forward pass replayed (optional), and the entities."""
    import numpy as np

    import gliner_jax.model as model_module
    from gliner_jax import GLiNER

    texts = corpus_texts(Path(spec["data"]))[: spec["texts"]]
    model = GLiNER.from_pretrained(spec["model"])
    if hasattr(model, "pipelined"):  # earlier versions run batches one after the other, unpacked
        model.pipelined, model.pack_tokens = spec["pipelined"], spec["pack_tokens"]

    def run() -> list:
        return model.inference(texts, CORPUS_LABELS, threshold=spec["threshold"], batch_size=spec["batch_size"])

    def best(repeats: int, prepare=lambda: None) -> float:
        times = []
        for _ in range(repeats):
            prepare()
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return min(times)

    forward, tokens = model_module._forward, np.zeros(2, np.int64)  # real tokens, token slots of the encoder rows
    if spec["pipelined"] is not None:  # this version: count them in the warm-up run
        from gliner_jax.text.wire import from_wire

        def counting(graphdef, state, transfer, sizes, probabilities):
            mask = from_wire(np.asarray(transfer), sizes)["attention_mask"]
            tokens[:] += (np.count_nonzero(mask), mask.size)
            return forward(graphdef, state, transfer, sizes, probabilities)

        model_module._forward = counting
    entities = run()  # warm-up: compilation
    model_module._forward = forward
    result = {"texts_per_s": len(texts) / best(spec["repeats"]), "devices": len(__import__("jax").devices())}
    result["padding"] = 1 - tokens[0] / tokens[1] if tokens[1] else None
    if spec["host"]:
        recorded = []

        def recording(*args):
            out = forward(*args)
            recorded.append(np.asarray(out))
            return out

        def replaying() -> None:
            outputs = iter(recorded)
            model_module._forward = lambda *args: next(outputs)

        model_module._forward = recording
        run()
        result["host_ms_per_text"] = best(spec["repeats"], replaying) / len(texts) * 1e3
        model_module._forward = forward
    result["entities"] = [[(e["start"], e["end"], e["label"], e["score"]) for e in row] for row in entities]
    return result


if __name__ == "__main__":
    print(json.dumps(corpus_worker(json.loads(sys.argv[1]))))
