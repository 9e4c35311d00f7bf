"""The token bucket in Redis: :func:`proxy.ratelimit.bucket.take` as a Lua script, one round trip.

A client's bucket is a hash at :func:`bucket_key` with fields ``tokens`` and ``ts`` (its
``updated_ms``). The script reads it, refills, takes, writes it back and sets the key to expire
once the bucket would be full again (:func:`~proxy.ratelimit.bucket.key_ttl_ms`), so an idle
client leaves nothing behind. Redis runs a script atomically, so concurrent requests of one
client, from any worker or host, each see the bucket the previous one left.

One script call decides a whole batch (:meth:`RedisBuckets.take_many`): the decisions of one
event-loop tick (``proxy.ratelimit.batch``), in order, so two requests of one client in a batch
see each other exactly as two calls would. The batch's keys belong to different clients, which
Redis Cluster refuses as one script's declared keys (``CROSSSLOT``): there a batch is split by
node (each key's ``{client}`` hash tag decides its slot, computed here as the client does, and
redis-py's slot map the node), one script call per primary with its first key declared and the
others passed as arguments, all sent in one cluster pipeline — one round trip to each node
concerned, in parallel (:meth:`RedisBuckets._take_per_node`). A client's decisions share its
slot, so they stay in order within one script. On one Redis nothing changes: one call.

The time is the Redis server's (``TIME``, read once per script call), one clock for every proxy
(on a cluster each node's; they are kept in step like any servers' clocks), unless the caller
passes ``now_ms`` (the tests do, to replay exact sequences). The arithmetic
is that of ``take``, in the same order; ``tokens`` are written with ``%.17g`` so the double
survives as a string exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final, NamedTuple

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError, SlotNotCoveredError

from catalog.redis_client import RedisClient, slot_of
from proxy.ratelimit.bucket import KEY_MARGIN_MS, Bucket, Decision, validate

# KEYS: one bucket key per decision, or on a cluster the first (it routes the call) with the
# others after the terms (see RedisBuckets._take_per_node). ARGV[1]: now_ms ('' = the server's
# TIME); ARGV[2]: one byte per key, the (0-based) index of its terms among the call's terms;
# ARGV[3]: how many distinct terms; then the terms, four values each: cost, capacity, period_ms,
# lease; then the undeclared keys, if any. A batch's decisions mostly share their terms (the
# default limit, a route's cost), and four values per decision were most of what the worker spent
# on one (redis-py encodes each argument in Python: 27 against 3 units per decision measured for
# 40 decisions as 4 strings each or as a byte) and four tonumber()s each in Redis.
# Replies, flat, six values per decision: allowed (0 refused, 1 allowed, 2 allowed with the
# lease, -1 not decided: an undeclared key this node does not serve), remaining, retry_after_ms,
# reset_ms, tokens, ts. Redis turns a Lua number into an integer reply by truncating it, so the
# tokens travel as their %.17g string.
LUA = """
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
local terms = {}
local after_terms = 4 + 4 * tonumber(ARGV[3])
for n = 4, after_terms - 1, 4 do
  terms[#terms + 1] = {tonumber(ARGV[n]), tonumber(ARGV[n + 1]), tonumber(ARGV[n + 2]), tonumber(ARGV[n + 3])}
end
local keys = KEYS
local declared = #KEYS
if #ARGV >= after_terms then
  keys = {}
  for n = 1, declared do
    keys[n] = KEYS[n]
  end
  for n = after_terms, #ARGV do
    keys[#keys + 1] = ARGV[n]
  end
end
local which = ARGV[2]
local replies = {}
for i, key in ipairs(keys) do
  local term = terms[string.byte(which, i) + 1]
  local cost, capacity, period, lease = term[1], term[2], term[3], term[4]

  local state
  if i <= declared then
    state = redis.call('HMGET', key, 'tokens', 'ts')
  else
    -- A key of another node (the caller's slot map was stale: a resharding, a failover) is an
    -- error here; pcall keeps it from failing the others, and the caller decides it by its slot.
    state = redis.pcall('HMGET', key, 'tokens', 'ts')
  end
  if state.err then
    local n = 6 * (i - 1)
    replies[n + 1], replies[n + 2], replies[n + 3], replies[n + 4], replies[n + 5], replies[n + 6] = -1, 0, 0, 0, '0', 0
  else
    local tokens = tonumber(state[1])
    local ts = tonumber(state[2])
    if tokens == nil or ts == nil then
      tokens = capacity
      ts = now
    end
    local elapsed = math.max(0, now - ts)
    tokens = math.min(capacity, tokens + elapsed * capacity / period)
    ts = math.max(ts, now)

    local allowed = 0
    local retry_after = 0
    if cost <= tokens then
      allowed = 1
      tokens = tokens - cost
      if lease > 0 and tokens - lease >= capacity / 2 then
        allowed = 2
        tokens = tokens - lease
      end
    elseif cost > capacity then
      retry_after = period
    else
      retry_after = math.ceil((cost - tokens) * period / capacity)
    end
    local reset = 0
    if tokens < capacity then
      reset = math.ceil((capacity - tokens) * period / capacity)
    end

    local stored = string.format('%.17g', tokens)
    redis.call('HSET', key, 'tokens', stored, 'ts', string.format('%d', ts))
    redis.call('PEXPIRE', key, math.min(reset, period) + KEY_MARGIN_MS)
    local n = 6 * (i - 1)
    replies[n + 1] = allowed
    replies[n + 2] = math.floor(tokens)
    replies[n + 3] = retry_after
    replies[n + 4] = reset
    replies[n + 5] = stored
    replies[n + 6] = ts
  end
end
return replies
""".replace("KEY_MARGIN_MS", str(KEY_MARGIN_MS))

# What EVALSHA names the script by: Redis's own digest of its text, so no SCRIPT LOAD is needed
# to learn it.
SHA = hashlib.sha1(LUA.encode()).hexdigest()


def bucket_key(prefix: str, client_id: str) -> str:
    """The Redis key of ``client_id``'s bucket.

    The id in braces is the key's Redis Cluster hash tag: only it decides the slot, so every key
    of one client (this one and any added later) lands on one node, where a script may use them
    together.
    """
    return f"{prefix}ratelimit:{{{client_id}}}"


class Take(NamedTuple):
    """One decision to make: take ``cost`` tokens from ``client_id``'s bucket of ``capacity``
    tokens refilled every ``period_ms``, and a ``lease`` more if the bucket stays half full
    (:func:`proxy.ratelimit.bucket.take`). A tuple: one is made per decision in Redis, and a
    frozen dataclass took four times as long to make."""

    client_id: str
    cost: float
    capacity: float
    period_ms: int
    lease: float = 0.0


# Distinct terms in one script call, at most: each key names its terms by a byte.
MAX_TERMS: Final = 256


class RedisBuckets:
    """Clients' token buckets in Redis under ``prefix``."""

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._cluster = client if isinstance(client, RedisCluster) else None

    async def take(
        self,
        client_id: str,
        cost: float,
        capacity: float,
        period_ms: int,
        now_ms: int | None = None,
        lease: float = 0.0,
    ) -> Decision:
        """Take ``cost`` tokens from ``client_id``'s bucket, atomically, in one round trip.

        Arguments as for :func:`proxy.ratelimit.bucket.take` (ValueError before Redis is asked).
        Redis errors and timeouts propagate: the caller decides what an unreachable Redis means.
        """
        (decision,) = await self.take_many([Take(client_id, cost, capacity, period_ms, lease)], now_ms)
        return decision

    async def take_many(self, takes: Sequence[Take], now_ms: int | None = None) -> list[Decision]:
        """:meth:`take` for each of ``takes``, in order: on one Redis in one script call (one round
        trip, one atomic step for all of them); on a cluster one script call per hash slot."""
        keys: list[str] = []
        which = bytearray()  # the index of each decision's terms
        terms: dict[tuple[float, float, int, float], int] = {}
        for one in takes:
            term = (one.cost, one.capacity, one.period_ms, one.lease)
            index = terms.get(term)
            if index is None:
                validate(*term)
                if len(terms) == MAX_TERMS:
                    raise ValueError(f"at most {MAX_TERMS} distinct terms in one call")
                index = terms[term] = len(terms)
            which.append(index)
            keys.append(bucket_key(self._prefix, one.client_id))
        # repr of a float is the shortest text that reads back as the same double.
        args = [repr(float(value)) if n != 2 else str(value) for term in terms for n, value in enumerate(term)]
        now = "" if now_ms is None else str(int(now_ms))
        if self._cluster is not None:
            return await self._take_per_node(self._cluster, takes, keys, which, [now, str(len(terms)), *args])
        # Bytes, not str: redis-py encodes a str argument in Python, a bytes one it passes as is.
        call: list[bytes | str] = [*(key.encode() for key in keys), now, bytes(which), str(len(terms)), *args]
        try:
            reply = await self._client.evalsha(SHA, len(keys), *call)
        except NoScriptError:
            # The script cache is empty after a Redis restart or SCRIPT FLUSH. A NOSCRIPT reply
            # means nothing ran, so running it now still makes these decisions once.
            await self._client.script_load(LUA)
            reply = await self._client.evalsha(SHA, len(keys), *call)
        return _decided(_decisions(reply, takes))

    async def _take_per_node(
        self, cluster: RedisCluster, takes: Sequence[Take], keys: list[str], which: bytearray, args: list[str]
    ) -> list[Decision]:
        """On a cluster: one script call per primary, its first key declared (it routes the call),
        the others passed after the terms. ``args``: now, the number of terms, the terms.

        One call per hash slot (all keys declared, as Redis Cluster wants them) was one call per
        decision with many clients (10,000 clients spread over 16,384 slots): redis-py's cluster
        pipeline spends tens of microseconds of Python on each command, and the limiter cost
        0.60 x the proxy's throughput without it on cache hits (``benchmarks/ratelimit.py
        --cluster``). A script may use keys it did not declare (Redis 7 still allows it to scripts
        without flags, cross-slot included); what it cannot use is a key of another node, which
        it finds out key by key (a slot map made stale by a resharding or a failover): those
        decisions are left undecided (-1) and taken again by slot, as before, in one more round
        trip, where redis-py follows the redirections and learns the new map.
        """
        by_node: dict[str, list[int]] = {}  # node -> positions in the batch, in order
        try:
            for position, key in enumerate(keys):
                by_node.setdefault(cluster.nodes_manager.get_node_from_slot(slot_of(key)).name, []).append(position)
        except SlotNotCoveredError:  # no slot map yet (the client's first command makes it), or a hole
            return await self._take_per_slot(cluster, takes, keys, which, args)
        calls: list[tuple[list[int], list[str], list[bytes | str]]] = [
            (
                positions,
                [keys[positions[0]]],
                [args[0], bytes(which[i] for i in positions), *args[1:], *(keys[i] for i in positions[1:])],
            )
            for positions in by_node.values()
        ]
        decisions: list[Decision | None] = [None] * len(keys)
        undecided: list[int] = []
        for (positions, _, _), reply in zip(calls, await self._pipelined(cluster, calls), strict=True):
            for position, decision in zip(positions, _decisions(reply, [takes[i] for i in positions]), strict=True):
                if decision is None:
                    undecided.append(position)
                decisions[position] = decision
        if undecided:
            undecided.sort()  # a client's decisions, all undecided together, stay in their order
            again = await self._take_per_slot(
                cluster,
                [takes[i] for i in undecided],
                [keys[i] for i in undecided],
                bytearray(which[i] for i in undecided),
                args,
            )
            for position, decision in zip(undecided, again, strict=True):
                decisions[position] = decision
        return [decision for decision in decisions if decision is not None]

    async def _take_per_slot(
        self, cluster: RedisCluster, takes: Sequence[Take], keys: list[str], which: bytearray, args: list[str]
    ) -> list[Decision]:
        """One script call per hash slot, every key declared; ``args`` as for :meth:`_take_per_node`."""
        by_slot: dict[int, list[int]] = {}  # slot -> positions in the batch, in order
        for position, key in enumerate(keys):
            by_slot.setdefault(slot_of(key), []).append(position)
        calls: list[tuple[list[int], list[str], list[bytes | str]]] = [
            (positions, [keys[i] for i in positions], [args[0], bytes(which[i] for i in positions), *args[1:]])
            for positions in by_slot.values()
        ]
        decisions: list[Decision | None] = [None] * len(keys)
        for (positions, _, _), reply in zip(calls, await self._pipelined(cluster, calls), strict=True):
            for position, decision in zip(positions, _decisions(reply, [takes[i] for i in positions]), strict=True):
                decisions[position] = decision
        return _decided(decisions)

    @staticmethod
    async def _pipelined(
        cluster: RedisCluster, calls: list[tuple[list[int], list[str], list[bytes | str]]]
    ) -> list[object]:
        """Each call's reply (a call: positions, declared keys, other arguments), all sent in one
        cluster pipeline: one round trip to each node concerned, in parallel. Raises the first
        error among them."""
        replies: list[object] = [NoScriptError()] * len(calls)
        for attempt in (1, 2):
            todo = [n for n, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if not todo:
                break
            if attempt == 2:
                # A promoted replica has no script cache (scripts replicate as their effects):
                # NOSCRIPT means that call did nothing, so only those calls are sent again.
                await cluster.script_load(LUA)
            async with cluster.pipeline() as pipe:
                for n in todo:
                    _, call_keys, call_args = calls[n]
                    pipe.evalsha(SHA, len(call_keys), *call_keys, *call_args)
                for n, reply in zip(todo, await pipe.execute(raise_on_error=False), strict=True):
                    replies[n] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies


def _decided(decisions: list[Decision | None]) -> list[Decision]:
    """``decisions``, every one made: a script whose keys are all declared decides them all (a
    node that does not serve them redirects the whole call instead)."""
    made = [decision for decision in decisions if decision is not None]
    if len(made) != len(decisions):
        raise ResponseError("a rate-limit decision with a declared key was left undecided")
    return made


def _decisions(reply: object, takes: Sequence[Take]) -> list[Decision | None]:
    """The script's flat reply, six values per decision, as the decisions of ``takes`` (None: not
    decided, a key of another node)."""
    assert isinstance(reply, list) and len(reply) == 6 * len(takes)
    return [
        None
        if reply[i] < 0
        else Decision(
            allowed=reply[i] > 0,
            remaining=int(reply[i + 1]),
            retry_after_ms=int(reply[i + 2]),
            reset_ms=int(reply[i + 3]),
            bucket=Bucket(float(reply[i + 4]), int(reply[i + 5])),
            leased=float(one.lease) if reply[i] == 2 else 0.0,
        )
        for i, one in zip(range(0, len(reply), 6), takes, strict=True)
    ]
