"""Packed against unpacked training batches: non-pad tokens per second of the train step, and padding.

The same records (word counts drawn like the GLiNER paper's Pile-NER training data: most between 50 and 200 words,
a long tail up to 384; the words are data/tiny/train.jsonl sentences with their entities, 5 labels per record)
are trained on in global batches of `--batch-size` examples, two ways:

- unpacked: one example per row, tokens padded to the bucket of the batch's longest example (`collate`, what
  `gliner-jax train` does by default);
- packed: the same examples packed into rows of `--row-length` tokens (`gliner_jax.packing`, `data.packing=true`).

Both run the Trainer's train step (`training.step.build_train_program`: forward, loss, backward, clipping, AdamW;
encoder layers unrolled) in this one process on the same random model (the train benchmark's: deberta-v3 shapes, a
128k-row embedding table, GLiNER hidden 768),
each compiled once per batch shape first. The timed rounds alternate between the two layouts, so that a change in
the machine's load hits both alike; each layout's figure is the median over rounds. Before training, the loss of
each batch is computed both ways in eval mode: the two must agree (the same examples, the same loss).

    python -m gliner_jax.bench packing [--size small] [--mode markerV0] [--batch-size 16] [--batches 3]
                                       [--rounds 3] [--row-length 512]
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gliner_jax.bench import argument_parser
from gliner_jax.bench.batches import make_records, pick_labels, pile_ner_length, tokenizer_corpus
from gliner_jax.bench.programs import TrainLoop, one_device_program
from gliner_jax.bench.sizes import VOCAB_SIZE, reference_models
from gliner_jax.bench.train import SIZES


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark with command-line arguments `argv`."""
    parser = argument_parser(__name__, __doc__)
    parser.add_argument("--size", choices=SIZES, default="small", help="deberta-v3 encoder shapes")
    parser.add_argument("--mode", choices=("markerV0", "token_level"), default="markerV0")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per step")
    parser.add_argument("--batches", type=int, default=3, help="distinct global batches, each a timed step")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the batches, per layout")
    parser.add_argument("--row-length", type=int, default=512, help="packed row length (tokens)")
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE, help="embedding rows (0: the tokenizer's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_platforms", "cpu")
    from gliner_jax import GLiNER
    from gliner_jax.packing import pack
    from gliner_jax.training.config import ModelSection
    from gliner_jax.training.data import collate

    records = make_records(args.batches * args.batch_size, args.seed, pile_ner_length)
    labels = pick_labels(records, args.seed)
    with tempfile.TemporaryDirectory() as root:
        corpus = tokenizer_corpus(labels)
        directory = reference_models(Path(root), args.size, [args.mode], corpus, args.vocab_size)[args.mode]
        model = GLiNER.from_pretrained(directory)
    processor, size = model.processor, args.batch_size
    layouts: dict[str, list[dict[str, np.ndarray]]] = {"unpacked": [], "packed": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # texts past max_len are truncated, as in training
        for start in range(0, len(records), size):
            chunk = records[start : start + size], labels[start : start + size]
            layouts["unpacked"].append(collate(*chunk, processor, batch_size=size))
            packed = pack(
                collate(*chunk, processor), row_length=args.row_length, pad_id=processor.tokenizer.pad_token_id
            )
            layouts["packed"].append(packed)

    steps = args.batches * (1 + args.rounds) * 2
    names = list(layouts["unpacked"][0])
    program = one_device_program(model.model, steps, names, unroll_layers=ModelSection.unroll_layers)
    losses = {name: [program.eval_loss(batch) for batch in batches] for name, batches in layouts.items()}
    np.testing.assert_allclose(losses["packed"], losses["unpacked"], rtol=1e-4, err_msg="packed and unpacked losses")
    loop = TrainLoop(program, args.seed)
    device = {name: [loop.put(batch) for batch in batches] for name, batches in layouts.items()}

    def run(name: str) -> float:
        """One pass over the layout's batches; returns its wall time."""
        start = time.perf_counter()
        for batch in device[name]:
            loop(batch)
        loop.wait()
        return time.perf_counter() - start

    compile_s = {name: run(name) for name in layouts}  # the first pass compiles each batch shape
    times = {name: [] for name in layouts}
    for _ in range(args.rounds):
        for name in layouts:
            times[name].append(run(name))

    words = sorted(len(record["tokenized_text"]) for record in records)
    print(
        f"deberta-v3-{args.size} shapes, {args.mode}, {len(records)} records of {words[0]}-{words[-1]} words (median "
        f"{words[len(words) // 2]}), {args.batches} batches of {size} examples, packed rows of {args.row_length} "
        f"tokens, {args.rounds} timed rounds on {jax.devices()[0].device_kind}\n"
    )
    columns = ["layout", "shapes (rows x tokens)", "non-pad tokens", "padding", "s/step", "non-pad tok/s", "ratio"]
    columns += ["first pass s (compiles)", "eval loss, batch 0"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    rates = {}
    for name, batches in layouts.items():
        real = sum(int((batch["attention_mask"] > 0).sum()) for batch in batches)
        slots = sum(batch["attention_mask"].size for batch in batches)
        seconds = statistics.median(times[name])
        rates[name] = real / seconds
        shapes = ", ".join(f"{b['input_ids'].shape[0]}x{b['input_ids'].shape[1]}" for b in batches)
        cells = [name, shapes, f"{real:,}", f"{1 - real / slots:.1%}", f"{seconds / len(batches):.2f}"]
        cells += [f"{rates[name]:,.0f}", f"{rates[name] / rates['unpacked']:.2f}x", f"{compile_s[name]:.0f}"]
        cells.append(f"{losses[name][0]:.3f}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
