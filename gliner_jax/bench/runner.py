"""One engine in a fresh interpreter: its imports, compilation caches and peak memory are its own."""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Callable
from queue import Empty
from typing import Any

PROGRESS_PREFIX = "[bench] "  # the line each finished engine run prints to stderr (device_check reads it)
RATES = ("tokens_per_s", "texts_per_s")  # the speeds of a result dict that the line shows


def _child(target: Callable[..., Any], args: tuple, queue: multiprocessing.Queue) -> None:
    try:
        queue.put(("ok", target(*args)))
    except Exception as error:
        queue.put(("error", f"{type(error).__name__}: {error}"))
        raise


def in_fresh_process(target: Callable[..., Any], *args: Any, name: str | None = None) -> Any:
    """`target(*args)` (a module-level function; arguments and result picklable) in a freshly spawned process: its
    return value; RuntimeError with its error, or its exit code when it dies without a result (killed for memory).
    A finished run prints one `[bench]` line to stderr: its name, seconds and speeds."""
    name = name or target.__name__
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(target, args, queue))
    process.start()
    try:
        while True:
            try:
                status, value = queue.get(timeout=5)
                break
            except Empty:
                if not process.is_alive():
                    raise RuntimeError(f"{name}: exited with code {process.exitcode} and no result") from None
    finally:
        process.join()
    if status == "error":
        raise RuntimeError(f"{name} failed: {value}")
    report(name, time.perf_counter() - start, value)
    return value


def report(name: str, seconds: float, result: Any = None) -> None:
    """Print the `[bench]` line of a finished part of a benchmark to stderr: its name, seconds, and the speeds
    (RATES) of a result dict."""
    rates = [
        f"{result[key]:,.1f} {key.removesuffix('_per_s')}/s"
        for key in RATES
        if isinstance(result, dict) and key in result
    ]
    print(", ".join([f"{PROGRESS_PREFIX}{name}: {seconds:.1f} s", *rates]), file=sys.stderr, flush=True)
