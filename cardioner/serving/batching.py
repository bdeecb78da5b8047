"""Gather concurrent requests into one model call, run off the event loop.

Requests wait in a queue; a collector takes the first, keeps taking more for at most ``max_wait_ms`` (or until
``max_batch_size`` documents are gathered), and runs them as one call in a single worker thread. While a call
runs, the next requests queue up and go together in the next one, so under load the batches fill by
themselves and an idle server answers a lone request after ``max_wait_ms``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cardioner.data.document import Document

logger = logging.getLogger("cardioner")


@dataclass
class _Request:
    docs: list[Document]
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """A queue in front of ``predict`` (documents in, documents out, in order).

    Args:
        predict: the blocking prediction function; called from one worker thread, one batch at a time.
        max_batch_size: the most documents gathered into one call (a larger request runs alone, whole).
        max_wait_ms: how long the first request of a batch waits for others.
    """

    def __init__(self, predict: Callable[[list[Document]], list[Document]], max_batch_size: int = 64,
                 max_wait_ms: float = 5.0):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.batches = 0  # model calls made
        self.documents = 0  # documents predicted
        self._queue: asyncio.Queue[_Request] | None = None
        self._collector: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start the collector (in the running event loop)."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cardioner-predict")
        self._collector = asyncio.create_task(self._collect())

    async def stop(self) -> None:
        """Stop the collector; requests still queued are cancelled."""
        if self._collector is not None:
            self._collector.cancel()
            try:
                await self._collector
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():
            self._queue.get_nowait().future.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    @property
    def waiting(self) -> int:
        """Requests waiting for the next batch."""
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, docs: list[Document]) -> list[Document]:
        """Queue ``docs`` and wait for their predictions."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.submit() before start()")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(docs, future))
        return await future

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        held: _Request | None = None  # a request that did not fit the last batch: it starts the next one
        while True:
            first = held if held is not None else await self._queue.get()
            held = None
            batch, size = [first], len(first.docs)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch_size:
                try:
                    if self._queue.empty():
                        remaining = deadline - loop.time()
                        if remaining <= 0:
                            break
                        request = await asyncio.wait_for(self._queue.get(), remaining)
                    else:
                        request = self._queue.get_nowait()
                except asyncio.TimeoutError:
                    break
                if size + len(request.docs) > self.max_batch_size:
                    held = request
                    break
                batch.append(request)
                size += len(request.docs)
            await self._run(loop, [request for request in batch if not request.future.done()])

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Request]) -> None:
        if not batch:
            return
        docs = [doc for request in batch for doc in request.docs]
        try:
            predicted = await loop.run_in_executor(self._executor, self.predict, docs)
        except Exception as error:  # each waiting request gets the error; the collector goes on
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(error)
            return
        self.batches += 1
        self.documents += len(docs)
        start = 0
        for request in batch:
            part = predicted[start : start + len(request.docs)]
            start += len(request.docs)
            if not request.future.done():  # the client may have gone
                request.future.set_result(part)
