"""Reading ``search_outbox`` in order, and knowing how far it is safe to checkpoint.

Every product change appends an outbox row in its own transaction. ``seq`` is handed out when
the row is inserted, but transactions commit in any order: T1 takes seq 10 and stays open, T2
takes seq 11 and commits, and a reader that sees 11 and checkpoints "11" has lost 10 forever.
Nor is "only consume rows whose txid < snapshot xmin" enough on its own: xids are assigned when
a transaction first writes, not when it draws a seq, so a transaction with a *larger* xid can
hold a *smaller* seq (T_a gets xid 100, idles; T_b gets xid 101, seq 10, idles; T_a then takes
seq 11 and commits first) — and with a seq checkpoint one still needs to know where to stop.

How the cursor stays exact (:class:`OutboxCursor`, pure, unit-tested with random interleavings):

- Each read is one statement, so one snapshot S: ``pg_current_snapshot()`` plus the rows,
  plus ``pg_current_xact_id()``: an xid ``me`` the statement takes *after* S, so every xid
  handed out before S is below it. The transactions that may be in progress at S are
  ``running(S)`` = ``xip(S)`` ∪ [``xmax(S)``, ``me``). Both parts matter: Postgres sets
  ``xmax`` to the latest *completed* xid + 1 and lists in ``xip`` only running xids below it,
  so a running transaction with a newer xid than every completed one is in neither
  (found by tests/test_indexer_chaos.py: T2 takes a seq, T1 — an older xid — takes a higher
  one and commits; T2 is invisible yet not in ``xip``). Taking an xid per read costs a commit
  record; the reader's session runs with ``synchronous_commit = off`` so it is not flushed.
- Precondition (true for the catalog's triggers, which fire after the product or seller row
  was written): a transaction has its xid *before* it draws an outbox seq. Then a transaction
  that is not in ``running(S)`` and not finished at S gets its xid, hence every seq, after S —
  so all its seqs are larger than every seq visible in S. (A hand-written ``INSERT INTO
  search_outbox`` as a transaction's first write could break this by a few microseconds; the
  identity sequence must also keep its default ``CACHE 1``.)
- ``read_to`` R: every row with seq ≤ R has been processed, except rows of transactions in
  ``inflight``. Fresh rows are read with ``seq > R``; R moves to the last one.
- ``inflight`` maps each xid seen in progress to a floor: its unread rows all have seq > floor.
  An xid first seen in ``running`` gets floor = R as it was *before* this read (by the
  precondition it cannot hold anything lower). Each read also fetches, in the same snapshot,
  the rows of inflight xids in (floor, R]: a finished transaction's rows are visible now, a
  running one's are not. A finished xid whose rows were all read is dropped; if the page was
  full, its floor moves to the last seq read.
- The checkpoint is ``min(R, every inflight floor)``: no row at or below it is unprocessed, and
  no running or future transaction can still add one there.

How far a bounded reader must go (:class:`Horizon`, :meth:`OutboxCursor.covers`): a reindex's
replay reads up to where the outbox stood when it began, never "until nothing is waiting" —
under writes faster than the replay, that never came (200 updates/s on 10k products: still
replaying after 600 s). Where it stood is a snapshot H, not a seq: T = ``max(seq)`` in H, but
rows below T may belong to transactions still running at H. So the bound is "every row visible
in H": the cursor has read past T, and no transaction that had *finished* at H (xid below H's
``me`` and not in ``running(H)``) still has unread rows at or below T. Rows of transactions
running at H, or begun since, are not visible in H and are left to later readers: the cursor's
checkpoint stays below them, so a reader resuming from it reads them. It ends whatever the
write rate: T is committed (and, above the reader's checkpoint, never pruned), so fresh reads
reach it; then each finished transaction's remaining rows are read and it is dropped.

Memory is bounded: one page of rows (``limit``) and one entry per transaction in progress in
the cluster (at most ``max_connections`` plus prepared transactions); never one entry per row.
Transactions of other databases on the same server also appear in ``running``: they only hold the
checkpoint back while they run, and processing never waits for them.

This module never writes to the engine and never decides what a change means for the index;
where each reader has got to (its checkpoint row) is :mod:`indexer.checkpoint`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

import asyncpg


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    product_id: int
    op: str
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """One read of the outbox: the xids that may be in progress at its snapshot, and its rows."""

    running: frozenset[int]
    late: tuple[Change, ...]  # rows of inflight transactions below read_to
    fresh: tuple[Change, ...]  # rows above read_to, in seq order
    late_full: bool  # the late page hit its limit: more late rows may follow
    fresh_full: bool  # the fresh page hit its limit: more rows are waiting

    @property
    def changes(self) -> tuple[Change, ...]:
        return self.late + self.fresh

    @property
    def more_waiting(self) -> bool:
        return self.late_full or self.fresh_full


@dataclass(frozen=True, slots=True)
class Horizon:
    """Where the outbox stood at one snapshot H (see the module docstring).

    ``max_visible``: the largest seq visible in H; ``running``: the xids that may be in progress
    at H (:func:`running_at`); ``me``: an xid taken after H, so every xid below it that is not in
    ``running`` had committed or aborted at H.
    """

    max_visible: int
    running: frozenset[int]
    me: int

    def finished(self, xid: int) -> bool:
        """Whether transaction ``xid`` had ended at H: if it committed, its rows are visible in H."""
        return xid < self.me and xid not in self.running


_NO_INFLIGHT: Mapping[int, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class OutboxCursor:
    """Where a reader of the outbox stands; see the module docstring for the invariants."""

    checkpoint: int
    read_to: int
    inflight: Mapping[int, int] = field(default_factory=lambda: _NO_INFLIGHT)

    @classmethod
    def at_checkpoint(cls, seq: int) -> OutboxCursor:
        """Resume from a stored checkpoint: nothing in flight can hold a seq at or below it."""
        return cls(checkpoint=seq, read_to=seq)

    @classmethod
    def after_snapshot(cls, *, floor: int, max_visible: int, running: Iterable[int]) -> OutboxCursor:
        """Continue after a snapshot whose visible rows are all accounted for (a reindex load).

        ``max_visible`` is the largest seq visible in the snapshot; transactions ``running`` at
        it (see :func:`running_at`) may hold any seq above ``floor`` (a checkpoint valid before
        the snapshot was taken). With none running, every row up to ``max_visible`` is
        accounted for: the checkpoint is there, as :meth:`advance` would put it — a bounded
        replay may end without a single read (tests/test_indexer.py, reindex on start).
        """
        read_to = max(floor, max_visible)
        inflight = dict.fromkeys(running, floor)
        return cls(
            checkpoint=min([read_to, *inflight.values()]),
            read_to=read_to,
            inflight=MappingProxyType(inflight),
        )

    @property
    def late_floor(self) -> int:
        return min(self.inflight.values(), default=self.read_to)

    def covers(self, horizon: Horizon) -> bool:
        """Whether every row visible at ``horizon``'s snapshot has been processed.

        Unprocessed rows at or below ``read_to`` belong to inflight transactions, above their
        floors. Those still running at the snapshot (or begun since) have no row visible in it;
        one that had finished may, at or below ``max_visible`` — so it must have none left there.
        """
        return self.read_to >= horizon.max_visible and all(
            floor >= horizon.max_visible for xid, floor in self.inflight.items() if horizon.finished(xid)
        )

    def advance(self, window: Window) -> OutboxCursor:
        """The cursor after every row of ``window`` has been processed."""
        last_late = window.late[-1].seq if window.late else None
        inflight: dict[int, int] = {}
        for xid, floor in self.inflight.items():
            if xid in window.running:
                inflight[xid] = floor  # still running: its rows were invisible
            elif window.late_full:
                # Finished, but the page ended early: rows of this xid up to the page's last
                # seq are read (the page is in seq order), later ones are not yet.
                inflight[xid] = max(floor, last_late if last_late is not None else floor)
            # else: finished and all its rows below read_to were in this page — done.
        for xid in window.running:
            if xid not in self.inflight:
                inflight[xid] = self.read_to
        read_to = window.fresh[-1].seq if window.fresh else self.read_to
        checkpoint = max(self.checkpoint, min([read_to, *inflight.values()]))
        return OutboxCursor(checkpoint=checkpoint, read_to=read_to, inflight=MappingProxyType(inflight))


# One statement, so one snapshot for the snapshot itself, the late rows and the fresh rows.
_READ_WINDOW_SQL = """
SELECT 0 AS part, pg_current_snapshot() AS snap, pg_current_xact_id() AS me,
       NULL::bigint AS seq, NULL::bigint AS product_id, NULL::text AS op, NULL::timestamptz AS created_at
