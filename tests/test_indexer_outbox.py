"""The outbox cursor's arithmetic, against a model of concurrent transactions (no servers).

The model follows Postgres where it matters: a transaction gets its xid at its first write,
before it draws any outbox seq; seqs are handed out in time order; rows become visible at
commit; a snapshot's ``xmax`` is the latest *completed* xid + 1 and its ``xip`` lists only the
running transactions below it — a running transaction with a newer xid is in neither (as in
Postgres's GetSnapshotData); the reader's own statement is a transaction that takes the next
xid (``pg_current_xact_id()``) and commits after the read. The reader must process
every committed row, and its checkpoint must never pass a row that is unprocessed or that a
running transaction may still commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import example, given, settings
from hypothesis import strategies as st

from indexer.outbox import Change, OutboxCursor, Window, make_window, running_at


@dataclass
class Txn:
    xid: int
    seqs: list[int] = field(default_factory=list)
    state: str = "running"


@dataclass
class Database:
    txns: list[Txn] = field(default_factory=list)
    next_xid: int = 100
    next_seq: int = 1
    latest_completed: int = 99

    def begin(self) -> None:
        self.txns.append(Txn(self.next_xid))
        self.next_xid += 1

    def running(self) -> list[Txn]:
        return [t for t in self.txns if t.state == "running"]

    def write(self, pick: int) -> None:
        if running := self.running():
            txn = running[pick % len(running)]
            txn.seqs.append(self.next_seq)
            self.next_seq += 1

    def end(self, pick: int, state: str) -> None:
        if running := self.running():
            txn = running[pick % len(running)]
            txn.state = state
            self.latest_completed = max(self.latest_completed, txn.xid)

    def rows(self, state: str) -> dict[int, int]:
        return {seq: t.xid for t in self.txns if t.state == state for seq in t.seqs}


def read(db: Database, cursor: OutboxCursor, limit: int) -> Window:
    """What ``read_window``'s SQL returns, computed from the model."""
    visible = db.rows("committed")
    xmax = db.latest_completed + 1
    xip = frozenset(t.xid for t in db.running() if t.xid < xmax)
    me = db.next_xid  # the read statement's own xid, assigned after its snapshot
    db.next_xid += 1
    db.latest_completed = max(db.latest_completed, me)  # it commits right after the read
    late = [
        Change(seq, 0, "upsert")
        for seq, xid in sorted(visible.items())
        if xid in cursor.inflight and seq > cursor.inflight[xid] and cursor.late_floor < seq <= cursor.read_to
    ][: limit if cursor.inflight else 0]
    fresh = [Change(seq, 0, "upsert") for seq in sorted(visible) if seq > cursor.read_to][:limit]
    return make_window(running_at(xip, xmax, me), late, fresh, limit=limit, scanned_late=bool(cursor.inflight))


operations = st.lists(
    st.tuples(
        st.sampled_from(["begin", "begin", "write", "write", "commit", "commit", "abort", "read", "read"]),
        st.integers(0, 3),
    ),
    min_size=4,
    max_size=80,
)

# Found by hand: a transaction first seen in progress holds a seq below rows read in the same
# snapshot; and a finished transaction's rows span more than one late page.
_LATE_BELOW_FRESH = [("begin", 0), ("write", 0), ("begin", 0), ("write", 1), ("commit", 1), ("read", 0)]
_LONG_LATE = [("begin", 0), *[("write", 0)] * 5, ("begin", 0), ("write", 1), ("commit", 1), ("read", 0)]


# Found by tests/test_indexer_chaos.py: T2 (newer xid) draws a seq, T1 (older xid) draws a
# higher one and commits; the snapshot's xmax stops below T2's xid, so xip does not list T2.
_NEWER_XID_ABOVE_XMAX = [("begin", 0), ("begin", 0), ("write", 1), ("write", 0), ("commit", 0), ("read", 0)]


@settings(max_examples=5000, deadline=None)
@example(_NEWER_XID_ABOVE_XMAX, 4)
@example(_LATE_BELOW_FRESH, 4)
@example([*_LONG_LATE, ("commit", 0), ("read", 0), ("begin", 0), ("write", 0), ("commit", 0), ("read", 0)], 2)
@given(operations, st.integers(1, 4))
def test_cursor_never_loses_a_committed_row_nor_checkpoints_past_one(ops: list[tuple[str, int]], limit: int) -> None:
    db = Database()
    cursor = OutboxCursor.at_checkpoint(0)
    processed: set[int] = set()

    def step() -> bool:
        nonlocal cursor
        window = read(db, cursor, limit)
        processed.update(change.seq for change in window.changes)
        cursor = cursor.advance(window)
        committed = db.rows("committed")
        assert all(seq in processed for seq in committed if seq <= cursor.checkpoint)
        assert all(seq > cursor.checkpoint for seq in db.rows("running"))
        return window.more_waiting

    for op, arg in ops:
        if op == "begin":
            db.begin()
        elif op == "write":
            db.write(arg)
        elif op in ("commit", "abort"):
            db.end(arg, "committed" if op == "commit" else "aborted")
        else:
            step()
    for txn in db.running():
        txn.state = "committed"
    while step():
        pass
    while step():  # the read above may have been the one that saw the last commits
        pass
    assert set(db.rows("committed")) <= processed
    # With nothing running any more, the checkpoint reaches the last committed row.
    assert cursor.checkpoint >= max([0, *db.rows("committed")])


def test_restarting_from_a_checkpoint_resumes_after_it() -> None:
    cursor = OutboxCursor.at_checkpoint(41)
    assert (cursor.checkpoint, cursor.read_to, dict(cursor.inflight)) == (41, 41, {})


def test_transactions_in_flight_at_a_reindex_snapshot_hold_the_checkpoint() -> None:
    cursor = OutboxCursor.after_snapshot(floor=10, max_visible=50, running=[7, 8])
    assert cursor.read_to == 50 and cursor.checkpoint == 10
    window = make_window(frozenset({8}), [Change(12, 1, "upsert")], [], limit=10, scanned_late=True)
    advanced = cursor.advance(window)
    assert dict(advanced.inflight) == {8: 10}  # 7 finished and its rows were read; 8 still runs
    assert advanced.checkpoint == 10
