"""Compiled memory of the train step and of DeBERTa attention, ahead of time (nothing is run).

Every program is lowered with abstract inputs (`jax.ShapeDtypeStruct`, parameters from `nnx.eval_shape`) and
compiled for the default backend; the table reports XLA's `memory_analysis()`: temp (the scratch the program needs
beyond its arguments and outputs) and arguments (parameters, optimizer state, batch).

1. `remat`: the whole GLiNER train step (forward, focal loss, backward, clipping, AdamW; encoder layers in a scan,
   or with `--unroll` unrolled as `gliner-jax train` runs them by default; the Trainer's program,
   `training.step.build_train_program`, built abstractly) at deberta-v3-large shapes (24 layers, width 1024;
   `--size` picks another), the 128,004-row vocabulary, span model (hidden 768, max_width 12), batch 8 x 512
   tokens, 384 words, 25 labels, bfloat16 compute, under each remat policy; one more row with bfloat16 parameters
   (float32 master weights in the optimizer state). XLA:CPU drops the optimization barriers that keep unrolled
   recomputation apart from the forward pass, so on CPU only the scan shows what remat saves; GPU and TPU
   compilers keep them until scheduling.
2. `attention`: forward + backward (gradients of parameters and input) of one deberta-v3-large layer at batch 1 in
   train mode (dropout on), float32, at several lengths: the whole-sequence attention against blockwise attention
   (blocks of `query_block` queries).

    python -m gliner_jax.bench memory [--sections remat,attention] [--lengths 512,2048,8192] [--query-block 256]
                                      [--unroll] [--size large]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gliner_jax.bench import argument_parser
from gliner_jax.bench.batches import SYNTHETIC_LABELS, shapes_of, synthetic_batch
from gliner_jax.bench.programs import one_device_program
from gliner_jax.bench.sizes import DEBERTA_V3, deberta_v3, span_gliner
from gliner_jax.modeling.dropout import network_rngs
from gliner_jax.modeling.encoders.deberta import QUERY_BLOCK, DebertaLayerStack
from gliner_jax.modeling.gliner import GLiNERModel
from gliner_jax.modeling.layer_stack import REMAT_POLICIES

BATCH, TOKENS = 8, 512
MIB = 2**20


def compiled_memory(lowered: Callable[[], jax.stages.Lowered]) -> dict[str, float]:
    """MiB of temp and argument buffers of the program that `lowered()` lowers, and the seconds to lower and
    compile it."""
    start = time.perf_counter()
    compiled = lowered().compile()
    seconds = time.perf_counter() - start
    analysis = compiled.memory_analysis()
    return {
        "temp": analysis.temp_size_in_bytes / MIB,
        "arguments": analysis.argument_size_in_bytes / MIB,
        "compile_s": seconds,
    }


def train_step_memory(size: str, remat: str, param_dtype: str, unroll: bool) -> dict[str, float]:
    """Compiled memory of the Trainer's step for the `size` span model under `remat`, built abstractly."""
    config = span_gliner(size)
    model = nnx.eval_shape(lambda: GLiNERModel(config, dtype=jnp.bfloat16, rngs=network_rngs(0)))
    batch = shapes_of(synthetic_batch(BATCH, TOKENS, config.class_token_index, config.max_width, config.max_len))
    program = one_device_program(model, 1000, list(batch), param_dtype=param_dtype, remat=remat, unroll_layers=unroll)
    key = jax.eval_shape(lambda: jax.random.key(0))
    return compiled_memory(lambda: program.step.lower(program.params, program.opt_state, program.stats, batch, key))


