"""Admission: how many runs an ``Agent`` runs at once, and who waits.

At most ``limit`` runs hold a slot at once; the rest wait their turn, first come first
served. Runs of batches (``batch=True``) may hold at most ``batch_limit`` of the slots:
the other ``limit - batch_limit`` (a quarter, at least one, when ``limit`` > 1) stay for
interactive runs, so a queue of batch tasks never makes a plain run wait behind it for
more than ``batch_limit`` runs already admitted. Callers give a deadline for the wait
(an interactive run's wait is part of its time) or None (a batch's run: its task has
its own timeout); a run that gets no slot by its deadline fails with ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

INTERACTIVE_SHARE: Final = 0.25  # of the slots, that runs of batches never take


def batch_limit_for(limit: int) -> int:
    """The slots runs of batches may hold out of ``limit`` (all of them when ``limit`` is 1)."""
    if limit <= 1:
        return limit
    return limit - max(1, int(limit * INTERACTIVE_SHARE))


class Admission:
    """Run slots (``limit`` None or 0: no limit, nobody waits)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit or None
        self.batch_limit = batch_limit_for(limit) if limit else None
        self._slots = asyncio.Semaphore(limit) if limit else None
        self._batch_slots = asyncio.Semaphore(self.batch_limit) if self.batch_limit else None

    async def _acquire(self, batch: bool) -> None:
        if self._slots is None:
            return
        if batch and self._batch_slots is not None:
            await self._batch_slots.acquire()
        try:
            await self._slots.acquire()
        except BaseException:
            if batch and self._batch_slots is not None:
                self._batch_slots.release()
            raise

    def release(self, *, batch: bool = False) -> None:
        if self._slots is None:
            return
        self._slots.release()
        if batch and self._batch_slots is not None:
            self._batch_slots.release()

    def _free_now(self, batch: bool) -> bool:
        if self._slots is None:
            return True
        if batch and self._batch_slots is not None and self._batch_slots.locked():
            return False
        return not self._slots.locked()

    async def acquire(
        self,
        *,
        deadline: float | None,
        batch: bool = False,
        on_wait: Callable[[], Awaitable[None]] | None = None,
        interval: float = 10.0,
    ) -> None:
        """Take a slot by ``deadline`` (the loop's clock; None: no limit), else
        ``TimeoutError``.

        When the run has to wait, ``on_wait()`` is awaited at once and then every
        ``interval`` seconds while it waits (a stream's keep-alive); the run keeps its
        place in the queue meanwhile. Cancelled or timed out, it holds nothing.
        """
        if on_wait is None or self._free_now(batch):
            async with asyncio.timeout_at(deadline):
                await self._acquire(batch)
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_task(self._acquire(batch), name="agentwatch-admission")
        try:
            while True:
                await on_wait()
                remaining = interval if deadline is None else deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError
                done, _ = await asyncio.wait({waiter}, timeout=min(interval, remaining))
                if done:
                    waiter.result()
                    return
        except BaseException:
            self._abandon(waiter, batch)
            raise

    def _abandon(self, waiter: asyncio.Task[None], batch: bool) -> None:
        """Give back what ``waiter`` took or will take: the caller stopped waiting."""
        if not waiter.done():
            waiter.cancel()  # the semaphores hand a slot granted meanwhile to the next
        elif not waiter.cancelled() and waiter.exception() is None:
            self.release(batch=batch)
