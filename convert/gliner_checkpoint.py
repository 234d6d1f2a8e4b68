"""Convert a GLiNER checkpoint between gliner's PyTorch layout and gliner-jax's native layout.

    python convert/gliner_checkpoint.py SRC DST [--to torch|jax] [--overwrite]

SRC is a directory written by `gliner.GLiNER.save_pretrained` of any version (model.safetensors or
pytorch_model.bin, legacy layouts included) or by `gliner_jax.GLiNER.save_pretrained(..., native=True)`
(flax_params.safetensors), or a Hugging Face Hub repo id such as urchade/gliner_small-v2.1 (fetched into the
Hugging Face cache, or read from it with HF_HUB_OFFLINE=1). The direction is detected from SRC unless --to is given;
converting to SRC's own layout re-writes it through a strict load (a validation pass). Every tensor is checked against
the model's key table; DST (new or empty; with --overwrite, a model folder replaced whole) gets the complete config
(backbone config embedded) and the tokenizer files. Same as `gliner-jax convert`.
"""

from __future__ import annotations

import argparse

from gliner_jax.checkpoint_io import convert_directory
from gliner_jax.cli import errors_as_one_line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="source GLiNER directory or hub repo id")
    parser.add_argument("dst", help="destination directory (created)")
    parser.add_argument("--to", choices=["torch", "jax"], help="target layout (default: the other one)")
    parser.add_argument("--overwrite", action="store_true", help="replace DST whole if it holds a model")
    args = parser.parse_args(argv)
    with errors_as_one_line():
        print(convert_directory(args.src, args.dst, to=args.to, overwrite=args.overwrite))


if __name__ == "__main__":
    main()
