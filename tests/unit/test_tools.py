"""The built-in tools: a calculator that refuses what is not arithmetic, a real BM25 search."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentwatch.runtime.tools import (
    BUNDLED_CORPUS,
    CalculatorError,
    SearchError,
    SearchIndex,
    arithmetic,
    evaluate,
)
from agentwatch.runtime.tools import calculator as calculator_module
from agentwatch.runtime.tools.calculator import calculator
from agentwatch.runtime.tools.evaluator import Evaluator


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("123 + 456", "579"),
        ("2 ^ 10", "1024"),
        ("(1 + 2) * 3 - 4 / 2", "7"),
        ("7 // 2 + 7 % 2", "4"),
        ("sqrt(16) + abs(-2)", "6"),
        ("2 ** 0.5", "1.41421356237"),
        ("10 ** 999", "1" + "0" * 999),
        ("-3 * -3", "9"),
    ],
)
def test_arithmetic(expression: str, value: str) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("round(2.567, 2)", "2.57"),
        ("round(1234, -2)", "1200"),
        ("round(7.5)", "8"),
        ("round(10 ** 999, -1000)", "0"),
        ("10 ** 999 + 10 ** 999", "2" + "0" * 999),
        ("10 ** 999 // 3", "3" * 999),
        ("max(1, 2 ^ 3, 5) + min(4, 2)", "10"),
        ("(-1) ** 10000", "1"),
    ],
)
def test_arithmetic_at_the_bounds(expression: str, value: str) -> None:
    assert evaluate(expression) == value


# issue 13: round(1, -10**7) computed 10**(10**7) on the event loop (10 s, answer 0);
# every operand is now bounded before the operation runs.
@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("round(1, -10**7)", "round(x, n): n must be a whole number between -1000 and 1000"),
        ("round(1, -10**8)", "round(x, n): n must be"),
        ("round(1.5, 10**9)", "round(x, n): n must be"),
        ("round(1, 0.5)", "round(x, n): n must be"),
        ("9 ** 9 ** 9", "the power is too large"),
        ("2 ** -20000", "the power is too large"),
        ("10 ** 999 * 10", "the result would exceed 1000 digits"),
        ("floor(1e308) ** 4", "the power is too large"),
        ("(10 ** 999 - 1) * (10 ** 999 - 1)", "the result would exceed 1000 digits"),
        ("1.5 ** 10000", "the number is too large"),
        ("10 ** 999 / 3", "the number is too large"),
        ("(-8) ** (1 / 3)", "the result is not a real number"),
        ("min(round)", "only numbers can be combined"),
        ("1 is 1", "not a valid arithmetic expression"),
        ("1\n+ 2", "not a valid arithmetic expression"),
        ("1e999", "the result is not a finite number"),
    ],
)
def test_every_operand_is_bounded_before_the_work(expression: str, reason: str) -> None:
    start = time.perf_counter()
    with pytest.raises(CalculatorError, match=re.escape(reason)):
        evaluate(expression)
    assert time.perf_counter() - start < 5  # sanity bound: each refusal is microseconds


async def test_the_tool_computes_in_a_worker_process() -> None:
    assert await calculator("6 * 7") == "42"
    assert await calculator("  10 ** 999 ") == "1" + "0" * 999
    with pytest.raises(CalculatorError, match=r"round\(x, n\): n must be"):
        await calculator("round(1, -10**8)")
    with pytest.raises(CalculatorError, match="longer than 200 characters"):
        await calculator("1 + " * 300)
    evaluator = calculator_module._the_evaluator()
    assert evaluator._process is not None
    assert evaluator._process.pid != os.getpid()
    # more than one exchange's worth (BATCH_BYTES), ~1.8 MB of answers: each its own
    results = await asyncio.gather(*(calculator(f"{i} * 10 ** 900") for i in range(2000)))
    assert results == [str(i * 10**900) for i in range(2000)]


async def test_an_evaluation_that_overruns_is_killed_and_the_worker_replaced() -> None:
    # The stand-in below, not the real worker: its "slow" never answers in time. (A zero
    # timeout on the real worker raced it: an answer in the pipe before the thread's
    # next poll came in time, and CI failed once.)
    evaluator = Evaluator([sys.executable, "-c", STAND_IN], eval_timeout=1.0)
    try:
        assert await evaluator.ask("first") == {"value": "FIRST"}
        first = evaluator._process
        assert first is not None
        with pytest.raises(CalculatorError, match=r"took longer than 1 s and was stopped"):
            await evaluator.ask("slow")
        assert first.returncode is not None  # killed and reaped
        assert await evaluator.ask("next") == {"value": "NEXT"}  # a fresh process
        assert evaluator._process is not None
        assert evaluator._process is not first
    finally:
        await asyncio.to_thread(evaluator.close)  # joins its thread: not on the loop


# A stand-in worker on the same pipes: answers each line at once, except "slow" (never
# within the test's timeout), "die" (exits mid-batch) and "nap" (0.3 s), to place a
# failure in a batch.
STAND_IN = """
import json, sys, time
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0)  # a slow start
print('"ready"', flush=True)
for line in sys.stdin:
    expression = json.loads(line)
    if expression == "stray":  # its answer, then a line nobody asked for
        print(json.dumps({"value": "STRAY"}), flush=True)
    if expression == "slow":
        time.sleep(30)
    if expression == "die":
        sys.exit(1)
    if expression == "nap":
        time.sleep(0.3)
    sys.stdout.write(json.dumps({"value": expression.upper()}) + "\\n")
    sys.stdout.flush()
