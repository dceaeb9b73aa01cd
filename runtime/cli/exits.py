"""The command line's exit codes, once (the table of ``agentwatch --help`` and the
README), and ``CliError``: an ordinary mistake or condition told in one line."""

from __future__ import annotations

from typing import Final

from agentwatch.telemetry import AgentwatchError

EXIT_OK: Final = 0
EXIT_UNEXPECTED: Final = 1  # a bug: one line, the traceback with AGENTWATCH_DEBUG=1
EXIT_USAGE: Final = 2  # a flag, a variable or an input file the command cannot use
EXIT_STOPPED: Final = 3  # batch: stopped early by SIGINT/SIGTERM or its budget
EXIT_TASKS_FAILED: Final = 4  # batch: finished, some tasks failed or timed out
EXIT_CANNOT_LISTEN: Final = 5  # serve, model, demo: address in use, not permitted, unknown
EXIT_MODEL_FAILED: Final = 6  # run: the model unreachable or refusing, or a run's limit hit
EXIT_RESULTS_FILE: Final = 7  # batch: --out cannot be used
EXIT_INTERRUPTED: Final = 130  # Ctrl-C

EXIT_CODES: Final = """\
exit codes:
  0    success
  1    unexpected error (a bug); AGENTWATCH_DEBUG=1 prints the traceback
  2    bad usage or configuration: a flag, an environment variable, an input file
  3    batch stopped early (SIGINT/SIGTERM, or --budget-usd spent); run the same
       command again (with a larger budget) to resume
  4    batch finished, but some tasks failed or timed out
  5    serve/model/demo cannot listen: address in use, not permitted, or unknown host
  6    run: the model could not be reached or refused, or the run hit its time,
       step or budget limit
  7    batch: --out cannot be used (not a regular file, in use by another batch, or
       a write failed)
  130  interrupted (Ctrl-C)
"""


class CliError(AgentwatchError):
    """An ordinary mistake or condition, told in one line with its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
