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
is `make_train_step` under `jax.jit` on one device with the optimizer of gliner_jax.training.optim, the encoder
layers unrolled as `gliner-jax train` runs them by default (`model.unroll_layers`). Both warm up
on every batch (that is where jax compiles) and then run `--steps` steps; throughput counts non-pad tokens (the
attention mask). Before training, each engine computes the loss of the first batch in eval mode: equal losses
show that both train the same network on the same data.

On a GPU the table adds model FLOPs utilisation: analytic model FLOPs (below) over time, against the peak of the
device for the compute dtype (H100 / H200 SXM dense: 989 TFLOP/s bfloat16, 494.5 TFLOP/s TF32 for float32
matmuls, which both XLA and, set here, torch use), or `--peak-tflops`.

`--remat none,dots,full` runs our step once per encoder remat policy (`model.remat`; policies this checkout does
not have are skipped with a note), against one run of the reference; `--json PATH` also writes the results.

    python scripts/bench_train.py [--size toy|small|large] [--modes markerV0,token_level] [--steps 8]
                                  [--batch-size 8] [--batches 2] [--dtype float32|bfloat16] [--device cpu|gpu]
                                  [--remat none,dots,full] [--param-dtype float32|bfloat16] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import multiprocessing
import random
import resource
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from queue import Empty
from typing import Any

import numpy as np
from bench_inference import TOY, V3_SMALL

from gliner_jax.config import GLiNERConfig
from gliner_jax.data_formats import Example, read_examples
from gliner_jax.modeling.encoders.deberta import DebertaConfig
from gliner_jax.testing.builders import build_backbone, build_reference
from gliner_jax.training.config import ModelSection

TINY_TRAIN = Path(__file__).resolve().parent.parent / "data" / "tiny" / "train.jsonl"
SIZES = {
    "toy": TOY,
    "small": V3_SMALL,
    "large": DebertaConfig(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
    ).to_hf_dict(),
}
GLINER = dict(hidden_size=768, max_width=12)  # gliner's large / multi models: hidden 768, spans up to 12 words
VOCAB_SIZE = 128004  # gliner's deberta-v3 models: 128,001 tokenizer ids + the 3 tokens gliner adds
NEGATIVE_TYPES = ("award", "disease", "vehicle", "language", "currency")  # types no record has
LABELS_PER_RECORD, MAX_POSITIVE_TYPES = 5, 3
LOSS = dict(alpha=0.75, gamma=0.0, prob_margin=0.0, label_smoothing=0.0, reduction="sum", negatives=1.0)
OPTIMIZER = dict(
    encoder_lr=1e-5,
    others_lr=5e-5,
    encoder_weight_decay=0.01,
    others_weight_decay=0.01,
    scheduler="cosine",
    warmup_ratio=0.1,
    max_grad_norm=1.0,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
)
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


# ---------------------------------------------------------------------------------------------- data and model


def make_records(
    count: int, seed: int = 0, draw_length: Callable[[random.Random], int] = lambda rng: rng.randint(60, 120)
) -> list[Example]:
    """Records of `draw_length` words (default 60-120): consecutive random sentences of data/tiny/train.jsonl,
    their entities shifted, cut at the drawn length (entities past the cut dropped)."""
    sentences = read_examples(TINY_TRAIN)[0]
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        target, words, ner = draw_length(rng), [], []
        while len(words) < target:
            sentence = sentences[rng.randrange(len(sentences))]
            ner += [[start + len(words), end + len(words), label] for start, end, label in sentence["ner"]]
            words += sentence["tokenized_text"]
        records.append({"tokenized_text": words[:target], "ner": [e for e in ner if e[1] < target]})
    return records


def pick_labels(records: Sequence[Example], seed: int = 0) -> list[list[str]]:
    """Per record 5 labels, shuffled: up to 3 of its entity types, the rest negatives (types it does not have)."""
    rng = random.Random(seed)
    all_types = sorted({label for record in records for *_, label in record["ner"]} | set(NEGATIVE_TYPES))
    label_sets = []
    for record in records:
        present = sorted({label for *_, label in record["ner"]})
        positives = rng.sample(present, min(MAX_POSITIVE_TYPES, len(present)))
        absent = [label for label in all_types if label not in present]
        labels = positives + rng.sample(absent, LABELS_PER_RECORD - len(positives))
        rng.shuffle(labels)
        label_sets.append(labels)
    return label_sets


