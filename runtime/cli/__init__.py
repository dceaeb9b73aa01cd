"""The command line: ``agentwatch`` (``main``), its ``batch`` command and the demo.

The top of the runtime: may import anything in it.
"""
