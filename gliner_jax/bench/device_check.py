"""The accelerator check behind scripts/device_check.sh (`python -m gliner_jax.bench device_check`): each step in
a subprocess under a shared deadline, then one markdown table (one row per step) to stdout and OUT/device_check.md;
every step's output goes to OUT/device_check.log. Each step has a share of the deadline (520 s on the GPU, 1800 s
for the CPU dry run) plus what the steps before it left unused; a step past its time is stopped and reported as
timed out, with what it had finished (its benchmark engines' `[bench]` lines, its passed tests).

Steps, most telling first (GPU / `--cpu-dry-run` toy sizes on the CPU):
1. env: versions of the libraries and the device;
2. train: the train benchmark --size large --dtype bfloat16, span model, one run of gliner and one of ours
   (`gliner-jax train`'s default remat policy; the dry run: every policy): tokens/s, MFU, peak device memory;
3. inference: the inference benchmark, both libraries on the device (float32, full precision);
4. parity: one encoder, one GLiNER (network and gradients) and one packed-batch parity test (transformers / gliner in
   float32 on the CPU against ours on the device, float32 with full-precision matrix products:
   JAX_DEFAULT_MATMUL_PRECISION=highest);
5. bf16: bfloat16 compute against the float32 reference (encoder within 2% relative L2, GLiNER logits within 3%);
6. max_batch: the largest batch of 512-token rows whose train step runs, remat none and full.

Run from a source checkout (the parity steps run its tests/):

    python -m gliner_jax.bench device_check --out DIR [--cpu-dry-run] [--deadline-s 520] [--only train,max_batch]
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from gliner_jax.bench import argument_parser
from gliner_jax.bench.runner import PROGRESS_PREFIX

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
HIGHEST = {"JAX_DEFAULT_MATMUL_PRECISION": "highest"}
ENV_PROBE = """
import importlib.metadata as m, platform, jax
names = ["jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "torch", "transformers", "gliner", "numpy"]
versions = {}
for name in names:
    try:
        versions[name] = m.version(name)
    except m.PackageNotFoundError:
        versions[name] = "missing"
device = jax.devices()[0]
memory = (device.memory_stats() or {}).get("bytes_limit")
print("RESULT " + ", ".join(f"{k} {v}" for k, v in versions.items()) + f"; python {platform.python_version()}; "
      + f"{len(jax.devices())} x {device.device_kind} ({jax.default_backend()})"
      + (f", {memory / 2**30:.1f} GiB" if memory else ""))
"""


@dataclasses.dataclass
class Step:
    """One check: a command (run in the repository root), its share of the deadline, how to summarise its JSON
    output."""

    name: str
    what: str
    command: list[str]
    budget_s: float
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    summarise: Callable[[dict], str] | None = None  # reads the step's --json file
    json_path: Path | None = None


def pytest_step(name: str, what: str, selection: list[str], budget_s: float, env: dict[str, str]) -> Step:
    command = [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", *selection]
    return Step(name, what, command, budget_s, env)


def summarise_inference(data: dict) -> str:
    rows = []
    for mode, r in data["modes"].items():
        ratio = r["jax_texts_per_s"] / r["torch_texts_per_s"]
        rows.append(
            f"{mode}: jax {r['jax_texts_per_s']:.1f} vs gliner {r['torch_texts_per_s']:.1f} texts/s ({ratio:.2f}x), "
            f"same entities {r['same_entities']} ({r['entities']})"
        )
    return "<br>".join(rows)


def summarise_train(data: dict) -> str:
    rows = []
    for mode, runs in data["runs"].items():
        torch_run = runs["torch"]
        rows.append(
            f"{mode} gliner: {torch_run['tokens_per_s']:,.0f} tok/s, MFU {percent(torch_run.get('mfu'))}, "
            f"{megabytes(torch_run.get('peak_device_mb'))}"
        )
        for key, run in runs.items():
            if key.startswith("jax"):
                rows.append(
                    f"{mode} jax remat={key.partition(':')[2] or 'none'}: {run['tokens_per_s']:,.0f} tok/s "
                    f"({run['tokens_per_s'] / torch_run['tokens_per_s']:.2f}x), MFU {percent(run.get('mfu'))}, "
                    f"{megabytes(run.get('peak_device_mb'))}, loss {run['first_loss']:.3f} "
                    f"(gliner {torch_run['first_loss']:.3f})"
                )
    return "<br>".join(rows)


def summarise_max_batch(data: dict) -> str:
    rows = []
    for r in data["results"]:
        peak = f", peak {r['peak_gib']:.1f} GiB" if r.get("peak_gib") is not None else ""
        runs = "runs" if r["runs"] else "does not run"
        rows.append(f"remat={r['remat']}: {r['rows']} x {r['tokens']} {runs}{peak}, {r['per_row_gib']:.3f} GiB/row")
    return "<br>".join(rows) + f"<br>(limit {data['limit_gib']:.1f} GiB)"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def megabytes(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} MB"


def steps(dry_run: bool, out: Path) -> list[Step]:
    """The steps, at GPU sizes or toy sizes for the CPU dry run."""
    device = ["--device", "cpu"] if dry_run else ["--device", "gpu"]
    encoders, model = "tests/parity/test_encoder_families_vs_transformers.py", "tests/parity/test_model_vs_gliner.py"
    # One test of each kind (the encoder, the GLiNER network with its gradients, the packed batch): the whole parity
    # tier compiles too many programs for a lease (46 float32 tests took 119 s on an H100).
    parity = [
        f"{encoders}::test_parity_with_transformers[deberta-v3]",
        f"{model}::test_training_network_matches_reference[span_projection_rnn1]",
        "tests/parity/test_packing_vs_gliner.py::test_packed_loss_equals_unpacked_and_gliner_loss[markerV0]",
    ]
    bf16 = [
        f"{encoders}::test_bfloat16_compute_close_to_float32[deberta-v2]",
        f"{model}::test_bfloat16_compute_close_to_reference[span_projection_rnn1]",
    ]
    inference = ["--size", "toy", "--texts", "8", "--batch-size", "4", "--modes", "markerV0"] if dry_run else []
    toy_train = ["--size", "toy", "--batch-size", "2", "--vocab-size", "0", "--steps", "1"]
    train = toy_train if dry_run else ["--size", "large", "--steps", "5"]
    # On the GPU one remat policy (`gliner-jax train`'s default): each policy is a compilation of the large model.
    train += ["--dtype", "bfloat16", "--modes", "markerV0", "--batches", "1"]
    train += ["--remat", "none,dots,full" if dry_run else "none"]
    train += ["--json", str(out / "train.json")]
    max_batch = ["--size", "large", "--dtype", "bfloat16", "--lengths", "512", "--scan"]
    if dry_run:
        max_batch = ["--size", "toy", "--dtype", "bfloat16", "--lengths", "128", "--scan", "--probe", "1,2"]
        max_batch += ["--memory-gb", "0.25"]
    max_batch += ["--remat", "none,full"]  # the two ends of the trade
    bench = [PYTHON, "-u", "-m", "gliner_jax.bench"]
    # Most telling first (a lease can end early): training speed and memory, inference speed, then correctness on the
    # device, then the largest batch. Budgets are shares of the deadline.
    return [
        Step("env", "versions and device", [PYTHON, "-c", ENV_PROBE], 30),
        Step(
            "train",
            "train benchmark, bfloat16, per remat policy",
            [*bench, "train", *device, *train],
            200,
            {},
            summarise_train,
            out / "train.json",
        ),
        Step(
            "inference",
            "inference benchmark, both libraries, float32",
            [*bench, "inference", *device, *inference, "--json", str(out / "inference.json")],
            120,
            HIGHEST,
            summarise_inference,
            out / "inference.json",
        ),
        pytest_step("parity", "float32 parity tests (encoder, GLiNER, packing)", parity, 60, HIGHEST),
        pytest_step("bf16", "bfloat16 against float32 (encoder 2%, GLiNER 3%)", bf16, 40, {}),
        Step(
            "max_batch",
            "max_batch: largest batch that runs, per remat policy",
            [*bench, "max_batch", *max_batch, "--json", str(out / "max.json")],
            90,
            {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.95"},
            summarise_max_batch,
            out / "max.json",
        ),
    ]


def run_step(step: Step, budget_s: float, log: TextIO) -> tuple[str, float, str]:
    """Run one step within `budget_s`, its output appended to `log`; (status, seconds, result summary). The step runs
    in a process group of its own, killed whole when it ends or times out: a benchmark's engine subprocess left
    behind would hold the device's memory through the steps after it."""
    log.write(f"\n===== {step.name}: {' '.join(step.command)}\n")
    log.flush()
    offset = os.path.getsize(log.name)
    start = time.perf_counter()
    process = subprocess.Popen(
        step.command,
        cwd=ROOT,
        env=os.environ | step.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        returncode = process.wait(timeout=budget_s)
    except subprocess.TimeoutExpired:
        returncode = None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    seconds = time.perf_counter() - start
    output = Path(log.name).read_bytes()[offset:].decode(errors="replace")
    lines = [line for line in output.splitlines() if line.strip()]
    if returncode is None:
        return "timed out", seconds, "<br>".join([f"stopped after {budget_s:.0f} s", *progress(lines)])
    if returncode != 0:
        return "failed", seconds, (lines[-1] if lines else f"exit code {returncode}")[:300]
    if step.summarise is not None and step.json_path is not None and step.json_path.exists():
        return "ok", seconds, step.summarise(json.loads(step.json_path.read_text()))
    results = [line.removeprefix("RESULT ") for line in lines if line.startswith("RESULT ")]
    return "ok", seconds, (results or lines[-1:] or [""])[0]


def progress(lines: list[str]) -> list[str]:
    """What a stopped step had finished: its benchmark engines' `[bench]` lines and pytest's count of passed tests."""
    done = [line for line in lines if line.startswith(PROGRESS_PREFIX)]
    marks = [line.split("[")[0].strip() for line in lines]  # pytest -q: "....s..   [ 40%]"
    dots = sum(mark.count(".") for mark in marks if mark and set(mark) <= set(".sxXFE"))
    return done + ([f"{dots} tests passed"] if dots else [])


def main(argv: Sequence[str] | None = None) -> None:
    """Run the check with command-line arguments `argv`; exits 1 unless every step is ok."""
    parser = argument_parser(__name__, __doc__)
    parser.add_argument("--out", required=True, help="folder for device_check.md and device_check.log")
    parser.add_argument("--cpu-dry-run", action="store_true", help="the same steps at toy sizes on the CPU")
    parser.add_argument("--deadline-s", type=float, default=520, help="all steps together (default: 520)")
    parser.add_argument("--only", default=None, help="comma-separated step names to run")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = steps(args.cpu_dry_run, out)
    if args.only:
        chosen = [step for step in chosen if step.name in args.only.split(",")]
    # Budgets are shares of the deadline: each step may use its share plus what the steps before it left unused,
    # so that a slow step never takes the time of the ones after it.
    scale = args.deadline_s / sum(step.budget_s for step in chosen)
    deadline = time.monotonic() + args.deadline_s
    rows = []
    (out / "device_check.log").write_text("")
    with (out / "device_check.log").open("a") as log:  # appended to by each step's process too
        for index, step in enumerate(chosen):
            later = scale * sum(s.budget_s for s in chosen[index + 1 :])
            budget = deadline - time.monotonic() - later
            if budget < 10:
                rows.append((step, "skipped", 0.0, "no time left under the deadline"))
                continue
            status, seconds, result = run_step(step, budget, log)
            rows.append((step, status, seconds, result))
            print(f"{step.name}: {status} in {seconds:.0f} s", file=sys.stderr, flush=True)
    kind = "CPU dry run (toy sizes)" if args.cpu_dry_run else "accelerator"
    lines = [
        f"gliner-jax device check, {kind}, {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        "| step | what | status | s | result |",
        "|---|---|---|---:|---|",
    ]
    lines += [f"| {s.name} | {s.what} | {status} | {sec:.0f} | {result} |" for s, status, sec, result in rows]
    table = "\n".join(lines) + "\n"
    (out / "device_check.md").write_text(table)
    print(table)
    sys.exit(0 if all(status == "ok" for _, status, _, _ in rows) else 1)


if __name__ == "__main__":
    main()
