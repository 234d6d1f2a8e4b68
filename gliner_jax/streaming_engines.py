"""gliner's two serving surfaces over a streaming span model's sessions (`gliner_jax.streaming.Sessions`):
`StreamingBatch`, a fixed set of sessions fed one chunk per session per call (`create_streaming_batch`), and
`AsyncStreamingEngine`, an asyncio front that gathers appends arriving independently into batches
(`create_async_streaming_engine`).

As in gliner 0.2.29: a streaming batch owns its sessions (apart from the model's), takes one label list for all of
them, and returns every session's entities on each call (a blank chunk changes nothing and returns its session's
entities so far; the first call with any text starts every session). The engine appends to the model's own sessions:
each `append` waits for the previous one of its session, blank text returns [] at once, and the appends queued within
`batch_wait_timeout_ms` of each other (at most `max_batch_size`) run as one call of the sessions, in one worker thread.
Here the sessions of one call run batched by cached length (new ones together), as `Sessions.infer` batches them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gliner_jax.streaming import Sessions


class StreamingBatch:
    """A fixed, ordered set of streaming sessions with one label list (gliner's `StreamingBatch`); a context manager
    that closes it."""

    def __init__(self, sessions: Sessions, session_ids: Sequence[str], labels: Sequence[str]) -> None:
        ids = list(session_ids)
        if not ids or not all(isinstance(value, str) and value for value in ids):
            raise ValueError("session_ids must be a non-empty list of non-empty strings")
        if len(set(ids)) != len(ids):
            raise ValueError("session_ids must be unique within a streaming batch")
        self.labels = tuple(dict.fromkeys(labels))
        if not self.labels:
            raise ValueError("At least one label is required")
        self.session_ids = tuple(ids)
        self._sessions = sessions
        self._closed = False
        self._lock = threading.RLock()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def initialized(self) -> bool:
        """Whether any session of the batch has read text."""
        return any(self._sessions.get(session_id) is not None for session_id in self.session_ids)

    def append(
        self,
        texts: Sequence[str],
        *,
        threshold: float = 0.5,
        flat_ner: bool = True,
        multi_label: bool = False,
        return_class_probs: bool = False,
        recompute: bool = False,
    ) -> list[list[dict[str, Any]]]:
        """Append one chunk per session, in the batch's order, and return every session's entities so far."""
        with self._lock:
            if self._closed:
                raise RuntimeError("StreamingBatch is closed")
            chunks = list(texts)
            if len(chunks) != len(self.session_ids):
                raise ValueError("texts must contain one chunk per session row")
            if not all(isinstance(text, str) for text in chunks):
                raise TypeError("Every streaming chunk must be a string")
            options = dict(threshold=threshold, flat_ner=flat_ner, multi_label=multi_label, recompute=recompute)
            options |= dict(return_class_probs=return_class_probs, batch_size=len(chunks), snapshots=True)
            try:
                return self._sessions.infer(chunks, list(self.labels), list(self.session_ids), **options)
            except BaseException:  # as gliner: a failed call discards the batch's sessions
                self._sessions.clear()
                raise

    def reset(self) -> None:
        """Forget every session's text, keeping the batch open."""
        with self._lock:
            if self._closed:
                raise RuntimeError("StreamingBatch is closed")
            self._sessions.clear()

    def close(self) -> None:
        """Forget the sessions and refuse further appends. Idempotent."""
        with self._lock:
            self._sessions.clear()
            self._closed = True

    def __enter__(self) -> StreamingBatch:
        if self._closed:
            raise RuntimeError("StreamingBatch is closed")
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclasses.dataclass
class _Request:
    """One queued append and the future its caller awaits."""

    text: str
    labels: list[str]
    session_id: str
    options: dict[str, Any]  # threshold, flat_ner, multi_label, return_class_probs, recompute
    future: asyncio.Future


class AsyncStreamingEngine:
    """Appends to a model's streaming sessions from asyncio tasks, gathered into batches (gliner's
    `AsyncStreamingEngine`); an async context manager that closes it."""

    _STOP = object()

    def __init__(
        self,
        sessions: Sessions,
        *,
        max_batch_size: int = 32,
        batch_wait_timeout_ms: float = 2.0,
        queue_capacity: int = 4096,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be positive")
        if batch_wait_timeout_ms < 0:
            raise ValueError("batch_wait_timeout_ms must be non-negative")
        if queue_capacity < 1:
            raise ValueError("queue_capacity must be positive")
        self._sessions = sessions
        self.max_batch_size = int(max_batch_size)
        self.batch_wait_timeout_s = float(batch_wait_timeout_ms) / 1000.0
        self._queue_capacity = queue_capacity
        self._queue: asyncio.Queue | None = None
        self._session_locks: dict[str, asyncio.Lock] = {}
        self._worker_task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._closed = False

    async def start(self) -> AsyncStreamingEngine:
        """Start the scheduler on the running event loop (on first use)."""
        if self._closed:
            raise RuntimeError("AsyncStreamingEngine is closed")
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            raise RuntimeError("AsyncStreamingEngine cannot move between event loops")
        self._loop = loop
        if self._worker_task is None:
            self._queue = asyncio.Queue(maxsize=self._queue_capacity)
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gliner-jax-streaming")
            self._worker_task = loop.create_task(self._worker(), name="gliner-jax-streaming-scheduler")
        return self

    async def append(
        self,
        session_id: str,
        text: str,
        labels: Sequence[str],
        *,
        threshold: float = 0.5,
        flat_ner: bool = True,
        multi_label: bool = False,
        return_class_probs: bool = False,
        recompute: bool = False,
    ) -> list[dict[str, Any]]:
        """Append `text` to the session and return its entities so far (after the session's earlier appends)."""
        if not isinstance(session_id, str) or not session_id:
            raise ValueError("session_id must be a non-empty string")
        if not isinstance(text, str):
            raise TypeError("text must be a string")
        label_list = list(dict.fromkeys(labels))
        if not label_list:
            raise ValueError("At least one label is required")
        if self._closing or self._closed:
            raise RuntimeError("AsyncStreamingEngine is closing or closed")
        await self.start()
        if not text.strip():  # as gliner: no change to the session, no batch slot
            return []
        lock = self._session_locks.setdefault(session_id, asyncio.Lock())
        await lock.acquire()
        future = asyncio.get_running_loop().create_future()
        options = dict(threshold=float(threshold), flat_ner=bool(flat_ner), multi_label=bool(multi_label))
        options |= dict(return_class_probs=bool(return_class_probs), recompute=bool(recompute))
        try:
            await self._queue.put(_Request(text, label_list, session_id, options, future))
        except BaseException:
            lock.release()
            raise
        future.add_done_callback(lambda _: lock.release())
        return await asyncio.shield(future)

    async def stream(
        self, session_id: str, chunks: AsyncIterable[str] | Iterable[str], labels: Sequence[str], **options: Any
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The session's entities after each chunk of a sync or async iterable."""
        if isinstance(chunks, AsyncIterable):
            async for chunk in chunks:
                yield await self.append(session_id, chunk, labels, **options)
            return
        for chunk in chunks:
            yield await self.append(session_id, chunk, labels, **options)

    async def clear_session(self, session_id: str) -> None:
        """Forget a session once its queued appends are done."""
        if not isinstance(session_id, str) or not session_id:
            raise ValueError("session_id must be a non-empty string")
        async with self._session_locks.setdefault(session_id, asyncio.Lock()):
            self._sessions.clear(session_id)

    async def _collect(self, first: _Request) -> list[_Request]:
        """`first` and the requests queued within the wait timeout after it, at most max_batch_size."""
        batch = [first]
        deadline = self._loop.time() + self.batch_wait_timeout_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - self._loop.time()
            try:
                if remaining <= 0:
                    item = self._queue.get_nowait()
                else:
                    item = await asyncio.wait_for(self._queue.get(), timeout=remaining)
            except (asyncio.QueueEmpty, TimeoutError):
                break
            if item is self._STOP:
                self._queue.task_done()
                self._closing = True
                break
            batch.append(item)
        return batch

    def _run(self, batch: list[_Request]) -> list[list[dict] | Exception]:
        """The entities (or error) of each request: requests with the same options run as one call of the sessions,
        in the batch's order."""
        results: list[list[dict] | Exception] = [[] for _ in batch]
        groups: dict[tuple, list[int]] = {}
        for i, request in enumerate(batch):
            groups.setdefault(tuple(sorted(request.options.items())), []).append(i)
        for indices in groups.values():
            options = batch[indices[0]].options
            texts, labels = [batch[i].text for i in indices], [batch[i].labels for i in indices]
            ids = [batch[i].session_id for i in indices]
            try:
                found = self._sessions.infer(
                    texts, labels, ids, batch_size=len(indices), return_exceptions=True, **options
                )
            except Exception as error:  # each caller gets the error of its call
                found = [error] * len(indices)
            for i, result in zip(indices, found, strict=True):
                results[i] = result
        return results

    async def _worker(self) -> None:
        while True:
            item = await self._queue.get()
            if item is self._STOP:
                self._queue.task_done()
                return
            batch = await self._collect(item)
            try:
                outputs = await self._loop.run_in_executor(self._executor, self._run, batch)
            except Exception as error:  # handed to every caller of the batch
                outputs = [error] * len(batch)
            for request, output in zip(batch, outputs, strict=True):
                if not request.future.done():
                    if isinstance(output, Exception):
                        request.future.set_exception(output)
                    else:
                        request.future.set_result(output)
            for _ in batch:
                self._queue.task_done()

    async def close(self) -> None:
        """Finish the queued appends and stop. Idempotent."""
        if self._closed:
            return
        self._closing = True
        if self._worker_task is not None:
            await self._queue.join()
            await self._queue.put(self._STOP)
            await self._worker_task
            self._worker_task = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._closed = True

    async def __aenter__(self) -> AsyncStreamingEngine:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.close()
