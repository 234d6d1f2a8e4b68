"""`gliner-jax` command line."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import gliner_jax
from gliner_jax.config import WORDS_SPLITTER_TYPES
from gliner_jax.data_formats import EVAL_FORMATS, SOURCE_FORMATS, TEXT_FORMATS
from gliner_jax.text.splitters import WordSplitter


def _encode(args: argparse.Namespace) -> int:
    """Encode texts with a Hugging Face encoder (a directory or hub repo id); optionally check against PyTorch."""
    import jax.numpy as jnp
    import numpy as np

    from gliner_jax.checkpoint_io import load_hf_encoder
    from gliner_jax.hub import ENCODER_PATTERNS, load_tokenizer, resolve

    directory = resolve(args.model, ENCODER_PATTERNS)
    tokenizer = load_tokenizer(directory)
    encoder, _ = load_hf_encoder(directory, dtype=jnp.dtype(args.dtype))
    batch = tokenizer(args.texts, padding="longest", return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
    hidden = np.asarray(encoder(jnp.asarray(ids), jnp.asarray(mask)), np.float32)

    reference = None
    if args.compare_torch:
        from gliner_jax.testing.builders import torch_last_hidden_state

        reference = torch_last_hidden_state(directory, ids, mask)

    for row, text in enumerate(args.texts):
        valid = mask[row].astype(bool)
        record = {"text": text, "tokens": int(valid.sum()), "hidden_size": hidden.shape[-1]}
        record["mean_token_norm"] = float(np.linalg.norm(hidden[row, valid], axis=-1).mean())
        if reference is not None:
            ref = reference[row, valid]
            record["max_rel_diff_vs_torch"] = float(np.abs(hidden[row, valid] - ref).max() / np.abs(ref).max())
        print(json.dumps(record, ensure_ascii=False))
    return 0


def _convert(args: argparse.Namespace) -> int:
    """Convert a GLiNER model (a directory or hub repo id) into the gliner (PyTorch) layout or our native layout."""
    from gliner_jax.checkpoint_io import convert_directory

    print(convert_directory(args.src, args.dst, to=args.to, overwrite=args.overwrite))
    return 0


def _start_distributed(args: argparse.Namespace) -> bool:
    """jax.distributed from --coordinator-address (by hand) or --distributed (the cluster's environment); whether
    it was asked for."""
    import jax

    if args.coordinator_address:
        jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    elif args.distributed:
        jax.distributed.initialize()
    return bool(args.coordinator_address or args.distributed)


def _labels(text: str, flag: str = "--labels") -> list[str]:
    """The labels of a comma-separated --labels (or `flag`) value; ValueError for a blank one."""
    labels = [label.strip() for label in text.split(",")]
    if not all(labels):
        raise ValueError(f"{flag} {text!r}: blank label (give comma-separated names, e.g. person,organization)")
    return labels


def _check_threshold(threshold: float, flag: str = "--threshold") -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"{flag} must be in [0, 1], got {threshold}")


def _thresholds(text: str) -> list[float]:
    """The thresholds of a comma-separated --thresholds value; ValueError for one that is not a number in [0, 1]."""
    try:
        thresholds = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--thresholds {text!r}: give comma-separated numbers, e.g. 0.3,0.5,0.7") from None
    if not all(0.0 <= t <= 1.0 for t in thresholds):
        raise ValueError(f"--thresholds {text!r}: every threshold must be in [0, 1]")
    return thresholds


def _predict(args: argparse.Namespace) -> int:
    """Predict entities; one JSON line per text: its record ({"text": ...} for a plain line) with "entities" (and a
    relation model's "relations")."""
    from gliner_jax.annotate import PredictOptions, Share, annotate_file, check_relations, write_jsonl
    from gliner_jax.data_formats import count_text_lines, read_text_lines, resolve_text_format, text_lines
    from gliner_jax.label_generation import GenerationOptions
    from gliner_jax.model import GLiNER

    if args.output and (args.texts or not args.file):
        raise ValueError("--output writes the entities of --file (texts given as arguments go to stdout)")
    if (args.coordinator_address or args.distributed) and not args.output:
        raise ValueError("a multi-process run writes one file: pass --file and --output")
    labels = _labels(args.labels)
    relations = _labels(args.relations, "--relations") if args.relations is not None else None
    _check_threshold(args.threshold)
    for flag in ("adjacency_threshold", "relation_threshold"):
        if getattr(args, flag) is not None:
            _check_threshold(getattr(args, flag), "--" + flag.replace("_", "-"))
    constraints = _labels(args.gen_constraints, "--gen-constraints") if args.gen_constraints is not None else None
    generation = GenerationOptions(constraints, args.num_gen_sequences, args.max_new_tokens)
    options = PredictOptions(
        labels,
        args.threshold,
        not args.nested,
        args.multi_label,
        args.batch_size,
        relations,
        args.adjacency_threshold,
        args.relation_threshold,
        generation,
    )
    share, barrier = Share(args.block_lines), None
    if _start_distributed(args):
        import jax
        from jax.experimental import multihost_utils

        from gliner_jax.sharding import avoid_cached_cpu_collectives

        avoid_cached_cpu_collectives()
        share = Share(args.block_lines, jax.process_index(), jax.process_count())
        barrier = functools.partial(multihost_utils.sync_global_devices, "gliner-jax predict: parts written")
    model = GLiNER.from_pretrained(args.model)
    model.pack_tokens = args.pack_tokens
    check_relations(model, options)
    if args.texts:
        asked = (args.threshold, not args.nested, args.multi_label, args.batch_size)
        if relations:
            thresholds = dict(adjacency_threshold=args.adjacency_threshold, relation_threshold=args.relation_threshold)
            entities, found = model.inference(args.texts, labels, *asked, relations=relations, **thresholds)
            records = [
                {"text": t, "entities": e, "relations": r} for t, e, r in zip(args.texts, entities, found, strict=True)
            ]
        else:
            results = model.inference(args.texts, labels, *asked, **dataclasses.asdict(generation))
            records = [{"text": t, "entities": e} for t, e in zip(args.texts, results, strict=True)]
        for record in records:
            print(json.dumps(record, ensure_ascii=False))
        return 0
    if args.output:
        local = Path(args.model)
        counts = annotate_file(
            model,
            args.file,
            args.output,
            options,
            share=share,
            strict=args.strict,
            overwrite=args.overwrite,
            progress=share.index == 0,
            job={"model": str(local.resolve()) if local.exists() else args.model},
            barrier=barrier,
            text_format=args.format,
        )
    else:
        if args.file:
            lines, total = read_text_lines(args.file, text_format=args.format), count_text_lines(args.file, args.format)
        else:
            lines, total = text_lines(sys.stdin.buffer, text_format=resolve_text_format(None, args.format)), None
        source = args.file or "<stdin>"
        counts = write_jsonl(model, lines, options, sys.stdout, source=source, strict=args.strict, total=total)
    if counts.skipped:
        numbers = ", ".join(map(str, counts.skipped_lines)) + (", ..." if counts.skipped > 10 else "")
        print(f"{counts.texts} texts; skipped {counts.skipped} bad line(s): {numbers}", file=sys.stderr)
    return 0


def _write_report(path: Path, report: dict) -> None:
    """The JSON report, indented, into `path` (replaced atomically)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def _eval_benchmark(args: argparse.Namespace) -> int:
    """gliner's benchmark suite (a folder of dataset folders): a table on stderr, a JSON report on stdout or into
    --output."""
    from gliner_jax.annotate import refuse_output_over_input
    from gliner_jax.benchmark_suite import BATCH_SIZE, evaluate_benchmark, read_benchmark
    from gliner_jax.model import GLiNER

    flags = {"--labels": args.labels, "--label-map": args.label_map, "--nested": args.nested}
    flags |= {"--multi-label": args.multi_label, "--format": args.format != "auto", "--strict-iob2": args.strict_iob2}
    if given := [flag for flag, value in flags.items() if value]:
        raise ValueError(f"--benchmark reads its folders as gliner does: drop {', '.join(given)}")
    _check_threshold(args.threshold)
    datasets = read_benchmark(args.benchmark)
    if args.output:
        refuse_output_over_input([Path(args.output)], list(Path(args.benchmark).glob("*/*.json")))
    model = GLiNER.from_pretrained(args.model)
    batch_size = args.batch_size or BATCH_SIZE
    result = evaluate_benchmark(model, datasets, threshold=args.threshold, batch_size=batch_size, progress=True)
    print(result.table(), file=sys.stderr)
    report = {"model": args.model, "benchmark": args.benchmark, "threshold": args.threshold, **result.to_dict()}
    if args.output:
        _write_report(Path(args.output), report)
    else:
        print(json.dumps(report, ensure_ascii=False))
    return 0


def _eval(args: argparse.Namespace) -> int:
    """Span-level P/R/F1 of a model on gold data: a per-label table on stderr, a JSON report on stdout or into
    --output."""
    from gliner_jax.annotate import refuse_output_over_input
    from gliner_jax.data_formats import load_label_map, read_eval_data
    from gliner_jax.evaluation import best_threshold, evaluate_thresholds, sweep_table
    from gliner_jax.model import GLiNER

    if args.benchmark:
        return _eval_benchmark(args)
    labels = _labels(args.labels) if args.labels else None
    _check_threshold(args.threshold)
    thresholds = _thresholds(args.thresholds) if args.thresholds else []
    if args.output:
        refuse_output_over_input([Path(args.output)], [args.data, args.label_map])
    label_map = load_label_map(args.label_map) if args.label_map else None
    examples = read_eval_data(args.data, label_map, strict_iob2=args.strict_iob2, data_format=args.format)
    model = GLiNER.from_pretrained(args.model)
    if model.config.is_relex:
        return _eval_relations(args, model, examples, labels)
    sweep = evaluate_thresholds(
        model,
        examples,
        [args.threshold, *thresholds],
        labels=labels,
        batch_size=args.batch_size or 8,
        flat_ner=not args.nested,
        multi_label=args.multi_label,
        progress=True,
    )
    result = sweep[args.threshold]
    print(result.table(), file=sys.stderr)
    report = {"model": args.model, "data": args.data, "examples": len(examples), "threshold": args.threshold}
    report |= {"flat_ner": not args.nested, "multi_label": args.multi_label, **result.to_dict()}
    if thresholds:
        swept = {t: sweep[t] for t in thresholds}
        best = best_threshold(swept)
        print(f"\n{sweep_table(swept)}\nbest threshold: {best:g} (F1 {swept[best].f1:.2%})", file=sys.stderr)
        micro = {t: dataclasses.asdict(evaluation.micro) for t, evaluation in swept.items()}
        report["sweep"] = [{"threshold": t, **scores} for t, scores in micro.items()]
        report["best_threshold"] = best
    if args.output:
        _write_report(Path(args.output), report)
    else:
        print(json.dumps(report, ensure_ascii=False))
    return 0


def _eval_relations(args: argparse.Namespace, model: Any, examples: list, labels: list[str] | None) -> int:
    """`eval` of a relation extraction model: entity and relation P/R/F1 (gliner's relation evaluate), every relation
    type of the data given to every text."""
    from gliner_jax.evaluation import evaluate_relations

    if args.thresholds:
        raise ValueError("eval --thresholds: a threshold sweep is not supported for relation extraction models")
    scores = evaluate_relations(
        model,
        examples,
        labels=labels,
        threshold=args.threshold,
        batch_size=args.batch_size or 8,
        flat_ner=not args.nested,
        multi_label=args.multi_label,
    )
    print(f"{scores.entities.table()}\n\nrelations:\n{scores.relations.table()}", file=sys.stderr)
    report = {"model": args.model, "data": args.data, "examples": len(examples), "threshold": args.threshold}
    report |= {"flat_ner": not args.nested, "multi_label": args.multi_label, **scores.entities.to_dict()}
    report["relations"] = scores.relations.to_dict()
    if args.output:
        _write_report(Path(args.output), report)
    else:
        print(json.dumps(report, ensure_ascii=False))
    return 0


def parse_source(text: str) -> dict:
    """A `data prepare` SOURCE, PATH[:FORMAT][@WEIGHT], as a `data.sources` entry: a last "@" followed by a number
    gives the weight, then a last ":" followed by a format name gives the format."""
    source: dict = {}
    head, at, weight = text.rpartition("@")
    if at:
        with contextlib.suppress(ValueError):
            source["weight"], text = float(weight), head
    head, colon, data_format = text.rpartition(":")
    if colon and data_format in SOURCE_FORMATS:
        source["format"], text = data_format, head
    return {"path": text, **source}


def _data_prepare(args: argparse.Namespace) -> int:
    """Check training sources and write them, or their weighted mixture, into ArrayRecord shards."""
    from gliner_jax.training.config import check_sources
    from gliner_jax.training.data import prepare_array_record

    sources = [parse_source(text) for text in args.sources]
    check_sources(tuple(sources))
    split = WordSplitter(args.words_splitter)
    summary = prepare_array_record(
        sources,
        args.output,
        num_shards=args.shards,
        strict=args.strict,
        examples=args.examples,
        seed=args.seed,
        split=split,
    )
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def _train(args: argparse.Namespace) -> int:
    """Train, or resume, the run a YAML config describes; prints the last metrics as JSON."""
    import logging

    import jax

    if args.coordinator_address:
        jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    elif args.distributed:
        jax.distributed.initialize()  # from the cluster environment (TPU pods, SLURM, ...)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every step of every save at INFO
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # backends it tried and did not find
    logging.getLogger("tensorboardX.summary").setLevel(logging.WARNING)  # each write of a tag it renames ("a b": "a_b")

    from gliner_jax.training.config import load_train_config
    from gliner_jax.training.resume import TrainingInterrupted
    from gliner_jax.training.trainer import Trainer

    with errors_as_one_line(args.debug):  # a bad config, model or data file; a failure mid-run keeps its traceback
        trainer = Trainer(load_train_config(args.config, args.overrides))
    try:
        metrics = trainer.fit()
    except TrainingInterrupted as interrupted:  # SIGTERM / SIGINT: the step is saved
        print(interrupted, file=sys.stderr)
        return 128 + interrupted.signum
    if jax.process_index() == 0:
        print(json.dumps(metrics))
    return 0


def _self_train(args: argparse.Namespace) -> int:
    """Pseudo-label texts with a model, fine-tune it on them, print dev F1 before and after as JSON."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("tensorboardX.summary").setLevel(logging.WARNING)

    from gliner_jax.training.config import load_train_config
    from gliner_jax.training.resume import TrainingInterrupted
    from gliner_jax.training.self_training import self_train

    labels = _labels(args.labels) if args.labels else None
    _check_threshold(args.threshold)
    config = load_train_config(args.config, [f"model.init_from={args.model}", *args.overrides])
    options = {"threshold": args.threshold, "batch_size": args.batch_size, "text_format": args.format}
    try:
        report = self_train(config, args.unlabelled, labels=labels, **options)
    except TrainingInterrupted as interrupted:  # SIGTERM / SIGINT: the fine-tuning step is saved
        print(interrupted, file=sys.stderr)
        return 128 + interrupted.signum
    print(json.dumps(report.to_dict()))
    return 0


def _bench(args: argparse.Namespace) -> int:
    """Run a benchmark of `gliner_jax.bench` (`python -m gliner_jax.bench NAME [args]`)."""
    from gliner_jax.bench.__main__ import main as bench

    bench(args.args)
    return 0


def _distributed_flags(parser: argparse.ArgumentParser) -> None:
    """The flags `_start_distributed` reads."""
    parser.add_argument("--distributed", action="store_true", help="jax.distributed.initialize() from the cluster")
    parser.add_argument("--coordinator-address", help="HOST:PORT of process 0, for multi-process runs by hand")
    parser.add_argument("--num-processes", type=int, help="with --coordinator-address")
    parser.add_argument("--process-id", type=int, help="with --coordinator-address")


def _format_flag(parser: argparse.ArgumentParser) -> None:
    """--format of a file of texts: `data_formats.resolve_text_format`."""
    parser.add_argument(
        "--format",
        default="auto",
        choices=TEXT_FORMATS,
        help="text: every line is a text, even one that looks like JSON; jsonl: a JSON record per line; json: a JSON "
        'list of records (records hold "text" or "tokenized_text"). auto (default): text for a .txt file, else a '
        'JSON list if the file starts with "[", else lines, those starting with "{" read as JSON records',
    )


MODEL_HELP = "GLiNER directory (gliner or native format) or Hugging Face Hub repo id, e.g. urchade/gliner_small-v2.1"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gliner-jax", description="GLiNER in JAX / Flax NNX.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {gliner_jax.__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error, not one line")
    commands = parser.add_subparsers(dest="command", required=True)

    encode = commands.add_parser(
        "encode",
        help="run a local Hugging Face DeBERTa-v2/v3 directory through the JAX encoder",
        description="Print one JSON line per text: token count, hidden size, mean token-state norm and, "
        "with --compare-torch, the max difference from transformers' PyTorch DebertaV2Model.",
    )
    encode.add_argument(
        "--model", required=True, help="directory with config.json, weights and tokenizer files, or a hub repo id"
    )
    encode.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")
    encode.add_argument("--compare-torch", action="store_true", help="also run PyTorch (needs the torch extra)")
    encode.add_argument("texts", nargs="+", help="texts to encode")
    encode.set_defaults(run=_encode)

    convert = commands.add_parser(
        "convert",
        help="convert a GLiNER model between the gliner (PyTorch) and native JAX layouts",
        description="SRC is a directory written by gliner, any version (pytorch_model.bin or model.safetensors), "
        "or by gliner-jax's native format (flax_params.safetensors), or a Hugging Face Hub repo id; the direction is "
        "detected unless --to is given. Every tensor is checked strictly; DST gets a complete config and the "
        "tokenizer files.",
    )
    convert.add_argument("src", help="source directory or hub repo id (e.g. urchade/gliner_small-v2.1)")
    convert.add_argument("dst", help="destination directory (created; an existing one must be empty)")
    convert.add_argument("--to", choices=["torch", "jax"], help="target layout (default: the other one)")
    convert.add_argument("--overwrite", action="store_true", help="replace DST whole if it holds a model")
    convert.set_defaults(run=_convert)

    predict = commands.add_parser(
        "predict",
        help="extract entities of the given labels from texts",
        description="Texts come from the arguments, else from --file, else from stdin: plain lines, JSONL records "
        'with a "text" (or "tokenized_text") field, or (--file) a JSON list of records, as --format says. Output: '
        'one JSON line per text, in input order: its record ({"text": line} for a plain line) with its "entities" '
        "(character offsets); to stdout, or streamed into --output, which a rerun of the same command after an "
        "interruption completes. Bad lines (not UTF-8, not JSON, no text) are reported with their line number and "
        "skipped.",
    )
    predict.add_argument("--model", required=True, help=MODEL_HELP)
    predict.add_argument("--labels", required=True, help="comma-separated entity labels, e.g. person,organization")
    predict.add_argument("--threshold", type=float, default=0.5, help="score threshold in [0, 1] (default 0.5)")
    predict.add_argument(
        "--relations",
        help="a relation extraction model's comma-separated relation labels, e.g. 'works at,founded by': each record "
        'gets "relations" (head, tail, relation, score); required for such a model, refused for any other',
    )
    predict.add_argument(
        "--adjacency-threshold", type=float, help="relation models: entity pair threshold (default --threshold)"
    )
    predict.add_argument(
        "--relation-threshold", type=float, help="relation models: relation score threshold (default --threshold)"
    )
    predict.add_argument(
        "--gen-constraints",
        help="decoder models: comma-separated labels the decoder may write as an entity's generated_labels",
    )
    predict.add_argument(
        "--max-new-tokens", type=int, default=15, help="decoder models: tokens per generated label (default 15)"
    )
    predict.add_argument(
        "--num-gen-sequences",
        type=int,
        default=1,
        help="decoder models: labels generated per entity, the best of a beam search of that many beams (default 1: "
        "greedy)",
    )
    predict.add_argument("--nested", action="store_true", help="allow nested entities (no crossing overlaps)")
    predict.add_argument("--multi-label", action="store_true", help="allow several labels for the same span")
    predict.add_argument("--batch-size", type=int, default=8, help="rows per forward pass (default 8)")
    predict.add_argument(
        "--pack-tokens", type=int, help="pack several texts into each encoder row of up to N tokens (same entities)"
    )
    predict.add_argument("--file", help="read texts from this file (plain lines, JSONL or a JSON list)")
    _format_flag(predict)
    predict.add_argument("--output", help="write JSONL here (resumable: rerun the same command to continue)")
    predict.add_argument(
        "--overwrite", action="store_true", help="start afresh (an old --output stays until the new one is complete)"
    )
    predict.add_argument("--strict", action="store_true", help="stop at the first bad line instead of skipping it")
    predict.add_argument(
        "--block-lines",
        type=int,
        default=1024,
        help="lines per block: sorted and batched together, the unit of "
        "resuming and of sharing among processes (default 1024)",
    )
    _distributed_flags(predict)
    predict.add_argument("texts", nargs="*", help="texts (default: read --file or stdin)")
    predict.set_defaults(run=_predict)

    evaluate = commands.add_parser(
        "eval",
        help="span-level precision, recall and F1 of a model on gold data",
        description='DATA is a GLiNER JSON / JSONL file ({"tokenized_text", "ner"} records) or a CoNLL-style file '
        "(token first, BIO / IOB1 / IOB2 tag last, blank lines between sentences; .conll, .txt, .bio or detected). "
        "Exact-match spans, micro-averaged as gliner's evaluator. Prints a per-label table on stderr and a JSON "
        "report on stdout (or into --output). --benchmark DIR instead evaluates gliner's benchmark suite "
        "(DIR/NAME/ folders of test and labels JSON files) as gliner's get_for_all_path does.",
    )
    evaluate.add_argument("--model", required=True, help=MODEL_HELP)
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="gold data: JSON, JSONL or CoNLL file")
    source.add_argument(
        "--benchmark",
        metavar="DIR",
        help="gliner's benchmark suite: DIR/NAME/ folders of test and labels JSON files; per-dataset P/R/F1 and "
        "the zero-shot and other averages",
    )
    evaluate.add_argument("--labels", help="comma-separated labels to predict (default: all labels of the data)")
    evaluate.add_argument(
        "--format",
        default="auto",
        choices=EVAL_FORMATS,
        help="format of --data (default auto: .conll/.txt/.bio are CoNLL, .json/.jsonl records, else by content)",
    )
    evaluate.add_argument("--label-map", help='JSON / YAML {type: label} renaming, e.g. {"geo-loc": "location"}')
    evaluate.add_argument("--threshold", type=float, default=0.5, help="score threshold in [0, 1] (default 0.5)")
    evaluate.add_argument(
        "--thresholds",
        help="comma-separated thresholds to sweep from the same model pass, e.g. 0.1,0.2,...,0.9: a micro P/R/F1 "
        "table on stderr, the best threshold, and 'sweep' and 'best_threshold' in the report",
    )
    evaluate.add_argument("--nested", action="store_true", help="allow nested entities (no crossing overlaps)")
    evaluate.add_argument("--multi-label", action="store_true", help="allow several labels for the same span")
    evaluate.add_argument(
        "--batch-size", type=int, help="rows per forward pass (default 8; with --benchmark 12, as gliner)"
    )
    evaluate.add_argument("--strict-iob2", action="store_true", help="CoNLL: refuse an I- tag that continues nothing")
    evaluate.add_argument("--output", help="write the JSON report into this file (replaced), not to stdout")
    evaluate.set_defaults(run=_eval)

    data = commands.add_parser("data", help="prepare training data")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    prepare = data_commands.add_parser(
        "prepare",
        help="write training sources, or a weighted mixture of them, into ArrayRecord shards",
        description="Each SOURCE is PATH[:FORMAT][@WEIGHT]: a training file (FORMAT: "
        f"{', '.join(SOURCE_FORMATS)}; default auto, by suffix and content), a folder of ArrayRecord shards or "
        "tfds:NAME:SPLIT, and its weight in the mixture (default 1). One SOURCE is written as it is, in order; "
        "several (or --examples) are mixed as data.sources mixes them, each shuffled with --seed: the first "
        "--examples records of the mixture, or one pass, until its first source runs out. Bad records are reported "
        "and skipped (or refused with --strict). OUT, a new or empty folder, gets "
        "examples.array_record-IIIII-of-NNNNN (written aside, then renamed). Prints a JSON summary with the "
        "records written per source.",
    )
    prepare.add_argument("sources", nargs="+", metavar="SOURCE", help="PATH[:FORMAT][@WEIGHT]")
    prepare.add_argument("output", metavar="OUT", help="output folder (created; must not hold anything)")
    prepare.add_argument("--shards", type=int, default=1, help="number of shards (default 1)")
    prepare.add_argument("--examples", type=int, help="records of the mixture to write (default: one pass)")
    prepare.add_argument("--seed", type=int, default=0, help="the mixture's shuffling seed (default 0)")
    prepare.add_argument("--strict", action="store_true", help="fail on the first bad record instead of skipping")
    prepare.add_argument(
        "--words-splitter",
        choices=WORDS_SPLITTER_TYPES,
        default="whitespace",
        help="the word splitter of the model to train (its words_splitter_type), which splits the texts of "
        "character-offset records (default whitespace)",
    )
    prepare.set_defaults(run=_data_prepare)

    train = commands.add_parser(
        "train",
        help="train a GLiNER model from a YAML config (resumes from its last checkpoint)",
        description="Train from a YAML run config (see configs/); section.key=value arguments override it.",
    )
    train.add_argument("--config", required=True, help="YAML run config, e.g. configs/tiny.yaml")
    train.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. trainer.num_steps=100")
    train.add_argument("--distributed", action="store_true", help="jax.distributed.initialize() from the cluster")
    train.add_argument("--coordinator-address", help="HOST:PORT of process 0, for multi-process runs by hand")
    train.add_argument("--num-processes", type=int, help="with --coordinator-address")
    train.add_argument("--process-id", type=int, help="with --coordinator-address")
    train.set_defaults(run=_train)

    self_train = commands.add_parser(
        "self-train",
        help="pseudo-label texts with a model, fine-tune it on them, report dev F1 before and after",
        description="Self-training as in the GLiNER multi-task paper (section 2.3); see configs/self_training.yaml.",
    )
    self_train.add_argument("--config", required=True, help="YAML run config, e.g. configs/self_training.yaml")
    self_train.add_argument("--model", required=True, help="the model to improve (model.init_from): " + MODEL_HELP)
    self_train.add_argument("--unlabelled", required=True, help="texts: JSONL/JSON (text or tokenized_text) or lines")
    _format_flag(self_train)
    self_train.add_argument("--labels", help="comma-separated labels to pseudo-label (default: those of data.dev)")
    self_train.add_argument("--threshold", type=float, default=0.5, help="pseudo-labelling threshold")
    self_train.add_argument("--batch-size", type=int, default=16, help="prediction batch size")
    self_train.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. data.dev=dev.jsonl")
    self_train.set_defaults(run=_self_train)

    bench = commands.add_parser(
        "bench", help="run a benchmark (NAME --help for its options)", description="python -m gliner_jax.bench NAME"
    )
    bench.add_argument("args", nargs=argparse.REMAINDER, help="NAME (train, inference, ...) and its arguments")
    bench.set_defaults(run=_bench)
    return parser


@contextlib.contextmanager
def errors_as_one_line(debug: bool = False) -> Iterator[None]:
    """Bad input (a missing file or model, a malformed value, an unsupported config, a missing optional library)
    ends the program with one `error: ...` line on stderr and exit status 1, not a traceback (`debug` keeps the
    traceback). A reader that stops reading our output (`| head`) ends it quietly."""
    try:
        yield
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        raise SystemExit(1) from None
    except (OSError, ValueError, NotImplementedError, ModuleNotFoundError) as error:
        if debug:
            raise
        raise SystemExit("error: " + " ".join(str(error).split())) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":  # reports its own bad input: see _train
        return args.run(args)
    with errors_as_one_line(args.debug):
        status = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, where it ends the command quietly, not at exit
        return status


if __name__ == "__main__":
    sys.exit(main())
