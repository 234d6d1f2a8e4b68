"""Train-step throughput: gliner-jax against the `gliner` PyTorch package, side by side, in one run.

One offline model (random weights, deberta-v3-small or -large shapes, the 128,004-row embedding table of
gliner's deberta-v3 models, a word-level tokenizer trained on data/tiny) is built for each span mode and saved
once; both engines load that directory, each in a fresh subprocess (so that its peak memory is its own). Both
train on the same batches: `--batch-size` records of 60-120 words made of data/tiny/train.jsonl sentences, each
with 5 labels (up to 3 of its entity types, the rest negatives), collated by each library's own pipeline (gliner's
data collator; gliner_jax.training.data.collate, which pads to shape buckets).

A step is forward with the loss (focal BCE, alpha 0.75, sum), backward, gradient clipping at norm 1 and AdamW
with gliner's parameter groups (encoder at one learning rate, the rest at another, no decay on biases and
LayerNorm) and a warmup + cosine schedule. The reference step is what gliner's Trainer runs (its compute_loss
and create_optimizer, rebuilt here because transformers' Trainer needs `accelerate`): the model in train mode,
`loss.backward()`, `clip_grad_norm_`, fused torch AdamW (transformers' default), scheduler step, zero_grad. Ours
is the Trainer's program (`training.step.build_train_program`) on one device with the optimizer of
gliner_jax.training.optim, the encoder layers unrolled as `gliner-jax train` runs them by default
(`model.unroll_layers`). Both warm up
on every batch (that is where jax compiles) and then run `--steps` steps; throughput counts non-pad tokens (the
attention mask). Before training, each engine computes the loss of the first batch in eval mode: equal losses
show that both train the same network on the same data.

On a GPU the table adds model FLOPs utilisation: analytic model FLOPs (below) over time, against the peak of the
device for the compute dtype (H100 / H200 SXM dense: 989 TFLOP/s bfloat16, 494.5 TFLOP/s TF32 for float32
matmuls, which both XLA and, set here, torch use), or `--peak-tflops`.

`--remat none,dots,full` runs our step once per encoder remat policy (`model.remat`), against one run of the
reference; `--param-dtype bfloat16` holds our parameters in bfloat16 with float32 master weights in the optimizer
state (started from the float32 weights, as the Trainer does); `--json PATH` also writes the results.

    python -m gliner_jax.bench train [--size toy|small|large] [--modes markerV0,token_level] [--steps 8]
                                     [--batch-size 8] [--batches 2] [--dtype float32|bfloat16] [--device cpu|gpu]
                                     [--remat none,dots,full] [--param-dtype float32|bfloat16] [--json PATH]
"""

from __future__ import annotations

import dataclasses
import json
import resource
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gliner_jax.bench import argument_parser
from gliner_jax.bench.batches import LABELS_PER_RECORD, make_records, pick_labels, tokenizer_corpus
from gliner_jax.bench.programs import LOSS, OPTIMIZER, TrainLoop, one_device_program, remat_policies
from gliner_jax.bench.runner import in_fresh_process, report
from gliner_jax.bench.sizes import GLINER_HEAD, VOCAB_SIZE, reference_models
from gliner_jax.config import GLiNERConfig
from gliner_jax.data_formats import Example
from gliner_jax.training.config import ModelSection

SIZES = ("toy", "small", "large")
# Dense peak TFLOP/s by (device name fragment, compute dtype); float32 matmuls run as TF32. First match wins.
PEAK_TFLOPS = (
    ("H100 PCIe", "bfloat16", 756.0),
    ("H100 PCIe", "float32", 378.0),
    ("H100", "bfloat16", 989.0),  # SXM; the H200 has the same compute
    ("H100", "float32", 494.5),
    ("H200", "bfloat16", 989.0),
    ("H200", "float32", 494.5),
)


@dataclasses.dataclass(frozen=True)
class Options:
    """What both engines are told: the model directory, the batches' records and labels, the run settings."""

    directory: str
    records: list[Example]
    labels: list[list[str]]
    batch_size: int
    steps: int
    dtype: str
    device: str
    remat: str = "none"  # ours only: the encoder layers' remat policy (model.remat)
    param_dtype: str = "float32"  # ours only: bfloat16 keeps float32 master weights in the optimizer

    def chunks(self) -> list[tuple[list[Example], list[list[str]]]]:
        size = self.batch_size
        return [(self.records[i : i + size], self.labels[i : i + size]) for i in range(0, len(self.records), size)]


# ---------------------------------------------------------------------------------------------------- engines


