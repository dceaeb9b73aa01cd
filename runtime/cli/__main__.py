"""``python -m agentwatch.runtime.cli``: the same as the ``agentwatch`` command."""

from .main import main

raise SystemExit(main())
