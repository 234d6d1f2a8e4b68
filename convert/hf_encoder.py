"""Re-write a Hugging Face encoder directory as a base model that gliner-jax and transformers load exactly.

    python convert/hf_encoder.py SRC DST [--overwrite]

SRC (a directory, or a Hugging Face Hub repo id such as microsoft/deberta-v3-small) holds config.json and
model.safetensors or pytorch_model.bin of an encoder gliner-jax implements (its `model_type` is registered in
`gliner_jax.modeling.encoders`), as the base model or inside a task model such as `DebertaV2ForMaskedLM` (the head is
dropped). DST gets config.json and model.safetensors of the base model, every tensor checked strictly on the way, and
SRC's tokenizer files: a directory for `model.encoder=DST` in a run config. DST must be new or empty (with --overwrite,
an encoder folder, replaced whole); it is written beside its place and renamed there when complete.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from gliner_jax.checkpoint_io import TOKENIZER_FILES, check_new_folder, load_hf_encoder, new_folder, save_hf_encoder
from gliner_jax.cli import errors_as_one_line
from gliner_jax.hub import CONFIG_FILE, ENCODER_PATTERNS, resolve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="Hugging Face encoder directory or hub repo id")
    parser.add_argument("dst", type=Path, help="destination directory (created; an existing one must be empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace DST whole if it holds a config.json")
    args = parser.parse_args(argv)
    with errors_as_one_line():
        check_new_folder(args.dst, args.overwrite, CONFIG_FILE)
        src = resolve(args.src, ENCODER_PATTERNS)
        encoder, config = load_hf_encoder(src)
    copied = [name for name in TOKENIZER_FILES if (src / name).exists()]
    with new_folder(args.dst, overwrite=args.overwrite, model_file=CONFIG_FILE) as folder:
        save_hf_encoder(encoder, config, folder)
        for name in copied:
            shutil.copy2(src / name, folder / name)
    print(f"wrote {args.dst}: {type(encoder).__name__}, tokenizer files: {', '.join(copied) or 'none'}")


if __name__ == "__main__":
    main()