UNION ALL
(SELECT 1, NULL, NULL, o.seq, o.product_id, o.op, o.created_at
   FROM search_outbox o
   JOIN unnest($1::xid8[], $2::bigint[]) AS f(txid, floor) ON o.txid = f.txid AND o.seq > f.floor
  WHERE o.seq > $3 AND o.seq <= $4
  ORDER BY o.seq
  LIMIT $5)
UNION ALL
(SELECT 2, NULL, NULL, seq, product_id, op, created_at
   FROM search_outbox
  WHERE seq > $4
  ORDER BY seq
  LIMIT $6)
"""


async def read_window(conn: asyncpg.Connection, cursor: OutboxCursor, limit: int) -> Window:
    """Read up to ``limit`` changes: late rows of inflight transactions first, then fresh ones."""
    xids = list(cursor.inflight)
    floors = [cursor.inflight[x] for x in xids]
    records = await conn.fetch(
        _READ_WINDOW_SQL,
        xids,
        floors,
        cursor.late_floor,
        cursor.read_to,
        limit if xids else 0,
        limit,
    )
    running: frozenset[int] = frozenset()
    late: list[Change] = []
    fresh: list[Change] = []
    for record in records:
        part = record["part"]
        if part == 0:
            _xmin, xmax, xip = record["snap"]
            running = running_at(xip, xmax, record["me"])
        else:
            change = Change(record["seq"], record["product_id"], record["op"], record["created_at"])
            (late if part == 1 else fresh).append(change)
    return make_window(running, late, fresh, limit=limit, scanned_late=bool(xids))


# One statement, so one snapshot: the snapshot itself, an xid taken after it, and its last seq.
# Inside a REPEATABLE READ transaction, as the first statement, it also fixes that transaction's
# snapshot (a reindex's load).
_HORIZON_SQL = """
SELECT pg_current_snapshot() AS snap, pg_current_xact_id() AS me,
       (SELECT coalesce(max(seq), 0) FROM search_outbox) AS max_visible
