"""``AgentRuntime``: the composition of model, tools and agent for one process.

With ``OPENAI_API_KEY`` set it talks to OpenAI (or ``OPENAI_BASE_URL``: vLLM, Ollama,
LM Studio...). Without it the builtin model is started in-process on an ephemeral
loopback port, and the agent talks to it over real HTTP like it would to OpenAI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool
from pydantic import SecretStr

from agentwatch.telemetry import Telemetry

from ..batch.redis_buckets import RedisBuckets
from ..batch.redis_queue import RedisClient
from ..builtin_model import BuiltinModelServer, ModelBehavior
from ..langchain.chat_model import InstrumentedChatOpenAI
from ..rate_limiter import BucketStore, RateLimiter
from ..retry import RetryPolicy
from ..settings import RuntimeSettings
from ..tools import BUNDLED_CORPUS, SearchIndex, ToolRegistry, ToolSpec, builtin_tools
from .admission import Admission
from .agent import DEFAULT_AGENT_NAME, RECURSION_LIMIT, Agent, checked_name
from .concurrency import AdaptiveLimit, AdaptivePolicy
from .model_http import ModelHttpClient
from .request_body import install as skip_plain_body_transforms

# The model client's HTTP client: aiohttp's transport (build_chat_model says why).
HTTP_CLIENT: Callable[[], Any] = ModelHttpClient


def build_chat_model(
    settings: RuntimeSettings,
    telemetry: Telemetry,
    base_url: str | None,
    retry_policy: RetryPolicy | None = None,
    buckets: BucketStore | None = None,
) -> InstrumentedChatOpenAI:
    """The agent's chat model, with an HTTP connection pool of its own: langchain-openai
    otherwise shares one cached pool per (base URL, timeout) across the process, and a
    pool that outlived its event loop (a builtin model restarted on the same port, in
    another loop) fails with "Event loop is closed". The owner closes it (``aclose``).

    The pool is aiohttp's (the SDK's ``DefaultAioHttpClient``, its connection errors
    told from timeouts: ``model_http``), not httpx's: with 160 runs at once on a 1 s
    model, httpx's pool cost so much of the loop's CPU that a process served 47-53
    runs/s at a loop lag p99 of 250-325 ms, aiohttp's 56-58 at ~105 ms
    (benchmarks/RESULTS.md, section 11c).

    The SDK's walk of each request body against its types is skipped where it cannot
    change the body (``request_body``: ~0.7 ms of loop CPU per call, RESULTS.md 11e)."""
    skip_plain_body_transforms()
    return InstrumentedChatOpenAI(
        model=settings.model,
        temperature=settings.temperature,
        max_completion_tokens=settings.max_tokens,
        http_async_client=HTTP_CLIENT(),
        base_url=base_url,
        api_key=SecretStr(settings.api_key or "agentwatch-builtin"),
        timeout=settings.model_timeout,
        max_retries=0,  # the SDK's hidden retries off: every attempt is ours, and visible
        stream_usage=True,
        telemetry=telemetry,
        provider_name=settings.provider,
        retry_policy=retry_policy or RetryPolicy.from_env(),
        # client-side rate limits: every attempt waits for its model's budget, which
        # learns from the provider's x-ratelimit-* headers (read only when limiting)
        # (``buckets``: shared with every process on the same Redis, else this one's)
        client_limiter=RateLimiter(settings.rate_limits, telemetry, store=buckets)
        if settings.rate_limits
        else None,
        include_response_headers=bool(settings.rate_limits),
    )


def build_admission(settings: RuntimeSettings, telemetry: Telemetry) -> Admission:
    """The run slots ``settings`` ask for: ``max_concurrent_runs`` None adaptive, 0 no
    limit, N a fixed N; interactive runs shed past ``admission_max_waiting`` waiting or
    ``admission_timeout`` seconds of waiting; the adaptive limit steers the loop's lag
    to ``admission_target_lag``."""
    limit = settings.max_concurrent_runs
    policy = AdaptivePolicy(target_lag=settings.admission_target_lag)
    return Admission(
        AdaptiveLimit(policy) if limit is None else limit,
        telemetry=telemetry,
        max_waiting=settings.admission_max_waiting,
        max_wait=settings.admission_timeout,
    )


class AgentRuntime:
    """``async with AgentRuntime(settings, telemetry) as runtime: await runtime.agent.arun(q)``

    The model: ``model`` (any LangChain chat model, yours: recorded as ours, see
    ``Agent``), else the one ``settings`` describe (OpenAI-compatible or the builtin
    model; its name, temperature, max tokens, timeout). The agent, from the keywords:
    ``tools`` (a ``ToolRegistry``, or ``ToolSpec``s and LangChain tools; default the
    built-in calculator and search), ``agent_name`` (its spans' ``invoke_agent
    {name}``), ``system_prompt`` (default: about the tools it has), ``max_steps``. The
    defaults are the research agent of ``agentwatch demo``.
    """

    def __init__(
        self,
        settings: RuntimeSettings,
        telemetry: Telemetry,
        *,
        tools: ToolRegistry | Iterable[ToolSpec | BaseTool] | None = None,
        model: BaseChatModel | None = None,
        agent_name: str = DEFAULT_AGENT_NAME,
        system_prompt: str | None = None,
        max_steps: int = RECURSION_LIMIT,
        model_behavior: ModelBehavior | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self.retry_policy = retry_policy or RetryPolicy.from_env()
        self.settings = settings
        self.telemetry = telemetry
        # Checked now, not when started: a bad name or tool fails its caller here.
        self.agent_name = checked_name(agent_name)
        self.system_prompt = system_prompt
        self.max_steps = max_steps
        self._tools = (
            tools if tools is None or isinstance(tools, ToolRegistry) else ToolRegistry(tools)
        )
        self._model = model
        self._behavior = model_behavior
        self.model_server: BuiltinModelServer | None = None
        self._agent: Agent | None = None
        self._http: Any = None  # the chat model's connection pool, closed by stop()
        self._redis: RedisClient | None = None  # the shared rate limits' (closed by stop())

    @property
    def agent(self) -> Agent:
        if self._agent is None:
            raise RuntimeError("the runtime is not started: use `async with AgentRuntime(...)`")
        return self._agent

    @property
    def started(self) -> bool:
        return self._agent is not None

    async def start(self) -> AgentRuntime:
        """Start the builtin model (when used) and build the agent. If anything fails
        after the model server started, it is stopped again before the error propagates."""
        if self._agent is not None:
            raise RuntimeError("the runtime is already started")
        try:
            return await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> AgentRuntime:
        settings = self.settings
        tools = self._tools
        if tools is None:
            folder = settings.corpus_dir or BUNDLED_CORPUS
            index = await asyncio.to_thread(SearchIndex.from_folder, folder)
            tools = builtin_tools(index)
        model = self._model or await self._settings_model()
        self._agent = Agent(
            model,
            tools,
            telemetry=self.telemetry,
            model_name=None if self._model else settings.model,
            name=self.agent_name,
            system_prompt=self.system_prompt,
            max_steps=self.max_steps,
            run_timeout=settings.run_timeout,
            max_input_chars=settings.max_input_chars,
            retry_policy=self.retry_policy,
            admission=build_admission(settings, self.telemetry),
            budget_usd=settings.run_budget_usd,
        )
        return self

    async def _settings_model(self) -> BaseChatModel:
        """The model ``settings`` describe: the builtin model's server started when used."""
        settings = self.settings
        base_url = settings.base_url
        if settings.uses_builtin_model:
            behavior = self._behavior or ModelBehavior(
                latency=settings.builtin_latency,
                time_to_first_token=settings.builtin_latency,
                models=(settings.model,),
                rate_limit_rpm=settings.builtin_rate_limit_rpm,
                rate_limit_tpm=settings.builtin_rate_limit_tpm,
            )
            self.model_server = await BuiltinModelServer(behavior).start()
            base_url = self.model_server.base_url
        buckets = None
        if settings.rate_limits and settings.redis_url:  # one budget for every process
            self._redis = RedisClient(settings.redis_url, self.telemetry)
            buckets = RedisBuckets(self._redis)
        # Building the OpenAI client reads certificates and package metadata from disk.
        model = await asyncio.to_thread(
            build_chat_model, settings, self.telemetry, base_url, self.retry_policy, buckets
        )
        self._http = model.http_async_client
        return model

    async def stop(self) -> None:
        if self._agent is not None:
            self._agent.admission.close()
        self._agent = None
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()
        if self._redis is not None:
            redis, self._redis = self._redis, None
            await redis.close()
        if self.model_server is not None:
            server, self.model_server = self.model_server, None
            await server.stop()

    async def __aenter__(self) -> AgentRuntime:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
