"""One engine in a fresh interpreter: its imports, compilation caches and peak memory are its own."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from queue import Empty
from typing import Any


def _child(target: Callable[..., Any], args: tuple, queue: multiprocessing.Queue) -> None:
    try:
        queue.put(("ok", target(*args)))
    except Exception as error:
        queue.put(("error", f"{type(error).__name__}: {error}"))
        raise


def in_fresh_process(target: Callable[..., Any], *args: Any, name: str | None = None) -> Any:
    """`target(*args)` (a module-level function; arguments and result picklable) in a freshly spawned process: its
    return value; RuntimeError with its error, or its exit code when it dies without a result (killed for memory)."""
    name = name or target.__name__
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
    return value