"""


async def read_horizon(conn: asyncpg.Connection) -> Horizon:
    """Where the outbox stands now (one snapshot); see :class:`Horizon`."""
    record = await conn.fetchrow(_HORIZON_SQL)
    assert record is not None
    _xmin, xmax, xip = record["snap"]
    me = int(record["me"])
    return Horizon(max_visible=int(record["max_visible"]), running=running_at(xip, xmax, me), me=me)


def running_at(xip: Iterable[int], xmax: int, me: int) -> frozenset[int]:
    """Every xid that may be in progress at a snapshot: its ``xip``, and every xid from its
    ``xmax`` up to ``me`` (an xid taken after the snapshot), which Postgres leaves out of
    ``xip`` (see the module docstring)."""
    return frozenset(int(x) for x in xip) | frozenset(range(int(xmax), int(me)))


def make_window(
    running: frozenset[int], late: Sequence[Change], fresh: Sequence[Change], *, limit: int, scanned_late: bool
) -> Window:
    """A window from up to ``limit`` late and ``limit`` fresh rows, both in seq order."""
    late_full = scanned_late and len(late) >= limit
    # Late rows come first in a batch; fresh ones only fill the rest of it.
    room = max(0, limit - len(late))
    fresh_full = len(fresh) > room or len(fresh) >= limit
    return Window(
        running=running, late=tuple(late), fresh=tuple(fresh[:room]), late_full=late_full, fresh_full=fresh_full
    )


async def prune(conn: asyncpg.Connection, *, batch: int = 10_000) -> int:
    """Delete up to ``batch`` outbox rows that every registered reader has passed."""
    status = await conn.execute(
        """DELETE FROM search_outbox WHERE seq IN (
               SELECT seq FROM search_outbox
                WHERE seq <= (SELECT min(last_seq) FROM search_indexer_checkpoint)
                ORDER BY seq LIMIT $1)""",
        batch,
    )
    return int(status.split()[-1])
