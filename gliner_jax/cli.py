"""`gliner-jax` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
