"""The token bucket in Redis: :func:`proxy.ratelimit.bucket.take` as a Lua script, one round trip.

A client's bucket is a hash at :func:`bucket_key` with fields ``tokens`` and ``ts`` (its
``updated_ms``). The script reads it, refills, takes, writes it back and sets the key to expire
once the bucket would be full again (:func:`~proxy.ratelimit.bucket.key_ttl_ms`), so an idle
client leaves nothing behind. Redis runs a script atomically, so concurrent requests of one
client, from any worker or host, each see the bucket the previous one left.

One script call decides a whole batch (:meth:`RedisBuckets.take_many`): the decisions of one
event-loop tick (``proxy.ratelimit.batch``), in order, so two requests of one client in a batch
see each other exactly as two calls would. Redis Cluster refuses a script whose keys lie in
different hash slots (``CROSSSLOT``), so a key's hash tag is not its client but the client's **key
group**, one of ``groups`` (``RATE_LIMIT_KEY_GROUPS``, default 8): ``{prefix}ratelimit:{<group's
tag>}:<client id>``, the group ``crc32(client id) % groups`` (a C hash, the same in every
process; Python's ``hash()`` of a str differs per process). On a cluster a batch is split by
group, one script call per group, all sent in one cluster pipeline (one round trip to each node
concerned, in parallel): at most ``groups`` calls whatever the number of clients. With the client
as the hash tag, 10,000 clients fell in as many slots and each cold decision was a script call
of its own, ~200 Python calls each in redis-py's cluster pipeline (cache hits with the limiter
0.70 × without on a cluster, 0.94 on one Redis: issue 24; ``benchmarks/ratelimit_groups.py``
counts the calls per cold decision by groups and batch size). Each call goes to the node of its
group's slot, computed once. A client's keys share its group's
slot, so its decisions stay in order within one script. Each group's tag is chosen once so that
the groups' slots are spread evenly over the 16,384 (the k-th in the k-th of ``groups`` equal
ranges): a cluster whose slots are split evenly among its primaries, as ``redis-cli --cluster
create`` splits them, gets the groups spread evenly over its primaries too. On one Redis nothing
changes: the same keys, one call.

The time is the Redis server's (``TIME``, read once per script call), one clock for every proxy
(on a cluster each node's; they are kept in step like any servers' clocks), unless the caller
passes ``now_ms`` (the tests do, to replay exact sequences). The arithmetic
is that of ``take``, in the same order; ``tokens`` are written with ``%.17g`` so the double
survives as a string exactly.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import zlib
from collections.abc import Sequence
from typing import Final, NamedTuple

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError

from catalog.redis_client import RedisClient, slot_of
from proxy.ratelimit.bucket import KEY_MARGIN_MS, Bucket, Decision, validate

# KEYS: one bucket key per decision. ARGV[1]: now_ms ('' = the server's TIME); ARGV[2]: one byte
# per key, the (0-based) index of its terms among the terms that follow; then the call's distinct
# terms, four values each: cost, capacity, period_ms, lease. A batch's decisions mostly share their
# terms (the default limit, a route's cost), and four values per decision were most of what the
# worker spent on one (redis-py encodes each argument in Python: 27 against 3 units per decision
# measured for 40 decisions as 4 strings each or as a byte) and four tonumber()s each in Redis.
# Replies, flat, six values per decision: allowed (0 refused, 1 allowed, 2 allowed with the
# lease), remaining, retry_after_ms, reset_ms, tokens, ts. Redis turns a Lua number into an
# integer reply by truncating it, so the tokens travel as their %.17g string.
LUA = """
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
local terms = {}
for n = 3, #ARGV, 4 do
  terms[#terms + 1] = {tonumber(ARGV[n]), tonumber(ARGV[n + 1]), tonumber(ARGV[n + 2]), tonumber(ARGV[n + 3])}
end
local which = ARGV[2]
local replies = {}
for i, key in ipairs(KEYS) do
  local term = terms[string.byte(which, i) + 1]
  local cost, capacity, period, lease = term[1], term[2], term[3], term[4]

  local state = redis.call('HMGET', key, 'tokens', 'ts')
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
return replies
""".replace("KEY_MARGIN_MS", str(KEY_MARGIN_MS))

# What EVALSHA names the script by: Redis's own digest of its text, so no SCRIPT LOAD is needed
# to learn it.
SHA = hashlib.sha1(LUA.encode()).hexdigest()


# Key groups (the module docstring): the default, and the bounds RATE_LIMIT_KEY_GROUPS may take.
DEFAULT_KEY_GROUPS: Final = 8
MAX_KEY_GROUPS: Final = 256  # as many as a batch has decisions (proxy.ratelimit.batch.MAX_BATCH)
HASH_SLOTS: Final = 16_384


def group_of(client_id: str, groups: int = DEFAULT_KEY_GROUPS) -> int:
    """``client_id``'s key group: crc32, the same in every process and on every host."""
    return zlib.crc32(client_id.encode()) % groups


@functools.cache
def group_tags(groups: int = DEFAULT_KEY_GROUPS) -> tuple[str, ...]:
    """Each key group's hash tag: ``g<k>.<n>``, the first ``n`` putting its slot in the k-th of
    ``groups`` equal ranges of the 16,384 (a cluster's primaries usually own equal contiguous
    ranges, so the groups spread evenly over them). About ``groups`` tries per group: 65,536 CRCs
    at most, once per process."""
    if not 1 <= groups <= MAX_KEY_GROUPS:
        raise ValueError(f"key groups must be 1-{MAX_KEY_GROUPS}, not {groups}")
    tags = []
    for k in range(groups):
        low, high = k * HASH_SLOTS // groups, (k + 1) * HASH_SLOTS // groups
        tags.append(next(tag for n in itertools.count() if low <= slot_of(tag := f"g{k}.{n}") < high))
    return tuple(tags)


def group_heads(prefix: str, groups: int = DEFAULT_KEY_GROUPS) -> tuple[bytes, ...]:
    """Each group's keys' beginning, ``{prefix}ratelimit:{<tag>}:``, encoded: a key is its
    group's head and the client id."""
    return tuple(f"{prefix}ratelimit:{{{tag}}}:".encode() for tag in group_tags(groups))


def bucket_key(prefix: str, client_id: str, groups: int = DEFAULT_KEY_GROUPS) -> str:
    """The Redis key of ``client_id``'s bucket: ``{prefix}ratelimit:{<group's tag>}:<client id>``.

    The group's tag in braces is the key's Redis Cluster hash tag: only it decides the slot, so
    every key of one client (this one and any added later) lands on one node, where a script may
    use them together, and so do those of every client of its group.
    """
    return group_heads(prefix, groups)[group_of(client_id, groups)].decode() + client_id


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
    """Clients' token buckets in Redis under ``prefix``, their keys in ``groups`` key groups."""

    def __init__(self, client: RedisClient, prefix: str, groups: int = DEFAULT_KEY_GROUPS) -> None:
        self._client = client
        self._prefix = prefix
        self._groups = groups
        self._heads = group_heads(prefix, groups)
        self._slots = tuple(slot_of(f"{{{tag}}}") for tag in group_tags(groups))  # each group's, once
        self._cluster = client if isinstance(client, RedisCluster) else None
        self._single = None if isinstance(client, RedisCluster) else client
        # One Redis: the connection the script calls go over (_evalsha), taken from the client's
        # pool on the first call and kept; closed with the client's pool.
        self._connection: AbstractConnection | None = None
        self._calling = False  # a call is on it

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
        trip, one atomic step for all of them); on a cluster one script call per key group."""
        keys: list[bytes] = []
        group: list[int] = []  # each decision's key group
        which = bytearray()  # the index of each decision's terms
        terms: dict[tuple[float, float, int, float], int] = {}
        heads, groups = self._heads, self._groups
        for one in takes:
            term = (one.cost, one.capacity, one.period_ms, one.lease)
            index = terms.get(term)
            if index is None:
                validate(*term)
                if len(terms) == MAX_TERMS:
                    raise ValueError(f"at most {MAX_TERMS} distinct terms in one call")
                index = terms[term] = len(terms)
            which.append(index)
            # Bytes, not str: redis-py encodes a str argument in Python, a bytes one it passes as is.
            client_id = one.client_id.encode()
            k = zlib.crc32(client_id) % groups  # group_of, inline: once per decision
            group.append(k)
            keys.append(heads[k] + client_id)
        # repr of a float is the shortest text that reads back as the same double.
        args = [repr(float(value)) if n != 2 else str(value) for term in terms for n, value in enumerate(term)]
        now = "" if now_ms is None else str(int(now_ms))
        if self._cluster is not None:
            return await self._take_per_group(self._cluster, takes, keys, group, which, [now, *args])
        call: list[bytes | str] = [*keys, now, bytes(which), *args]
        try:
            reply = await self._evalsha(call, len(keys))
        except NoScriptError:
            # The script cache is empty after a Redis restart or SCRIPT FLUSH. A NOSCRIPT reply
            # means nothing ran, so running it now still makes these decisions once.
            await self._client.script_load(LUA)
            reply = await self._evalsha(call, len(keys))
        return _decisions(reply, takes)

    async def _evalsha(self, call: list[bytes | str], keys: int) -> object:
        """The script on one Redis, over the connection this object keeps for it.

        One connection, written to and read from directly: the client's ``evalsha`` (its pool's
        checkout and release, its retry wrapper, its events) cost 71 µs of CPU per round trip
        where the connection's own send and read cost 30 (EVALSHA in a loop, uvloop, one core,
        2026-12-06; a raw asyncio protocol: 11). The batcher sends one call at a time; anyone
        else calling meanwhile takes a pooled connection as before. redis-py closes the
        connection on any failure or cancellation mid-call, and the next call reconnects it.
        """
        assert self._single is not None, "a cluster's calls go through _take_per_group"
        if self._calling:
            return await self._single.evalsha(SHA, keys, *call)
        self._calling = True
        try:
            connection = self._connection
            if connection is None:
                connection = self._connection = await self._single.connection_pool.get_connection()
            command = connection.pack_command("EVALSHA", SHA, keys, *call)
            await connection.send_packed_command(command, check_health=False)
            return await connection.read_response()
        finally:
            self._calling = False

    async def _take_per_group(
        self,
        cluster: RedisCluster,
        takes: Sequence[Take],
        keys: list[bytes],
        group: list[int],
        which: bytearray,
        args: list[str],
    ) -> list[Decision]:
        """``args``: now and every term of the batch (each call gets them all: they are few)."""
        by_group: dict[int, list[int]] = {}  # group -> positions in the batch, in order
        for position, k in enumerate(group):
            by_group.setdefault(k, []).append(position)
        calls: list[tuple[int, list[int], list[bytes], list[bytes | str]]] = [
            (k, positions, [keys[i] for i in positions], [args[0], bytes(which[i] for i in positions), *args[1:]])
            for k, positions in by_group.items()
        ]
        replies: list[object] = [NoScriptError()] * len(calls)
        nodes, slots = cluster.nodes_manager, self._slots
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
                    k, _, call_keys, call_args = calls[n]
                    # Sent to the node of the group's slot, known since the start: redis-py would
                    # otherwise compute every key's slot to find that one (~8 calls per decision,
                    # benchmarks/ratelimit_groups.py). A MOVED reply (a failover, a resharding)
                    # makes redis-py route the retry by the keys.
                    node = nodes.get_node_from_slot(slots[k])
                    pipe.execute_command("EVALSHA", SHA, len(call_keys), *call_keys, *call_args, target_nodes=node)
                for n, reply in zip(todo, await pipe.execute(raise_on_error=False), strict=True):
                    replies[n] = reply
        decisions: list[Decision | None] = [None] * len(keys)
        for (_, positions, _, _), reply in zip(calls, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            for position, decision in zip(positions, _decisions(reply, [takes[i] for i in positions]), strict=True):
                decisions[position] = decision
        return [decision for decision in decisions if decision is not None]


def _decisions(reply: object, takes: Sequence[Take]) -> list[Decision]:
    """The script's flat reply, six values per decision, as the decisions of ``takes``."""
    assert isinstance(reply, list) and len(reply) == 6 * len(takes)
    return [
        Decision(
            allowed=reply[i] > 0,
            remaining=int(reply[i + 1]),
            retry_after_ms=int(reply[i + 2]),
            reset_ms=int(reply[i + 3]),
            bucket=Bucket(float(reply[i + 4]), int(reply[i + 5])),
            leased=float(one.lease) if reply[i] == 2 else 0.0,
        )
        for i, one in zip(range(0, len(reply), 6), takes, strict=True)
    ]
