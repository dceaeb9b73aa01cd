"""The "never two spans for one call" marker (runtime/langchain/recording.py)."""

from __future__ import annotations

import asyncio
from uuid import uuid4

from agentwatch.runtime.langchain.recording import current, recorded_by_boundary, recording
from agentwatch.telemetry.names import OP_CHAT, OP_EXECUTE_TOOL, OP_INVOKE_AGENT


def test_nothing_is_recorded_by_a_boundary_outside_a_recording() -> None:
    assert current() is None
    assert not recorded_by_boundary(OP_CHAT, uuid4())


def test_the_first_run_of_its_kind_is_the_boundarys_and_a_nested_one_is_not() -> None:
    own, nested = uuid4(), uuid4()
    with recording(OP_EXECUTE_TOOL) as marker:
        assert not recorded_by_boundary(OP_CHAT, uuid4())  # another kind: never
        assert recorded_by_boundary(OP_EXECUTE_TOOL, own)
        assert recorded_by_boundary(OP_EXECUTE_TOOL, own)  # asked again: still its own
        assert not recorded_by_boundary(OP_EXECUTE_TOOL, nested)
        assert marker.run_ids == [own]
    assert current() is None


def test_a_generate_call_claims_one_run_per_prompt() -> None:
    runs = [uuid4() for _ in range(3)]
    with recording(OP_CHAT, runs=2):
        assert [recorded_by_boundary(OP_CHAT, r) for r in runs] == [True, True, False]


def test_an_inner_recording_is_current_until_it_ends() -> None:
    outer_run, inner_run = uuid4(), uuid4()
    with recording(OP_INVOKE_AGENT) as outer:
        assert recorded_by_boundary(OP_INVOKE_AGENT, outer_run)
        with recording(OP_INVOKE_AGENT):
            assert recorded_by_boundary(OP_INVOKE_AGENT, inner_run)
        assert current() is outer
        assert not recorded_by_boundary(OP_INVOKE_AGENT, uuid4())


async def test_concurrent_tasks_see_their_own_recording() -> None:
    async def one(kind: str) -> bool:
        with recording(kind):
            await asyncio.sleep(0)
            return recorded_by_boundary(kind, uuid4())

    kinds = [OP_CHAT, OP_EXECUTE_TOOL] * 10
    assert await asyncio.gather(*(one(k) for k in kinds)) == [True] * len(kinds)