@dataclasses.dataclass
class Engine:
    """A prepared training loop: `step(batch)` runs one step (asynchronously where the library allows),
    `sync()` waits for all of them; `batches` are on the device; `tokens` counts each batch's non-pad tokens."""

    step: Callable[[Any], None]
    sync: Callable[[], None]
    batches: list[Any]
    tokens: list[int]
    first_loss: float  # the first batch's loss in eval mode, before any step
    peak_device_mb: Callable[[], float | None]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def torch_engine(options: Options) -> Engine:
    """gliner's training step: forward with the loss, backward, clipping, fused AdamW in gliner's 4 groups."""
    import gliner
    import torch
    from transformers import get_scheduler
    from transformers.trainer_pt_utils import get_parameter_names

    cuda = options.device == "gpu"
    device = torch.device("cuda" if cuda else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True  # float32 matmuls as TF32, as XLA runs them on GPU
    with warnings.catch_warnings():  # the grown embedding table is larger than the tokenizer: intended
        warnings.filterwarnings("ignore", message=".*differs from the tokenizer size.*")
        model = gliner.GLiNER.from_pretrained(options.directory, local_files_only=True).to(device)
    collator = model.data_collator_class(model.config, data_processor=model.data_processor, prepare_labels=True)

    def to_device(batch: dict) -> dict:
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    batches = [to_device(collator(records, entity_types=labels)) for records, labels in options.chunks()]

    # gliner's Trainer.create_optimizer: "token_rep_layer" parameters take the encoder rate, the rest others_lr;
    # weight decay except on LayerNorm parameters and names containing "bias".
    decay = {n for n in get_parameter_names(model, [torch.nn.LayerNorm]) if "bias" not in n}
    groups = []
    for encoder in (False, True):
        lr = OPTIMIZER["encoder_lr" if encoder else "others_lr"]
        weight_decay = OPTIMIZER["encoder_weight_decay" if encoder else "others_weight_decay"]
        for decayed in (True, False):
            params = [
                p
                for n, p in model.named_parameters()
                if p.requires_grad and ("token_rep_layer" in n) == encoder and (n in decay) == decayed
            ]
            groups.append({"params": params, "lr": lr, "weight_decay": weight_decay if decayed else 0.0})
    betas, eps = (OPTIMIZER["b1"], OPTIMIZER["b2"]), OPTIMIZER["eps"]
    optimizer = torch.optim.AdamW(groups, lr=OPTIMIZER["encoder_lr"], betas=betas, eps=eps, fused=True)
    total = total_steps(options)
    warmup = int(np.ceil(total * OPTIMIZER["warmup_ratio"]))
    scheduler = get_scheduler(OPTIMIZER["scheduler"], optimizer, num_warmup_steps=warmup, num_training_steps=total)
    bf16 = cuda and options.dtype == "bfloat16"

    def forward_loss(batch: dict) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return model(**batch, masking="global", loss_type="focal", **LOSS).loss

    model.eval()
    with torch.no_grad():
        first_loss = float(forward_loss(batches[0]))
    model.train()

    def step(batch: dict) -> None:
        forward_loss(batch).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIMIZER["max_grad_norm"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    return Engine(
        step=step,
        sync=sync,
        batches=batches,
        tokens=[int(batch["attention_mask"].sum()) for batch in batches],
        first_loss=first_loss,
        peak_device_mb=lambda: torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    )


def jax_engine(options: Options) -> Engine:
    """Our step: the Trainer's program (`build_train_program`) on one device (parameters and optimizer state
    donated)."""
    import jax

    if options.device == "cpu":
        jax.config.update("jax_platforms", "cpu")
    import jax.numpy as jnp

    from gliner_jax import GLiNER
    from gliner_jax.training.data import collate

    gliner_model = GLiNER.from_pretrained(options.directory, dtype=jnp.dtype(options.dtype))
    host_batches = [
        collate(records, labels, gliner_model.processor, batch_size=options.batch_size)
        for records, labels in options.chunks()
    ]
    program = one_device_program(
        gliner_model.model,
        total_steps(options),
        list(host_batches[0]),
        param_dtype=options.param_dtype,
        remat=options.remat,
        unroll_layers=ModelSection.unroll_layers,  # `gliner-jax train`'s default
    )
    loop = TrainLoop(program)
    batches = [loop.put(batch) for batch in host_batches]
    first_loss = program.eval_loss(batches[0])

    def peak_device_mb() -> float | None:
        if jax.default_backend() == "cpu":
            return None
        stats = jax.devices()[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use", 0) / 2**20

    config = gliner_model.config
    return Engine(
        step=loop,
        sync=loop.wait,
        batches=batches,
        tokens=[int(batch["attention_mask"].sum()) for batch in host_batches],
        first_loss=first_loss,
        peak_device_mb=peak_device_mb,
        extra={
            "flops": [train_flops(config, batch) for batch in host_batches],
            "device_kind": jax.devices()[0].device_kind,
            "backend": jax.default_backend(),
        },
    )


def total_steps(options: Options) -> int:
    """The schedule's length: warm-up passes plus timed steps."""
    return len(options.chunks()) + options.steps


def measure(engine: Engine, steps: int) -> dict[str, Any]:
    """Warm up on every batch once (compilation for jax), then time `steps` steps cycling over the batches."""
    start = time.perf_counter()
    for batch in engine.batches:
        engine.step(batch)
    engine.sync()
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(steps):
        engine.step(engine.batches[i % len(engine.batches)])
    engine.sync()
    seconds = time.perf_counter() - start
    tokens = sum(engine.tokens[i % len(engine.tokens)] for i in range(steps))
    return {
        "tokens_per_s": tokens / seconds,
        "step_s": seconds / steps,
        "warmup_s": warmup_s,
        "tokens": engine.tokens,
        "first_loss": engine.first_loss,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_device_mb": engine.peak_device_mb(),
        **engine.extra,
    }


ENGINES = {"torch": torch_engine, "jax": jax_engine}


def run_engine(name: str, options: Options) -> dict[str, Any]:
    """Build engine `name` and measure it (the body of its fresh process)."""
    return measure(ENGINES[name](options), options.steps)


# ------------------------------------------------------------------------------------------------ model FLOPs


def train_flops(config: GLiNERConfig, batch: dict[str, np.ndarray]) -> float:
    """Model FLOPs of one training step on `batch` (3x the forward: backward costs twice the forward), counting
    matrix products only (2 FLOPs per multiply-add) over real tokens, words, labels and spans, not padding.

    Encoder per layer: the dense layers (4 d^2 + 2 d f per token), the four attention products (scores, c2p, p2c,
    context: 2 n^2 d each for a row of n tokens) and the projections of the relative embeddings used (2T - 1 rows,
    T the longest row, at most 2 x attention span). Then the projection to the GLiNER width h, the BiLSTM
    (12 h^2 per word) and the heads as gliner-jax computes them (they are factorised, so this is less than
    gliner's own head computes): markerV0 48 h^2 per word, 24 h^2 per label and 8 h C per span (C labels of
    the row); token_level 12 h^2 per word and per label, 8 h^2 + 24 h per (word, label) pair.
    """
    enc = config.encoder_config
    d, f, h = enc.hidden_size, enc.intermediate_size, config.hidden_size
    lengths = batch["attention_mask"].sum(axis=1).astype(np.float64)
    words = batch["words_valid"].sum(axis=1).astype(np.float64)
    labels = batch["labels_valid"].sum(axis=1).astype(np.float64)
    tokens = lengths.sum()
    rel_rows = min(2 * enc.attention_span, 2 * lengths.max() - 1)
    per_layer = 2 * tokens * (4 * d * d + 2 * d * f) + 4 * 2 * (lengths**2).sum() * d + 2 * 2 * rel_rows * d * d
    forward = enc.num_hidden_layers * per_layer
    if config.projects_encoder_output:
        forward += 2 * tokens * d * h
    forward += config.num_rnn_layers * 12 * h * h * words.sum()
    if config.span_mode == "token_level":
        forward += 12 * h * h * (words.sum() + labels.sum()) + (8 * h * h + 24 * h) * (words * labels).sum()
    else:
        spans = batch["span_mask"].sum(axis=1)
        forward += 48 * h * h * words.sum() + 24 * h * h * labels.sum() + 8 * h * (spans * labels).sum()
    return 3 * forward


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """The device's dense peak FLOP/s for `dtype` from PEAK_TFLOPS, or None when it is not listed."""
    for name, kind_dtype, tflops in PEAK_TFLOPS:
        if name in device_kind and kind_dtype == dtype:
            return tflops * 1e12
    return None


# ---------------------------------------------------------------------------------------------------- report


def run_mode(options: Options, policies: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The reference once and our step once per remat policy ("jax" for "none", "jax:POLICY" otherwise), one
    after the other, each in a fresh process."""
    results = {}
    for name, policy in [("torch", "none")] + [("jax", policy) for policy in policies]:
        key = name if policy == "none" else f"{name}:{policy}"
        results[key] = in_fresh_process(run_engine, name, dataclasses.replace(options, remat=policy), name=key)
    return results


def print_table(rows: list[tuple[str, dict]], gpu: bool) -> None:
    columns = ["mode", "remat", "torch tok/s", "jax tok/s", "jax/torch", "torch s/step", "jax s/step"]
    columns += ["jax warm-up s", "torch RSS MB", "jax RSS MB", "loss torch / jax (eval, batch 0)"]
    if gpu:
        columns += ["torch GPU MB", "jax GPU MB", "model TFLOP/step", "torch MFU", "jax MFU"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for mode, result in rows:
        for key in (k for k in result if k.startswith("jax")):
            t, j = result["torch"], result[key]
            cells = [mode, key.partition(":")[2] or "none", *table_cells(t, j, gpu)]
            print("| " + " | ".join(cells) + " |")


def table_cells(t: dict, j: dict, gpu: bool) -> list[str]:
    """The figures of one table row: the reference's run `t` against ours `j`."""
    cells = [f"{t['tokens_per_s']:,.0f}", f"{j['tokens_per_s']:,.0f}"]
    cells += [f"{j['tokens_per_s'] / t['tokens_per_s']:.2f}x", f"{t['step_s']:.3f}", f"{j['step_s']:.3f}"]
    cells += [f"{j['warmup_s']:.1f}", f"{t['peak_rss_mb']:,.0f}", f"{j['peak_rss_mb']:,.0f}"]
    cells.append(f"{t['first_loss']:.2f} / {j['first_loss']:.2f}")
    if gpu:
        mfu = [f"{r['mfu']:.1%}" if r.get("mfu") is not None else "-" for r in (t, j)]
        cells += [f"{t['peak_device_mb']:,.0f}", f"{j['peak_device_mb']:,.0f}", f"{j['tflop_per_step']:.2f}", *mfu]
    return cells


def add_mfu(rows: list[tuple[str, dict]], steps: int, peak: float | None) -> None:
    """Each run's model TFLOP per timed step (our FLOP count of the same batches) and MFU against `peak`."""
    for _, result in rows:
        ours = next(r for key, r in result.items() if key.startswith("jax"))
        flops = float(np.mean([ours["flops"][i % len(ours["flops"])] for i in range(steps)]))
        for run in result.values():
            run["tflop_per_step"] = flops / 1e12
            run["mfu"] = flops / run["step_s"] / peak if peak else None


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark with command-line arguments `argv`."""
    parser = argument_parser(__name__, __doc__)
    parser.add_argument("--size", choices=SIZES, default="small", help="deberta-v3 encoder shapes")
    parser.add_argument("--modes", default="markerV0,token_level")
    parser.add_argument("--steps", type=int, default=8, help="timed steps, after one warm-up step per batch")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=2, help="distinct batches, cycled over")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    parser.add_argument("--device", choices=("cpu", "gpu"), default=None, help="default: gpu when torch sees one")
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE, help="embedding rows (0: the tokenizer's)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: by name)")
    parser.add_argument("--remat", default="none", help="our encoder remat policies, comma-separated")
    parser.add_argument("--param-dtype", choices=("float32", "bfloat16"), default="float32", help="ours")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "gpu" if torch.cuda.is_available() else "cpu"
    policies = remat_policies(args.remat)
    records = make_records(args.batches * args.batch_size)
    labels = pick_labels(records)
    modes = args.modes.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        directories = reference_models(Path(root), args.size, modes, tokenizer_corpus(labels), args.vocab_size)
        report("reference models", time.perf_counter() - start)
        config = json.loads((directories[modes[0]] / "gliner_config.json").read_text())
        for mode in modes:
            options = Options(
                str(directories[mode]),
                records,
                labels,
                args.batch_size,
                args.steps,
                args.dtype,
                args.device,
                param_dtype=args.param_dtype,
            )
            result = run_mode(options, policies)
            if any(run["tokens"] != result["torch"]["tokens"] for run in result.values()):
                raise RuntimeError(f"the two pipelines tokenised differently: {result}")
            rows.append((mode, result))

    gpu = args.device == "gpu"
    ours = next(run for key, run in rows[0][1].items() if key.startswith("jax"))
    device_kind = ours["device_kind"]
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(device_kind, args.dtype) if gpu else None
    add_mfu(rows, args.steps, peak)
    tokens = ours["tokens"]
    print(
        f"deberta-v3-{args.size} shapes ({config['encoder_config']['num_hidden_layers']} layers, vocab "
        f"{config['vocab_size']:,}), GLiNER hidden {GLINER_HEAD['hidden_size']}, batch {args.batch_size} x "
        f"{LABELS_PER_RECORD} labels, {args.batches} batches of {', '.join(map(str, tokens))} tokens, "
        f"{args.steps} timed steps, {args.dtype} on {device_kind}; ours: {args.param_dtype} parameters"
        + (f" (peak {peak / 1e12:.1f} TFLOP/s)" if peak else "")
        + "\n"
    )
    print_table(rows, gpu)
    if args.json:
        summary = {
            "size": args.size,
            "dtype": args.dtype,
            "device_kind": device_kind,
            "peak_tflops": peak and peak / 1e12,
        }
        runs = {
            mode: {key: {k: v for k, v in run.items() if k != "flops"} for key, run in res.items()}
            for mode, res in rows
        }
        Path(args.json).write_text(json.dumps(summary | {"runs": runs}, indent=1))


if __name__ == "__main__":
    main()
