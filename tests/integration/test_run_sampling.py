"""`agentwatch run` says when a run's trace was not sampled, rather than printing an id
that no trace backend will ever have."""

from __future__ import annotations

import pytest

from tests.helpers import run_cli

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("stream", [False, True])
def test_run_says_its_trace_was_not_sampled(stream: bool) -> None:
    args = ["run", "--stream", "what is 6 * 7"] if stream else ["run", "what is 6 * 7"]
    out = run_cli(*args, timeout=120, OTEL_TRACES_SAMPLER="always_off")
    assert out.returncode == 0, out.stderr
    assert "42" in out.stdout
    last = out.stdout.splitlines()[-1]
    assert last.startswith("trace not sampled  tokens: "), last
    assert "trace_id" not in out.stdout
