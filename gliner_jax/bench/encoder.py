"""Encoder forward throughput: gliner-jax's DeBERTa against transformers' PyTorch DebertaV2Model.

Both run in one process on the same machine with the same random weights (deberta-v3 shapes)
and the same inputs; the table reports tokens per second of each and their ratio.

    python -m gliner_jax.bench encoder [--sizes small,large] [--batch 8] [--seq 256] [--repeats 3]
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gliner_jax.bench import argument_parser
from gliner_jax.bench.sizes import DEBERTA_V3, deberta_v3
from gliner_jax.checkpoint_io import encoder_table, state_from_torch
from gliner_jax.modeling.encoders.deberta import DebertaModel


def seconds_per_call(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls, after one warm-up call (which also compiles)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_size(name: str, batch: int, seq: int, repeats: int, dtype: str) -> dict:
    """Both encoders of size `name` on one random batch: tokens/s, our first call's seconds, the outputs' gap."""
    import torch
    import transformers

    config = deberta_v3(name)
    hf_config = transformers.DebertaV2Config(**config.to_hf_dict())
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_model = transformers.DebertaV2Model(hf_config).eval().to(device)

    model = DebertaModel(config, dtype=jnp.dtype(dtype), rngs=nnx.Rngs(0))
    tensors = {k: v.detach().cpu().numpy() for k, v in torch_model.state_dict().items()}
    state_from_torch(model, tensors, encoder_table(config))
    model.eval()
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, m))

    rng = np.random.default_rng(0)
    ids = rng.integers(4, config.vocab_size, (batch, seq)).astype(np.int32)
    mask = np.ones((batch, seq), np.int32)
    ids_t, mask_t = torch.from_numpy(ids).long().to(device), torch.from_numpy(mask).long().to(device)
    ids_j, mask_j = jnp.asarray(ids), jnp.asarray(mask)

    def run_torch():
        with torch.inference_mode():
            out = torch_model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    def run_jax():
        return forward(state, ids_j, mask_j).block_until_ready()

    compile_start = time.perf_counter()
    run_jax()
    compile_s = time.perf_counter() - compile_start
    torch_s = seconds_per_call(run_torch, repeats)
    jax_s = seconds_per_call(run_jax, repeats)
    ref, ours = run_torch().float().cpu().numpy(), np.asarray(run_jax(), np.float32)
    return {
        "size": name,
        "torch_tok_s": batch * seq / torch_s,
        "jax_tok_s": batch * seq / jax_s,
        "speedup": torch_s / jax_s,
        "first_call_s": compile_s,
        "max_rel_diff": float(np.abs(ours - ref).max() / np.abs(ref).max()),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark with command-line arguments `argv`."""
    import torch

    parser = argument_parser(__name__, __doc__)
    parser.add_argument("--sizes", default="small,large", help=f"comma-separated, of {sorted(DEBERTA_V3)}")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="our compute dtype")
    args = parser.parse_args(argv)

    device = jax.devices()[0].device_kind
    print(f"jax {jax.__version__} on {device}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"batch {args.batch} x {args.seq} tokens, random weights, jax compute {args.dtype}, torch float32\n")
    header = (
        f"{'size':<7} {'torch tok/s':>12} {'jax tok/s':>12} {'jax/torch':>10} {'jax 1st call s':>15} "
        f"{'max rel diff':>13}"
    )
    print(header)
    print("-" * len(header))
    for name in args.sizes.split(","):
        r = bench_size(name.strip(), args.batch, args.seq, args.repeats, args.dtype)
        print(
            f"{r['size']:<7} {r['torch_tok_s']:>12.0f} {r['jax_tok_s']:>12.0f} {r['speedup']:>9.2f}x "
            f"{r['first_call_s']:>15.1f} {r['max_rel_diff']:>13.1e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
