"""The LangChain seam: where LangChain objects meet agentwatch's telemetry.

The instrumented chat model (``chat_model``), registry tools as LangChain tools
(``tools``) and the callback handler for chains built elsewhere (``callbacks``). May
import tools and the shared modules; never the agent, the service or the command line.
"""
