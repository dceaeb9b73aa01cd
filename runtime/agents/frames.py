"""A failed run lets go of what its frames held, so that reference counting frees it.

A run's error carries a traceback of every frame it passed through, and some of those
frames keep the error in their locals: LangChain's ``BaseChatModel.agenerate`` in the
results it gathered with ``return_exceptions=True``, LangGraph's task loop in the failed
task's writes. Error -> traceback -> frame -> error is a reference cycle, and with it
goes everything those frames reach: the whole run, its spans, messages and callback
managers, ~1,200 objects a failed run, promoted to the old generation by the time the
model answered. Only a full collection frees them. Under a model that fails every call
(500s, 400 clients, ~60 failed runs a second; RESULTS.md section 11f), after 30 s a full
collection still found 670,000-890,000 objects of failed runs waiting, resident memory
had grown 90-190 MiB, and a full collection among them held the event loop ~1 s; with
the frames cleared, 17,000 (the runs in flight the point cancelled at its end), -8 to
+30 MiB and 0.12-0.15 s. (Probed before model_http opened connections in an empty
context: a 1.6 s collection freeing 770,000 objects.)

Once the error has left the run, the frames it passed through have finished:
``release_frames`` clears their locals (``frame.clear()``). The traceback keeps each
frame's code and line (what a log or ``traceback.format_exception`` shows); a debugger
or an error tracker that reads a frame's locals finds none. A frame still running (the
caller's, the one handling the error) is left as it is.
"""

from __future__ import annotations

import traceback


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
        traceback.clear_frames(current.__traceback__)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
