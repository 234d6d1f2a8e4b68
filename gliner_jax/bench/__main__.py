"""`python -m gliner_jax.bench NAME [args]`: run the benchmark NAME (a module of this package) with its arguments."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

BENCHMARKS = {
    "biencoder": "many labels: uni-encoder, bi-encoder, precomputed label embeddings, against gliner",
    "device_check": "the accelerator check behind scripts/device_check.sh",
    "encoder": "DeBERTa forward throughput against transformers",
    "finetune_wnut": "fine-tuning MiniLM GLiNERs on WNUT-16 tweets with the Trainer",
    "inference": "end-to-end inference against gliner, or corpus-scale inference (--corpus)",
    "learning": "fine-tuning one MiniLM GLiNER on WNUT-16 with gliner's Trainer and ours: dev F1 and wall time",
    "max_batch": "the largest training batch that fits the device, per remat policy",
    "memory": "compiled memory of the train step and of DeBERTa attention",
    "packing": "packed against unpacked training batches",
    "relations": "relation extraction inference against gliner on the CPU",
    "train": "train-step throughput against gliner",
}


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark named by the first of `argv` with the rest of them."""
    parser = argparse.ArgumentParser(
        prog="python -m gliner_jax.bench",
        description=__doc__,
        epilog="\n".join(f"  {name:<14} {what}" for name, what in BENCHMARKS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=sorted(BENCHMARKS), metavar="NAME")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's arguments (NAME --help lists them)")
    args = parser.parse_args(argv)
    importlib.import_module(f"gliner_jax.bench.{args.name}").main(args.args)


if __name__ == "__main__":
    main()
