"""Convert a GLiNER checkpoint directory: same as `gliner-jax convert SRC DST [--to torch|jax]`."""

import sys

from gliner_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
