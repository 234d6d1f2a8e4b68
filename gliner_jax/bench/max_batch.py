"""The largest training batch that fits the device's memory, per encoder remat policy and row length.

For each remat policy this checkout has (`model.remat`: none, dots, full) and each row length T, the train step of a
span GLiNER (forward, focal loss, backward, clipping, AdamW; the Trainer's program, `build_train_program`, random
weights at deberta-v3 shapes,
GLiNER hidden 768, max_width 12, 25 labels, up to 384 words per row) is compiled ahead of time at two batch sizes.
XLA's memory analysis of the program (arguments + outputs + temp, less the donated buffers) grows linearly in the
rows; the line gives the largest batch under the device's memory limit (`bytes_limit`, or `--memory-gb`). That
batch is then compiled and run once on real arrays: "runs" if it does, otherwise one step smaller is tried until
one runs (or `--tries` are spent). The table reports rows x T, XLA's memory of that program and the device's
peak memory in use (the process's peak so far: policies run in the order given).

    python -m gliner_jax.bench max_batch [--size large] [--dtype bfloat16] [--lengths 512] [--remat none,dots,full]
                                         [--probe 4,8] [--scan] [--memory-gb G] [--json PATH]
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gliner_jax.bench import argument_parser
from gliner_jax.bench.batches import synthetic_batch
from gliner_jax.bench.programs import one_device_program, remat_policies
from gliner_jax.bench.sizes import span_gliner
from gliner_jax.bench.train import SIZES

GIB = 2**30


class StepProgram:
    """The Trainer's train step of one remat policy, compiled per batch shape, and real parameters to run it on."""

    def __init__(self, size: str, dtype: str, remat: str, scan: bool):
        self.config, self.dtype, self.remat, self.scan = span_gliner(size), dtype, remat, scan
        self.reset()

    def reset(self) -> None:
        """A fresh model, train state and step."""
        import jax
        import jax.numpy as jnp

        from gliner_jax.modeling.dropout import network_rngs
        from gliner_jax.modeling.gliner import GLiNERModel

        model = GLiNERModel(self.config, dtype=jnp.dtype(self.dtype), rngs=network_rngs(0))
        names = list(self.batch(1, 128))
        self.program = one_device_program(model, 1000, names, remat=self.remat, unroll_layers=not self.scan)
        self.state = (self.program.params, self.program.opt_state, self.program.stats)
        self.key = jax.random.key(0)

    def batch(self, rows: int, tokens: int) -> dict[str, np.ndarray]:
        config = self.config
        return synthetic_batch(rows, tokens, config.class_token_index, config.max_width, config.max_len)

    def compile(self, rows: int, tokens: int) -> tuple[Any, float]:
        """The compiled step for `rows` x `tokens` and its memory per XLA (bytes): arguments + outputs + temp,
        less what the outputs reuse of the donated arguments (parameters and optimizer state)."""
        compiled = self.program.step.lower(*self.state, self.batch(rows, tokens), self.key).compile()
        memory = compiled.memory_analysis()
        total = (
            memory.argument_size_in_bytes
            + memory.output_size_in_bytes
            + memory.temp_size_in_bytes
            - memory.alias_size_in_bytes
        )
        return compiled, float(total)

    def run(self, compiled: Any, rows: int, tokens: int) -> None:
        """One step on real arrays, which takes over the parameters and optimizer state it donates; when it fails
        (out of memory) the model and state are built afresh."""
        import jax

        state, self.state = self.state, None
        try:
            *state, _ = jax.block_until_ready(compiled(*state, self.batch(rows, tokens), self.key))
        except Exception:
            del state
            self.reset()
            raise
        self.state = tuple(state)


def device_limit(memory_gb: float | None) -> tuple[float, str]:
    """The device's memory limit in bytes (or `memory_gb`) and its name."""
    import jax

    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    if memory_gb is not None:
        return memory_gb * GIB, device.device_kind
    if "bytes_limit" not in stats:
        raise SystemExit(f"{device.device_kind} reports no memory limit; pass --memory-gb")
    return float(stats["bytes_limit"]), device.device_kind


