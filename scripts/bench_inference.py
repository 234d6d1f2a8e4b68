"""End-to-end inference: gliner-jax against the `gliner` PyTorch package, side by side, in one run.

An offline model with deberta-v3-small shapes (random weights, locally trained tokenizer) is built once
for each span mode; 64 English texts of 60-120 words and 5 labels go through both libraries with batch 8.
Each engine runs in a fresh subprocess so that its peak memory (max RSS) is its own. Also reported: the
share of the span model's forward time spent in the span head, and the decoder alone on 10,000+
candidate spans against the reference's decoder (identical output required).

On a GPU (`--device gpu`, the default when torch sees one) both libraries run there in float32; set
JAX_DEFAULT_MATMUL_PRECISION=highest for float32 matrix products like torch's (XLA otherwise uses TF32), which
the 1e-5 agreement of scores needs. `--size toy` is a 2-layer encoder for a quick check; `--json PATH` also
writes the results.

    python scripts/bench_inference.py [--texts 64] [--batch-size 8] [--modes markerV0,token_level]
                                      [--size small|toy] [--device cpu|gpu] [--json PATH]
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from gliner_jax.config import DebertaConfig
from gliner_jax.testing.builders import benchmark_texts, build_backbone, build_reference, quantile_thresholds

LABELS = ["person", "organization", "location", "date", "award"]
# deberta-v3-small: its sizes on DebertaConfig's defaults (the deberta-v3 layout); vocab comes from the tokenizer.
V3_SMALL = DebertaConfig(
    hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072
).to_hf_dict()
TOY = DebertaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128).to_hf_dict()


def run_engine(
    engine: str,
    directory: str,
    texts: list[str],
    threshold: float,
    batch_size: int,
    device: str,
    queue: multiprocessing.Queue,
) -> None:
    """Time one engine (after a warm-up pass over the same texts) and report texts/s, peak RSS, entities."""
    if engine == "torch":
        import gliner

        model = gliner.GLiNER.from_pretrained(directory, local_files_only=True)
        if device == "gpu":
            model = model.to("cuda")

        def predict():
            return model.inference(texts, LABELS, threshold=threshold, batch_size=batch_size)
    else:
        import jax

        if device == "cpu":
            jax.config.update("jax_platforms", "cpu")
        from gliner_jax import GLiNER

        model = GLiNER.from_pretrained(directory)

        def predict():
            return model.inference(texts, LABELS, threshold=threshold, batch_size=batch_size)

    predict()  # warm-up (jit compilation for jax; allocator warm-up for torch)
    start = time.perf_counter()
    entities = predict()
    seconds = time.perf_counter() - start
    simplified = [[(e["start"], e["end"], e["label"], float(e["score"])) for e in row] for row in entities]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"texts_per_s": len(texts) / seconds, "peak_mb": peak_mb, "entities": simplified})


def agree(ref: list[list[tuple]], ours: list[list[tuple]]) -> bool:
    """Same entities (start, end, label) in the same order, scores within 1e-5."""
    return all(
        [e[:3] for e in r] == [e[:3] for e in o] and all(abs(a[3] - b[3]) <= 1e-5 for a, b in zip(r, o, strict=True))
        for r, o in zip(ref, ours, strict=True)
    )


def span_head_share(directory: str, texts: list[str], batch_size: int, repeats: int = 10) -> float:
    """Time of the span head (span scores against the labels, from the encoder's and BiLSTM's outputs)
    over the time of the whole jitted forward pass, each the best of `repeats`, on one batch."""
    import jax
    from flax import nnx

    from gliner_jax import GLiNER
    from gliner_jax.model import model_inputs

    model = GLiNER.from_pretrained(directory)
    batch = model.processor.prepare(texts[:batch_size], LABELS, batch_size=batch_size)
    inputs = model_inputs(batch)
    graphdef, state = nnx.split(model.model)
    num_words, num_labels = inputs["words_valid"].shape[1], inputs["labels_valid"].shape[1]

    def full(state):
        return nnx.merge(graphdef, state)(**inputs)

    def representations(state):
        net = nnx.merge(graphdef, state)
        ids, mask, words_mask = inputs["input_ids"], inputs["attention_mask"], inputs["words_mask"]
        prompts, words = net.representations(ids, mask, words_mask, 1, num_labels, num_words)  # one slot per row
        return net.rnn(words[:, 0], inputs["words_valid"]), prompts[:, 0]

    def head(state, words, prompts):
        net = nnx.merge(graphdef, state)
        span_idx = inputs["span_idx"] * inputs["span_mask"][..., None]
        return net.span_rep(words, span_idx, net.prompt_rep(prompts))

    def best(fn, *args) -> float:
        compiled = jax.jit(fn)
        jax.block_until_ready(compiled(*args))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(compiled(*args))
            times.append(time.perf_counter() - start)
        return min(times)

    words, prompts = jax.jit(representations)(state)
    return best(head, state, words, prompts) / best(full, state)


def decoder_comparison(candidates_target: int = 12000, seed: int = 0) -> dict:
    """Our span decoder vs gliner's SpanDecoder on one row with >= candidates_target spans above threshold."""
    import torch
    from gliner.decoding.decoder import SpanDecoder

    from gliner_jax.decoding import decode_span_probs

    rng = np.random.default_rng(seed)
    num_words, width, num_labels = 400, 12, 5
    probs = rng.uniform(0.0, 1.0, (num_words, width, num_labels)).astype(np.float32)
    threshold = 1.0 - candidates_target / probs.size
    valid = np.arange(num_words)[:, None] + np.arange(width)[None, :] < num_words
    candidates = int(((probs > threshold) & valid[..., None]).sum())
    logits = torch.from_numpy(np.log(probs) - np.log1p(-probs))[None]
    tokens = [[f"w{i}" for i in range(num_words)]]
    id_to_classes = {i + 1: label for i, label in enumerate(LABELS)}

    class Config:
        max_width = width

    decoder = SpanDecoder(Config())
    results = {"candidates": candidates}

    def best_of(repeats: int, fn):
        """(result, best wall time) over `repeats` calls."""
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        return out, min(times)

    for flat_ner in (True, False):
        options = dict(threshold=threshold, flat_ner=flat_ner)
        ref, ref_s = best_of(5, functools.partial(decoder.decode, tokens, id_to_classes, logits, **options))
        ref = ref[0]
        ours, ours_s = best_of(5, functools.partial(decode_span_probs, probs, num_words, num_labels, **options))
        same = [(s.start, s.end, s.entity_type) for s in ref] == [(s, e, LABELS[c]) for s, e, c, _ in ours]
        mode = "flat" if flat_ner else "nested"
        results[mode] = {"reference_s": ref_s, "ours_s": ours_s, "speedup": ref_s / ours_s, "identical": same}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--modes", default="markerV0,token_level")
    parser.add_argument("--size", choices=("small", "toy"), default="small", help="deberta-v3-small or a toy encoder")
    parser.add_argument("--device", choices=("cpu", "gpu"), default=None, help="default: gpu when torch sees one")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    if args.device is None:
        import torch

        args.device = "gpu" if torch.cuda.is_available() else "cpu"

    texts = benchmark_texts(args.texts)
    context = multiprocessing.get_context("spawn")
    rows = []
    with tempfile.TemporaryDirectory() as root:
        encoder = V3_SMALL if args.size == "small" else TOY
        backbone = build_backbone(Path(root) / "backbone", encoder, tokenizer=dict(vocab_size=1000, model_type="bpe"))
        for mode in args.modes.split(","):
            directory = Path(root) / mode
            # gliner's own init: perturbed or scaled heads of this width saturate every probability.
            reference = build_reference(
                backbone, directory, span_mode=mode, hidden_size=768, max_width=12, logit_scale=1.0, noise=0.0
            )
            # Random weights: pick the threshold that keeps the top 1% of span scores, so entities are found.
            threshold = quantile_thresholds(reference, texts[: args.batch_size], LABELS, (0.99,))[0]
            del reference
            result = {}
            for engine in ("torch", "jax"):
                queue = context.Queue()
                process = context.Process(
                    target=run_engine,
                    args=(engine, str(directory), texts, threshold, args.batch_size, args.device, queue),
                )
                process.start()
                result[engine] = queue.get()
                process.join()
            same = agree(result["torch"]["entities"], result["jax"]["entities"])
            found = sum(map(len, result["torch"]["entities"]))
            share = span_head_share(str(directory), texts, args.batch_size) if mode == "markerV0" else None
            rows.append((mode, result, same, found, share))
        decoder = decoder_comparison()

    print(
        f"{args.texts} texts of 60-120 words, {len(LABELS)} labels, batch {args.batch_size}, deberta-v3-{args.size} "
        f"shapes, {args.device}\n"
    )
    header = f"{'mode':<12} {'torch texts/s':>14} {'jax texts/s':>12} {'jax/torch':>10} {'torch MB':>9} {'jax MB':>8}"
    print(header + f" {'same entities':>14} {'span head':>10}")
    print("-" * (len(header) + 26))
    for mode, result, same, found, share in rows:
        t, j = result["torch"], result["jax"]
        head = f"{share:.1%}" if share is not None else "-"
        ratio = j["texts_per_s"] / t["texts_per_s"]
        print(
            f"{mode:<12} {t['texts_per_s']:>14.1f} {j['texts_per_s']:>12.1f} {ratio:>9.2f}x"
            f" {t['peak_mb']:>9.0f} {j['peak_mb']:>8.0f} {str(same) + f' ({found})':>14} {head:>10}"
        )
    print(f"\ndecoder alone, best of 5, {decoder['candidates']} candidate spans (400 words x 12 widths x 5 labels):")
    for mode in ("flat", "nested"):
        d = decoder[mode]
        print(
            f"  {mode:<7} reference {d['reference_s'] * 1e3:9.1f} ms   ours {d['ours_s'] * 1e3:7.1f} ms   "
            f"{d['speedup']:7.1f}x   identical: {d['identical']}"
        )
    if args.json:
        modes = {
            mode: {
                "torch_texts_per_s": result["torch"]["texts_per_s"],
                "jax_texts_per_s": result["jax"]["texts_per_s"],
                "same_entities": same,
                "entities": found,
                "span_head_share": share,
            }
            for mode, result, same, found, share in rows
        }
        Path(args.json).write_text(json.dumps({"size": args.size, "device": args.device, "modes": modes}, indent=1))


if __name__ == "__main__":
    main()
