"""The largest training batch that fits the device's memory, per encoder remat policy and row length.

For each remat policy this checkout has (`model.remat`: none, dots, full) and each row length T, the train step of a
span GLiNER (forward, focal loss, backward, clipping, AdamW; `make_train_step`, random weights at deberta-v3 shapes,
GLiNER hidden 768, max_width 12, 25 labels, up to 384 words per row) is compiled ahead of time at two batch sizes.
XLA's memory analysis of the program (arguments + outputs + temp, less the donated buffers) grows linearly in the
rows; the line gives the largest batch under the device's memory limit (`bytes_limit`, or `--memory-gb`). That
batch is then compiled and run once on real arrays: "runs" if it does, otherwise one step smaller is tried until
one runs (or `--tries` are spent). The table reports rows x T, XLA's memory of that program and the device's
peak memory in use (the process's peak so far: policies run in the order given).

    python scripts/max_batch.py [--size large] [--dtype bfloat16] [--lengths 512] [--remat none,dots,full]
                                [--probe 4,8] [--scan] [--memory-gb G] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_train import SIZES, remat_policies

GLINER = dict(span_mode="markerV0", hidden_size=768, max_width=12, max_len=384, dropout=0.4)
LABELS, ENTITIES = 25, 32
GIB = 2**30


def synthetic_batch(rows: int, tokens: int, vocab: int, class_token: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A span-model training batch (the `collate` contract) of `rows` rows of `tokens` tokens: [CLS], 25 labels
    (`<<ENT>>` and one token each), [SEP], as many one-token words as fit (at most max_len), [SEP]."""
    rng = np.random.default_rng(seed)
    width, prompt = GLINER["max_width"], 2 * LABELS + 2
    words = min(GLINER["max_len"], tokens - prompt - 1)
    if words < 1:
        raise ValueError(f"rows of {tokens} tokens leave no room for words beside {LABELS} labels")
    input_ids = rng.integers(4, class_token, (rows, tokens)).astype(np.int32)
    input_ids[:, 1 : prompt - 1 : 2] = class_token
    attention_mask = np.zeros((rows, tokens), np.int32)
    attention_mask[:, : prompt + words + 1] = 1
    words_mask = np.zeros((rows, tokens), np.int32)
    words_mask[:, prompt : prompt + words] = np.arange(1, words + 1)
    starts = np.repeat(np.arange(words), width)
    ends = starts + np.tile(np.arange(width), words)
    span_mask = np.broadcast_to(ends < words, (rows, words * width))
    span_idx = np.where(span_mask[..., None], np.stack([starts, ends], -1), 0).astype(np.int32)
    first = rng.integers(0, max(1, words - 3), (rows, ENTITIES))
    last = np.minimum(first + rng.integers(0, 3, (rows, ENTITIES)), words - 1)
    entities = np.stack([first, last, rng.integers(1, LABELS + 1, (rows, ENTITIES))], axis=-1).astype(np.int32)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "words_mask": words_mask,
        "words_valid": np.ones((rows, words), bool),
        "labels_valid": np.ones((rows, LABELS), bool),
        "span_idx": span_idx,
        "span_mask": np.ascontiguousarray(span_mask),
        "entities": entities,
    }


class StepProgram:
    """The jitted train step of one remat policy, compiled per batch shape, and real parameters to run it on."""

    def __init__(self, size: str, dtype: str, remat: str, scan: bool):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        from gliner_jax.config import GLiNERConfig
        from gliner_jax.modeling.encoders.deberta import DebertaConfig
        from gliner_jax.modeling.gliner import GLiNERModel
        from gliner_jax.training.loss import LossConfig
        from gliner_jax.training.optim import OptimizerConfig, make_optimizer
        from gliner_jax.training.trainer import make_train_step

        encoder = DebertaConfig.from_hf_dict({**SIZES[size], "vocab_size": 128004})
        self.config = GLiNERConfig(**GLINER, encoder_config=encoder, vocab_size=128004, class_token_index=128001)

        def network() -> tuple[Any, Any, Any]:
            model = GLiNERModel(self.config, dtype=jnp.dtype(dtype), rngs=nnx.Rngs(0))
            model.train()
            model.set_attributes(unroll_layers=not scan)
            if remat != "none":
                model.set_attributes(remat=remat)
            return nnx.split(model, nnx.Param, ...)

        graphdef, params, self.rest = network()
        tx = make_optimizer(OptimizerConfig(num_steps=1000, encoder_lr=1e-5, others_lr=5e-5), params)
        self.network, self.init = network, jax.jit(tx.init)
        self.state = (params, self.init(params))
        loss = LossConfig(alpha=0.75, reduction="sum")

        def step(params: Any, opt_state: Any, batch: dict, key: jax.Array, rest: Any) -> Any:
            return make_train_step(graphdef, rest, tx, loss)(params, opt_state, batch, key)

        self.step = jax.jit(step, donate_argnums=(0, 1))
        self.key = jax.random.key(0)

    def batch(self, rows: int, tokens: int) -> dict[str, np.ndarray]:
        return synthetic_batch(rows, tokens, self.config.vocab_size, self.config.class_token_index)

    def compile(self, rows: int, tokens: int) -> tuple[Any, float]:
        """The compiled step for `rows` x `tokens` and its memory per XLA (bytes): arguments + outputs + temp,
        less what the outputs reuse of the donated arguments (parameters and optimizer state)."""
        compiled = self.step.lower(*self.state, self.batch(rows, tokens), self.key, self.rest).compile()
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
        (out of memory) they are built afresh."""
        import jax

        state, self.state = self.state, None
        try:
            params, opt_state, _ = jax.block_until_ready(
                compiled(*state, self.batch(rows, tokens), self.key, self.rest)
            )
        except Exception:
            del state
            params = self.network()[1]
            self.state = (params, self.init(params))
            raise
        self.state = (params, opt_state)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="large", help="deberta-v3 encoder shapes")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16", help="compute dtype")
    parser.add_argument("--lengths", default="512", help="tokens per row, comma-separated")
    parser.add_argument("--remat", default="none,dots,full", help="encoder remat policies, comma-separated")
    parser.add_argument("--probe", default="4,8", help="the two batch sizes that fit the memory line")
    parser.add_argument("--scan", action="store_true", help="encoder layers in a scan (faster to compile)")
    parser.add_argument("--memory-gb", type=float, default=None, help="memory limit (default: the device's)")
    parser.add_argument("--tries", type=int, default=3, help="runs before giving up on a policy and length")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()

    policies, missing = remat_policies(args.remat.split(","))
    if missing:
        print(f"remat policies {missing} are not in this checkout (gliner_jax.modeling.layer_stack); skipped")
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