def peak_bytes() -> float | None:
    import jax

    return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")


def largest_batch(program: StepProgram, tokens: int, probe: tuple[int, int], limit: float, tries: int) -> dict:
    """The largest rows that run at `tokens` per row, from the memory line through the two `probe` batch sizes."""
    (small, small_bytes), (large, large_bytes) = ((rows, program.compile(rows, tokens)[1]) for rows in probe)
    per_row = (large_bytes - small_bytes) / (large - small)
    fixed = small_bytes - small * per_row
    rows = max(1, int((limit - fixed) // per_row))
    result = {"tokens": tokens, "per_row_gib": per_row / GIB, "fixed_gib": fixed / GIB, "predicted_rows": rows}
    for _ in range(tries):
        try:
            compiled, predicted = program.compile(rows, tokens)
            start = time.perf_counter()
            program.run(compiled, rows, tokens)
            peak = peak_bytes()
            return result | {
                "rows": rows,
                "runs": True,
                "step_s": time.perf_counter() - start,
                "predicted_gib": predicted / GIB,
                "peak_gib": None if peak is None else peak / GIB,
            }
        except Exception as error:  # XLA reports running out of memory as a runtime error
            result["last_error"] = f"{type(error).__name__}: {str(error)[:200]}"
            rows = max(1, rows - max(1, rows // 16))
    return result | {"rows": rows, "runs": False}


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark with command-line arguments `argv`."""
    parser = argument_parser(__name__, __doc__)
    parser.add_argument("--size", choices=SIZES, default="large", help="deberta-v3 encoder shapes")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16", help="compute dtype")
    parser.add_argument("--lengths", default="512", help="tokens per row, comma-separated")
    parser.add_argument("--remat", default="none,dots,full", help="encoder remat policies, comma-separated")
    parser.add_argument("--probe", default="4,8", help="the two batch sizes that fit the memory line")
    parser.add_argument("--scan", action="store_true", help="encoder layers in a scan (faster to compile)")
    parser.add_argument("--memory-gb", type=float, default=None, help="memory limit (default: the device's)")
    parser.add_argument("--tries", type=int, default=3, help="runs before giving up on a policy and length")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)

    policies = remat_policies(args.remat)
    limit, device_kind = device_limit(args.memory_gb)
    probe = tuple(int(n) for n in args.probe.split(","))
    results = []
    for policy in policies:
        program = StepProgram(args.size, args.dtype, policy, args.scan)
        for tokens in (int(n) for n in args.lengths.split(",")):
            start = time.perf_counter()
            result = {"remat": policy, **largest_batch(program, tokens, probe, limit, args.tries)}
            result["seconds"] = time.perf_counter() - start
            print(json.dumps(result), flush=True)
            results.append(result)
        del program

    print(
        f"\ndeberta-v3-{args.size} span GLiNER train step, {args.dtype} compute, layers "
        f"{'in a scan' if args.scan else 'unrolled'}, on {device_kind} with {limit / GIB:.1f} GiB\n"
    )
    print("| remat | rows x tokens | runs | predicted GiB | peak GiB | GiB per row | step s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        peak = "-" if r.get("peak_gib") is None else f"{r['peak_gib']:.1f}"
        predicted = f"{r['predicted_gib']:.1f}" if "predicted_gib" in r else "-"
        step = f"{r['step_s']:.2f}" if "step_s" in r else "-"
        print(
            f"| {r['remat']} | {r['rows']} x {r['tokens']} | {'yes' if r['runs'] else 'no'} | {predicted} | {peak} | "
            f"{r['per_row_gib']:.3f} | {step} |"
        )
    if args.json:
        summary = {"size": args.size, "dtype": args.dtype, "device_kind": device_kind, "limit_gib": limit / GIB}
        Path(args.json).write_text(json.dumps(summary | {"results": results}, indent=1))


if __name__ == "__main__":
    main()
