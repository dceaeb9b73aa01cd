"""The agent and what runs it.

``Agent`` (a LangChain agent observed end to end), ``AgentRuntime`` (the composition
root: the model client, the builtin model server, the tools and the agents) and the
admission limit. May import the LangChain seam, the builtin model, tools and the shared
modules (settings, results, events, retry); never the service or the command line.
"""
