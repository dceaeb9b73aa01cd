"""frames.py: a failed run's finished frames let go of their locals; a coroutine still
suspended in an ``except`` block keeps going."""

from __future__ import annotations

import asyncio
import traceback

from agentwatch.runtime.agents.frames import release_frames


class Kept:
    """A local of a frame the error passed through."""


def fail(kept: Kept) -> None:
    results = [kept]
    error = ValueError("no")
    results.append(error)  # the frame keeps its own error: a reference cycle
    raise error


def test_finished_frames_let_go_of_their_locals_and_keep_their_lines() -> None:
    try:
        fail(Kept())
    except ValueError as exc:
        release_frames(exc)
        frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
        text = "".join(traceback.format_exception(exc))
    assert frames[-1].f_code is fail.__code__
    assert frames[-1].f_locals == {}
    assert "raise error" in text  # the line stays in the traceback


class Breaker:
    """Raises the one error it keeps, again: each raiser's frames join its traceback."""

    error: BaseException | None = None

    async def call(self) -> None:
        if self.error is not None:
            raise self.error
        self.error = ConnectionError("upstream down")
        raise self.error


async def test_a_coroutine_suspended_in_its_except_block_is_not_closed() -> None:
    breaker = Breaker()
    waiting = asyncio.Event()
    resumed = False

    async def suspended() -> None:
        nonlocal resumed
        try:
            await breaker.call()
        except ConnectionError:
            waiting.set()
            await asyncio.sleep(0.05)  # as LangChain awaits on_llm_error
            resumed = True
            raise

    async def releasing() -> None:
        await waiting.wait()
        try:
            await breaker.call()
        except ConnectionError as exc:
            release_frames(exc)  # its traceback has the suspended one's frames too

    first = asyncio.create_task(suspended())
    await asyncio.wait_for(releasing(), 5)
    done, _ = await asyncio.wait([first], timeout=5)
    assert done, "the suspended coroutine never finished"
    assert isinstance(first.exception(), ConnectionError)
    assert resumed