"""


@pytest.mark.parametrize(
    ("culprit", "reason"), [("slow", "took longer than 0.5 s"), ("die", "worker failed")]
)
async def test_a_failure_in_a_batch_fails_its_own_call_and_the_rest_are_answered(
    culprit: str, reason: str
) -> None:
    evaluator = Evaluator([sys.executable, "-c", STAND_IN], eval_timeout=0.5)
    try:
        names = [f"call {i}" for i in range(40)]
        names[17] = culprit
        answers = await asyncio.gather(*map(evaluator.ask, names), return_exceptions=True)
        for name, answer in zip(names, answers, strict=True):
            if name == culprit:
                assert isinstance(answer, CalculatorError)
                assert reason in str(answer)
            else:
                assert answer == {"value": name.upper()}
    finally:
        await asyncio.to_thread(evaluator.close)  # joins its thread: not on the loop


async def test_the_timeout_is_each_answers_not_the_batchs() -> None:
    # 8 answers 0.3 s apart, 2.4 s in all, each within 2 s of the one before (a timeout
    # 0.3 s above each answer's time left a loaded machine too little)
    evaluator = Evaluator([sys.executable, "-c", STAND_IN], eval_timeout=2.0)
    try:
        assert await evaluator.ask("started") == {"value": "STARTED"}
        answers = await asyncio.gather(*(evaluator.ask("nap") for _ in range(8)))
        assert answers == [{"value": "NAP"}] * 8
    finally:
        await asyncio.to_thread(evaluator.close)


async def test_a_line_nobody_asked_for_does_not_answer_the_next_call() -> None:
    evaluator = Evaluator([sys.executable, "-c", STAND_IN])
    try:
        assert await evaluator.ask("stray") == {"value": "STRAY"}
        await asyncio.sleep(0.3)  # its second line is in the pipe by now
        assert await evaluator.ask("next") == {"value": "NEXT"}
    finally:
        await asyncio.to_thread(evaluator.close)


async def test_a_slow_start_is_waited_for_and_the_first_answer_timed_as_any() -> None:
    evaluator = Evaluator([sys.executable, "-c", STAND_IN, "1.0"], eval_timeout=0.5)
    try:
        assert await evaluator.ask("first") == {"value": "FIRST"}  # 1 s to start: fine
        evaluator._kill()  # the next call starts a fresh one
        started = time.monotonic()
        with pytest.raises(CalculatorError, match=r"took longer than 0\.5 s"):
            await evaluator.ask("slow")
        assert time.monotonic() - started < 4  # 1 s to start, 0.5 s to answer; not 5 more
    finally:
        await asyncio.to_thread(evaluator.close)


# The real worker with its pipes cut to one page (what Linux gives a user past
# pipe-user-pages-soft): a batch's answers fill stdout long before its lines are written.
SMALL_PIPES = f"""
import fcntl, runpy
fcntl.fcntl(0, 1031, 4096)  # F_SETPIPE_SZ
fcntl.fcntl(1, 1031, 4096)
runpy.run_path({str(Path(arithmetic.__file__))!r}, run_name="__main__")
"""


async def test_answers_larger_than_the_pipes_do_not_stall_a_batch() -> None:
    evaluator = Evaluator([sys.executable, "-c", SMALL_PIPES])
    try:
        answers = await asyncio.wait_for(
            asyncio.gather(*(evaluator.ask(f"{i} * 10 ** 900") for i in range(1000))), 60
        )
        assert answers == [{"value": str(i * 10**900)} for i in range(1000)]
    finally:
        await asyncio.to_thread(evaluator.close)


async def test_closing_fails_every_call_still_waiting_and_the_later_ones() -> None:
    evaluator = Evaluator([sys.executable, "-c", STAND_IN], eval_timeout=5.0)
    slow = asyncio.ensure_future(evaluator.ask("slow"))  # holds the thread
    await asyncio.sleep(0.2)
    given_up = asyncio.ensure_future(evaluator.ask("given up"))
    waiting = asyncio.ensure_future(evaluator.ask("waiting"))
    await asyncio.sleep(0)
    given_up.cancel()
    started = time.monotonic()
    await asyncio.to_thread(evaluator.close)
    assert time.monotonic() - started < 3  # the slow evaluation killed, not waited for
    for call in (slow, waiting):
        with pytest.raises(CalculatorError):
            await asyncio.wait_for(call, 10)
    assert given_up.cancelled()
    with pytest.raises(CalculatorError, match="closed"):
        await evaluator.ask("after")
    assert evaluator._process is None


# In a process of its own: a fork, and descriptors numbered past select()'s 1,024.
AFTER_FORK_AND_MANY_FILES = """
import asyncio, os, resource
from agentwatch.runtime.tools.evaluator import Evaluator

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 1200), hard), hard))
held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
evaluator = Evaluator()
assert asyncio.run(evaluator.ask("1 + 1")) == {"value": "2"}
assert evaluator._process.stdout.fileno() > 1024
parents = evaluator._process.pid
child = os.fork()
if child == 0:  # no evaluator thread came along: the child starts its own
    answer = asyncio.run(evaluator.ask("2 + 2"))
    os._exit(0 if answer == {"value": "4"} and evaluator._process.pid != parents else 1)
