"""A failed run lets go of what its frames held, so that reference counting frees it.

A run's error carries a traceback of every frame it passed through, and some of those
frames keep the error in their locals: LangChain's ``BaseChatModel.agenerate`` in the
results it gathered with ``return_exceptions=True``, LangGraph's task loop in the failed
task's writes. Error -> traceback -> frame -> error is a reference cycle, and with it
goes everything those frames reach: the whole run, its spans, messages and callback
managers, hundreds of objects a failed run (~1,200 in section 11f), promoted to the old
generation by the time the model answered. Only a full collection frees them. Under a
model that fails every call (500s, 400 clients, ~60 failed runs a second; RESULTS.md
section 11f), after 30 s a full collection still found 670,000-890,000 objects of failed
runs waiting, resident memory had grown 90-190 MiB, and a full collection among them
held the event loop ~1 s; with the frames cleared, 17,000 (the runs in flight the point
cancelled at its end), -8 to +30 MiB and 0.12-0.15 s.

Once the error has left the run, the frames it passed through have finished:
``release_frames`` clears their locals (``frame.clear()``). The traceback keeps each
frame's code and line (what a log or ``traceback.format_exception`` shows); a debugger
or an error tracker that reads a frame's locals finds none. A frame still running (the
caller's, the one handling the error) is left as it is, and so is one whose last
instruction was a yield: an error kept and raised again (``raise stored``: LangGraph
re-raises a task's, aiohttp a stream's) gathers the frames of every raiser, and one of
them may be a coroutine suspended in its ``except`` block, which ``frame.clear()``
would close on Python 3.11 and 3.12. A frame that ended at a yield (a cancellation
thrown into it) is left too: its run then waits for a full collection, as before.
"""

from __future__ import annotations

import contextlib
import dis
from types import FrameType
from typing import Final

_YIELD: Final = dis.opmap["YIELD_VALUE"]


def release_frames(error: BaseException) -> None:
    """Clear the locals of the finished frames in ``error``'s traceback and in those of
    the errors it came from (``__cause__``, ``__context__``, a group's members)."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        tb = current.__traceback__
        while tb is not None:
            if not _at_yield(tb.tb_frame):
                with contextlib.suppress(RuntimeError):  # running: the caller's
                    tb.tb_frame.clear()
            tb = tb.tb_next
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)


def _at_yield(frame: FrameType) -> bool:
    """The frame's last instruction was a yield: suspended there, maybe (not finished)."""
    code, last = frame.f_code.co_code, frame.f_lasti
    return 0 <= last < len(code) and code[last] == _YIELD
