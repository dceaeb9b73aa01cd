"""The rate limiter's buckets on Redis: one budget per model for every process.

``RedisBuckets`` is a ``rate_limiter.BucketStore`` whose token buckets live in Redis
(a hash per bucket: tokens, when they were counted, the rate learned from the provider,
the time before which nothing may be sent), so that 20 workers of one batch, or the N
replicas of a service, respect one provider limit between them
(``AGENTWATCH_RATE_LIMIT_RPM`` / ``_TPM`` with ``AGENTWATCH_REDIS_URL`` set). Each
operation is one Lua script, atomic in Redis, timed by Redis's own clock (``TIME``), so
the processes' clocks do not matter. The rules are the in-process buckets' own
(``rate_limiter.InProcessBuckets``): a bucket runs at the lower of the configured rate
and the one learned from the provider's headers, holds one second of it (at least 1),
may go into debt, and a ``Retry-After`` or an exhausted budget holds every process back
until its time. Calls go through ``RedisClient.call``: retried with backoff while Redis
is down (a model call then waits for Redis, as a batch task does), never failed by it.
"""

from __future__ import annotations

from typing import Final

from ..rate_limiter import BURST_SECONDS, Learned
from .redis_queue import RedisClient

KEY_PREFIX: Final = "agentwatch:ratelimit:"
EXPIRE_MS: Final = 86_400_000  # a bucket nobody used for a day goes

# ARGV: op, amount, configured rate (per s), burst seconds, then for "learn": limit per
# minute, remaining, reset (s), retry after (s) ("" = not said). Returns the wait (s), or
# for "learn" the rate (per s) the bucket runs at now, as a string (Redis turns a Lua
# number into an integer).
_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local h = redis.call('HMGET', KEYS[1], 'tokens', 'updated', 'learned', 'not_before')
local configured = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local learned = tonumber(h[3])
local function rate_now()
  if learned and learned < configured then return learned end
  return configured
end
local rate = rate_now()
local cap = math.max(1, rate * burst)
local tokens = tonumber(h[1]) or cap
local updated = tonumber(h[2]) or now
tokens = math.min(cap, tokens + rate * math.max(0, now - updated))
local not_before = tonumber(h[4]) or 0
local wait = 0
local op = ARGV[1]
local amount = tonumber(ARGV[2])
if op == 'reserve' then
  local need = math.min(amount, cap)
  wait = math.max(0, (need - tokens) / rate, not_before - now)
  tokens = tokens - amount
elseif op == 'give_back' then
  tokens = math.min(cap, tokens + amount)
elseif op == 'learn' then
  local had_learned = learned ~= nil
  local per_minute = tonumber(ARGV[5])
  if per_minute and per_minute > 0 then
    learned = per_minute / 60
    rate = rate_now()
    cap = math.max(1, rate * burst)
    tokens = math.min(tokens, cap)
  end
  local remaining = tonumber(ARGV[6])
  local reset = tonumber(ARGV[7])
  if remaining then
    tokens = math.min(tokens, remaining)
    if remaining <= 0 and not had_learned and reset then
      not_before = math.max(not_before, now + reset)
    end
  end
  local retry_after = tonumber(ARGV[8])
  if retry_after then not_before = math.max(not_before, now + retry_after) end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now),
  'not_before', tostring(not_before))
if learned then redis.call('HSET', KEYS[1], 'learned', tostring(learned)) end
redis.call('PEXPIRE', KEYS[1], ARGV[9])
if op == 'learn' then return tostring(rate) end
return tostring(wait)
"""


def _said(value: float | None) -> str:
    return "" if value is None else repr(float(value))


class RedisBuckets:
    """Token buckets shared through ``client``'s Redis (see the module)."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self._script = client.redis.register_script(_SCRIPT)

    async def _run(self, op: str, key: str, amount: float, rate: float, *said: str) -> float:
        args = [op, repr(float(amount)), repr(float(rate)), repr(BURST_SECONDS)]
        args += [*said, "", "", "", ""][:4]
        args.append(str(EXPIRE_MS))
        keys = [KEY_PREFIX + key]
        wait = await self.client.call("rate limit", lambda: self._script(keys=keys, args=args))
        return float(wait)

    async def reserve(self, key: str, amount: float, rate: float, now: float) -> float:
        return await self._run("reserve", key, amount, rate)

    async def give_back(self, key: str, amount: float, rate: float, now: float) -> None:
        await self._run("give_back", key, amount, rate)

    async def learn(self, key: str, learned: Learned, rate: float, now: float) -> float:
        return await self._run(
            "learn",
            key,
            0.0,
            rate,
            _said(learned.limit_per_minute),
            _said(learned.remaining),
            _said(learned.reset),
            _said(learned.retry_after),
        )