def layer_memory(size: str, length: int, blockwise: bool, query_block: int) -> dict[str, float]:
    """Compiled memory of the gradient of one deberta-v3 `size` layer (train mode, float32) at batch 1."""
    config = deberta_v3(size, num_hidden_layers=1)
    stack = nnx.eval_shape(lambda: DebertaLayerStack(config, jnp.float32, nnx.Rngs(0)))
    stack.train()
    stack.set_attributes(blockwise_above=0 if blockwise else None, query_block=query_block)
    graphdef, params, rest = nnx.split(stack, nnx.Param, ...)

    def loss(params: nnx.State, hidden: jax.Array, mask: jax.Array, rest: nnx.State) -> jax.Array:
        layer = nnx.merge(graphdef, params, jax.tree.map(jnp.asarray, rest))
        return layer(hidden, mask).sum()

    def gradients(params: nnx.State, hidden: jax.Array, mask: jax.Array, rest: nnx.State) -> Any:
        return jax.grad(loss, argnums=(0, 1))(params, hidden, mask, rest)

    hidden = jax.ShapeDtypeStruct((1, length, config.hidden_size), jnp.float32)
    mask = jax.ShapeDtypeStruct((1, length), jnp.int32)
    return compiled_memory(lambda: jax.jit(gradients).lower(params, hidden, mask, rest))


def remat_table(size: str, unroll: bool) -> list[str]:
    rows = []
    runs = [(policy, "float32") for policy in REMAT_POLICIES] + [("full", "bfloat16")]
    for policy, param_dtype in runs:
        memory = train_step_memory(size, policy, param_dtype, unroll)
        rows.append((policy, param_dtype, memory))
        print(f"  remat={policy} params={param_dtype}: {memory}", flush=True)
    none = rows[0][2]["temp"]
    words = min(span_gliner(size).max_len, TOKENS - 2 * SYNTHETIC_LABELS - 3)  # synthetic_batch's
    lines = [
        f"Train step, deberta-v3-{size} span GLiNER, batch {BATCH} x {TOKENS} tokens ({words} words, "
        f"{SYNTHETIC_LABELS} labels), bfloat16 compute, layers {'unrolled' if unroll else 'in a scan'}, on "
        f"{jax.devices()[0].device_kind}:",
        "",
        "| remat | params | temp MiB | temp / none | arguments MiB | compile s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for policy, dtype, memory in rows:
        lines.append(
            f"| {policy} | {dtype} | {memory['temp']:,.0f} | {memory['temp'] / none:.0%} | "
            f"{memory['arguments']:,.0f} | {memory['compile_s']:.0f} |"
        )
    return lines


def attention_table(size: str, lengths: Sequence[int], query_block: int) -> list[str]:
    lines = [
        f"One deberta-v3-{size} layer, forward + backward, batch 1, float32, train mode, on "
        f"{jax.devices()[0].device_kind} (blockwise: blocks of {query_block} queries):",
        "",
        "| tokens | whole-sequence temp MiB | blockwise temp MiB | blockwise / whole |",
        "|---:|---:|---:|---:|",
    ]
    for length in lengths:
        whole = layer_memory(size, length, False, query_block)
        blocks = layer_memory(size, length, True, query_block)
        print(f"  T={length}: whole {whole}, blockwise {blocks}", flush=True)
        ratio = blocks["temp"] / whole["temp"]
        lines.append(f"| {length} | {whole['temp']:,.0f} | {blocks['temp']:,.0f} | {ratio:.0%} |")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark with command-line arguments `argv`."""
    parser = argument_parser(__name__, __doc__)
    parser.add_argument("--sections", default="remat,attention")
    parser.add_argument("--size", choices=sorted(DEBERTA_V3), default="large", help="deberta-v3 encoder shapes")
    parser.add_argument("--lengths", default="512,2048,8192")
    parser.add_argument("--query-block", type=int, default=QUERY_BLOCK)
    parser.add_argument("--unroll", action="store_true", help="encoder layers unrolled instead of in a scan")
    args = parser.parse_args(argv)
    sections = args.sections.split(",")
    lines = []
    if "remat" in sections:
        lines += [*remat_table(args.size, unroll=args.unroll), ""]
    if "attention" in sections:
        lines += attention_table(args.size, [int(n) for n in args.lengths.split(",")], args.query_block)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