_, status = os.waitpid(child, 0)
assert status == 0, status
assert asyncio.run(evaluator.ask("3 + 3")) == {"value": "6"}  # the parent's still works
print("ok")
"""


def test_a_forked_child_and_high_descriptor_numbers_get_answers() -> None:
    done = subprocess.run(
        [sys.executable, "-c", AFTER_FORK_AND_MANY_FILES],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"


@pytest.fixture(scope="module")
def index() -> SearchIndex:
    return SearchIndex.from_folder(BUNDLED_CORPUS)


def test_search_ranks_the_relevant_document_first(index: SearchIndex) -> None:
    (best, score), *_ = index.search("exemplars trace id slow bucket")
    assert best.title.startswith("Exemplars")
    assert score > 0
    assert index.search("retry after header jitter")[0][0].title.startswith("Retries")


def test_search_over_a_users_folder(tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    (folder / "kb.md").write_text("# Pager\n\nThe pager rotation starts on Monday.\n")
    (folder / "ignored.bin").write_bytes(b"\x00pager")
    user_index = SearchIndex.from_folder(folder)
    assert user_index.answer("pager rotation") == "Pager: The pager rotation starts on Monday."
    with pytest.raises(SearchError, match="does not exist"):
        SearchIndex.from_folder(folder / "missing")
