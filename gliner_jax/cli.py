"""`gliner-jax` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import gliner_jax


def _encode(args: argparse.Namespace) -> int:
    """Encode texts with a local Hugging Face DeBERTa directory; optionally check against PyTorch."""
    import jax.numpy as jnp
    import numpy as np
    from transformers import AutoTokenizer

    from gliner_jax.checkpoint_io import load_hf_encoder

    tokenizer = AutoTokenizer.from_pretrained(args.model, local_files_only=True)
    encoder, _ = load_hf_encoder(args.model, dtype=jnp.dtype(args.dtype))
    batch = tokenizer(args.texts, padding="longest", return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
    hidden = np.asarray(encoder(jnp.asarray(ids), jnp.asarray(mask)), np.float32)

    reference = None
    if args.compare_torch:
        import torch
        import transformers

        torch_model = transformers.DebertaV2Model.from_pretrained(args.model, local_files_only=True).eval()
        with torch.no_grad():
            out = torch_model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
        reference = out.last_hidden_state.numpy()

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
    """Convert a checkpoint directory between the gliner (PyTorch) layout and our native layout."""
    from gliner_jax.checkpoint_io import convert_directory

    print(convert_directory(args.src, args.dst, to=args.to))
    return 0


def _read_texts(args: argparse.Namespace) -> list[str]:
    """Texts from the arguments, else from --file or stdin: plain lines, or JSONL records with a "text" field."""
    if args.texts:
        return args.texts
    lines = Path(args.file).read_text(encoding="utf-8").splitlines() if args.file else sys.stdin.read().splitlines()
    texts = []
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("{"):
            record = json.loads(line)
            if not isinstance(record.get("text"), str):
                raise SystemExit(f"line {number}: a JSON record needs a string 'text' field")
            texts.append(record["text"])
        elif line.strip():
            texts.append(line)
    return texts


def _predict(args: argparse.Namespace) -> int:
    """Predict entities; one JSON line per text: {"text", "entities": [{start, end, text, label, score}]}."""
    from gliner_jax.inference import GLiNER

    model = GLiNER.from_pretrained(args.model)
    texts = _read_texts(args)
    labels = [label.strip() for label in args.labels.split(",")]
    results = model.inference(
        texts,
        labels,
        threshold=args.threshold,
        flat_ner=not args.nested,
        multi_label=args.multi_label,
        batch_size=args.batch_size,
        progress=not args.texts,
    )
    for text, entities in zip(texts, results, strict=True):
        print(json.dumps({"text": text, "entities": entities}, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gliner-jax", description="GLiNER in JAX / Flax NNX.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {gliner_jax.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    encode = commands.add_parser(
        "encode",
        help="run a local Hugging Face DeBERTa-v2/v3 directory through the JAX encoder",
        description="Print one JSON line per text: token count, hidden size, mean token-state norm and, "
        "with --compare-torch, the max difference from transformers' PyTorch DebertaV2Model.",
    )
    encode.add_argument("--model", required=True, help="directory with config.json, weights and tokenizer files")
    encode.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")
    encode.add_argument("--compare-torch", action="store_true", help="also run PyTorch (needs the torch extra)")
    encode.add_argument("texts", nargs="+", help="texts to encode")
    encode.set_defaults(run=_encode)

    convert = commands.add_parser(
        "convert",
        help="convert a GLiNER directory between the gliner (PyTorch) and native JAX layouts",
        description="SRC is a directory written by gliner (pytorch_model.bin or model.safetensors) or by "
        "gliner-jax's native format (flax_params.safetensors); the direction is detected unless --to is given. "
        "Every tensor is checked strictly; tokenizer files are copied.",
    )
    convert.add_argument("src", help="source directory")
    convert.add_argument("dst", help="destination directory (created)")
    convert.add_argument("--to", choices=["torch", "jax"], help="target layout (default: the other one)")
    convert.set_defaults(run=_convert)

    predict = commands.add_parser(
        "predict",
        help="extract entities of the given labels from texts",
        description="Texts come from the arguments, else from --file, else from stdin: plain lines, or JSONL "
        'records with a "text" field. Output: one JSON line per text with its entities (character offsets).',
    )
    predict.add_argument("--model", required=True, help="GLiNER directory (gliner or native format)")
    predict.add_argument("--labels", required=True, help="comma-separated entity labels, e.g. person,organization")
    predict.add_argument("--threshold", type=float, default=0.5, help="score threshold in [0, 1] (default 0.5)")
    predict.add_argument("--nested", action="store_true", help="allow nested entities (no crossing overlaps)")
    predict.add_argument("--multi-label", action="store_true", help="allow several labels for the same span")
    predict.add_argument("--batch-size", type=int, default=8, help="rows per forward pass (default 8)")
    predict.add_argument("--file", help="read texts from this file (plain lines or JSONL)")
    predict.add_argument("texts", nargs="*", help="texts (default: read --file or stdin)")
    predict.set_defaults(run=_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
