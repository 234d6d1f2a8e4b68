"""Convert a GLiNER checkpoint directory between gliner's PyTorch layout and gliner-jax's native layout.

    python convert/gliner_checkpoint.py SRC DST [--to torch|jax]

SRC is a directory written by `gliner.GLiNER.save_pretrained` (model.safetensors or pytorch_model.bin) or by
`gliner_jax.GLiNER.save_pretrained(..., native=True)` (flax_params.safetensors). The direction is detected from SRC
unless --to is given; converting to SRC's own layout re-writes it through a strict load (a validation pass). Every
tensor is checked against the model's key table; tokenizer files are copied. Same as `gliner-jax convert`.
"""

from __future__ import annotations

import argparse

from gliner_jax.checkpoint_io import convert_directory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="source GLiNER directory")
    parser.add_argument("dst", help="destination directory (created)")
    parser.add_argument("--to", choices=["torch", "jax"], help="target layout (default: the other one)")
    args = parser.parse_args(argv)
    print(convert_directory(args.src, args.dst, to=args.to))


if __name__ == "__main__":
    main()