def build_model(root: Path, size: str, modes: Sequence[str], corpus: list[str], vocab_size: int) -> dict[str, Path]:
    """One gliner directory per span mode over one random backbone (word-level tokenizer trained on `corpus`),
    the word embeddings grown to `vocab_size` rows (unused ids) so that the optimizer updates a real-size table."""
    backbone = build_backbone(
        root / "backbone", SIZES[size], tokenizer=dict(vocab_size=1000, model_type="word", corpus=corpus)
    )
    directories = {}
    for mode in modes:
        directory = root / mode
        # gliner's own head init (no noise, no scaling): the loss is then in its usual range.
        reference = build_reference(backbone, directory, span_mode=mode, logit_scale=1.0, noise=0.0, **GLINER)
        if vocab_size > reference.config.vocab_size:
            reference.model.token_rep_layer.resize_token_embeddings(vocab_size)
            reference.config.vocab_size = reference.config.encoder_config.vocab_size = vocab_size
            reference.save_pretrained(directory)
        directories[mode] = directory
    return directories


# ---------------------------------------------------------------------------------------------------- engines


@dataclasses.dataclass
class Engine:
    """A prepared training loop: `step(i, batch)` runs one step (asynchronously where the library allows),
    `sync()` waits for all of them; `batches` are on the device; `tokens` counts each batch's non-pad tokens."""

    step: Callable[[int, Any], None]
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

    def step(_: int, batch: dict) -> None:
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
    """Our step: `make_train_step` jitted on one device (parameters and optimizer state donated)."""
    import jax

    if options.device == "cpu":
        jax.config.update("jax_platforms", "cpu")
    import jax.numpy as jnp
    from flax import nnx

    from gliner_jax import GLiNER
    from gliner_jax.training.data import collate
    from gliner_jax.training.loss import LossConfig
    from gliner_jax.training.optim import OptimizerConfig, make_optimizer, with_master_weights
    from gliner_jax.training.trainer import make_train_step

    gliner_model = GLiNER.from_pretrained(options.directory, dtype=jnp.dtype(options.dtype))
    host_batches = [
        collate(records, labels, gliner_model.processor, batch_size=options.batch_size)
        for records, labels in options.chunks()
    ]
    batches = [jax.device_put(batch) for batch in host_batches]
    loss_config = LossConfig(**LOSS, masking="global")
    network = gliner_model.model
    first_loss = eval_loss_function(network, loss_config)(batches[0])

    network.train()
    network.set_attributes(unroll_layers=ModelSection.unroll_layers)  # `gliner-jax train`'s default
    if options.remat != "none":
        network.set_attributes(remat=options.remat)
    graphdef, params, rest = nnx.split(network, nnx.Param, ...)
    params = jax.tree.map(lambda p: p.astype(options.param_dtype), params)
    tx = make_optimizer(OptimizerConfig(num_steps=total_steps(options), **OPTIMIZER), params)
    if options.param_dtype != "float32":
        tx = with_master_weights(tx)
    train_step = jax.jit(make_train_step(graphdef, rest, tx, loss_config), donate_argnums=(0, 1))
    carry = {"params": params, "opt_state": jax.jit(tx.init)(params)}
    key = jax.random.key(0)

    def step(i: int, batch: dict[str, jax.Array]) -> None:
        carry["params"], carry["opt_state"], _ = train_step(
            carry["params"], carry["opt_state"], batch, jax.random.fold_in(key, i)
        )

    def peak_device_mb() -> float | None:
        if jax.default_backend() == "cpu":
            return None
        stats = jax.devices()[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use", 0) / 2**20

    config = gliner_model.config
    return Engine(
        step=step,
        sync=lambda: jax.block_until_ready(carry),
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


def eval_loss_function(network: Any, loss_config: Any) -> Callable[[dict], float]:
    """`loss(batch)`: the GLiNER loss of `network` (switched to eval mode: no dropout) on a batch, jitted."""
    import jax
    from flax import nnx

    from gliner_jax.training.loss import gliner_loss

    network.eval()
    graphdef, state = nnx.split(network)

    @jax.jit
    def eval_loss(state: nnx.State, batch: dict[str, jax.Array]) -> jax.Array:
        logits = nnx.merge(graphdef, state)(**{name: value for name, value in batch.items() if name != "entities"})
        return gliner_loss(logits, batch, loss_config)

    return lambda batch: float(eval_loss(state, batch))


def total_steps(options: Options) -> int:
    """The schedule's length: warm-up passes plus timed steps."""
    return len(options.chunks()) + options.steps


def measure(engine: Engine, steps: int) -> dict[str, Any]:
    """Warm up on every batch once (compilation for jax), then time `steps` steps cycling over the batches."""
    start = time.perf_counter()
    for i, batch in enumerate(engine.batches):
        engine.step(i, batch)
    engine.sync()
    warmup_s = time.perf_counter() - start
    offset = len(engine.batches)
    start = time.perf_counter()
    for i in range(steps):
        engine.step(offset + i, engine.batches[i % len(engine.batches)])
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


def run_engine(name: str, options: Options, queue: multiprocessing.Queue) -> None:
    """Subprocess body: build engine `name`, measure it, send the result (or the error) back."""
    try:
        queue.put(measure(ENGINES[name](options), options.steps))
    except Exception as error:
        queue.put({"error": f"{type(error).__name__}: {error}"})
        raise


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


def remat_policies(requested: Sequence[str]) -> tuple[list[str], list[str]]:
    """The requested encoder remat policies this checkout has (`model.remat`), and those it lacks."""
    try:
        known = importlib.import_module("gliner_jax.modeling.layer_stack").REMAT_POLICIES
    except ModuleNotFoundError:
        known = ("none",)
    return [p for p in requested if p in known], [p for p in requested if p not in known]


def run_mode(options: Options, policies: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The reference once and our step once per remat policy ("jax" for "none", "jax:POLICY" otherwise), one
    after the other, each in a fresh spawned subprocess."""
    context = multiprocessing.get_context("spawn")
    results = {}
    runs = [("torch", "none")] + [("jax", policy) for policy in policies]
    for name, policy in runs:
        key = name if policy == "none" else f"{name}:{policy}"
        queue = context.Queue()
        process = context.Process(target=run_engine, args=(name, dataclasses.replace(options, remat=policy), queue))
        process.start()
        results[key] = receive(process, queue)
        process.join()
        if "error" in results[key]:
            raise RuntimeError(f"{key} engine failed: {results[key]['error']}")
    return results


def receive(process: multiprocessing.Process, queue: multiprocessing.Queue) -> dict[str, Any]:
    """The subprocess's result; an error if it dies without one (e.g. killed for memory)."""
    while True:
        try:
            return queue.get(timeout=5)
        except Empty:
            if not process.is_alive():
                raise RuntimeError(f"engine subprocess exited with code {process.exitcode} and no result") from None


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small", help="deberta-v3 encoder shapes")
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
    args = parser.parse_args()
    if args.device is None:
        import torch

        args.device = "gpu" if torch.cuda.is_available() else "cpu"
    policies, missing = remat_policies(args.remat.split(","))
    if missing:
        print(f"remat policies {missing} are not in this checkout (gliner_jax.modeling.layer_stack); skipped")
    if not policies:
        raise SystemExit("no remat policy to run")

    records = make_records(args.batches * args.batch_size)
    labels = pick_labels(records)
    corpus = [" ".join(record["tokenized_text"]) for record in read_examples(TINY_TRAIN)[0]]
    corpus.append(" ".join(sorted({label for row in labels for label in row} | set(NEGATIVE_TYPES))))
    modes = args.modes.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as root:
        directories = build_model(Path(root), args.size, modes, corpus, args.vocab_size)
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
        f"{config['vocab_size']:,}), GLiNER hidden {GLINER['hidden_size']}, batch {args.batch_size} x "
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
