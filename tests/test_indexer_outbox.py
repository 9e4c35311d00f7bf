"""The outbox cursor's arithmetic, against a model of concurrent transactions (no servers).

The model follows Postgres where it matters: a transaction gets its xid at its first write,
before it draws any outbox seq; seqs are handed out in time order; rows become visible at
commit; a snapshot's ``xmax`` is the latest *completed* xid + 1 and its ``xip`` lists only the
running transactions below it — a running transaction with a newer xid is in neither (as in
Postgres's GetSnapshotData); the reader's own statement is a transaction that takes the next
xid (``pg_current_xact_id()``) and commits after the read. The reader must process
every committed row, and its checkpoint must never pass a row that is unprocessed or that a
running transaction may still commit.

On top of it, a model of the streamer and a full reindex sharing the outbox (indexer.reindex's
steps, indexer.service's recovery): whatever either dies of or however writes interleave, no
committed change may be missing from the live index once the stream has caught up, and the
stored checkpoints must always be a safe place to restart from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

from hypothesis import example, given, settings
from hypothesis import strategies as st

from indexer.outbox import Change, Horizon, OutboxCursor, Window, make_window, running_at


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
    pruned: set[int] = field(default_factory=set)  # outbox rows deleted behind every checkpoint

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


def snapshot(db: Database) -> tuple[dict[int, int], Horizon]:
    """One statement's snapshot: the outbox rows it sees (seq -> xid), and where it stands."""
    visible = {seq: xid for seq, xid in db.rows("committed").items() if seq not in db.pruned}
    xmax = db.latest_completed + 1
    xip = frozenset(t.xid for t in db.running() if t.xid < xmax)
    me = db.next_xid  # the statement's own xid, assigned after its snapshot
    db.next_xid += 1
    db.latest_completed = max(db.latest_completed, me)  # it commits right after the statement
    return visible, Horizon(max(visible, default=0), running_at(xip, xmax, me), me)


def read(db: Database, cursor: OutboxCursor, limit: int) -> Window:
    """What ``read_window``'s SQL returns, computed from the model."""
    visible, now = snapshot(db)
    late = [
        Change(seq, 0, "upsert")
        for seq, xid in sorted(visible.items())
        if xid in cursor.inflight and seq > cursor.inflight[xid] and cursor.late_floor < seq <= cursor.read_to
    ][: limit if cursor.inflight else 0]
    fresh = [Change(seq, 0, "upsert") for seq in sorted(visible) if seq > cursor.read_to][:limit]
    return make_window(now.running, late, fresh, limit=limit, scanned_late=bool(cursor.inflight))


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


def apply(db: Database, op: str, arg: int) -> None:
    if op == "begin":
        db.begin()
    elif op == "write":
        db.write(arg)
    elif op in ("commit", "abort"):
        db.end(arg, "committed" if op == "commit" else "aborted")


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
        if op == "read":
            step()
        else:
            apply(db, op, arg)
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


def test_a_reindex_snapshot_with_nothing_in_flight_accounts_for_every_visible_row() -> None:
    cursor = OutboxCursor.after_snapshot(floor=10, max_visible=50, running=[])
    assert (cursor.checkpoint, cursor.read_to, dict(cursor.inflight)) == (50, 50, {})


def test_a_horizon_is_covered_once_read_past_with_no_finished_transaction_owing_rows() -> None:
    horizon = Horizon(max_visible=50, running=frozenset({8}), me=12)
    assert not OutboxCursor(checkpoint=10, read_to=49).covers(horizon)
    assert OutboxCursor(checkpoint=50, read_to=50).covers(horizon)
    # 8 was running at the snapshot: none of its rows is visible there; they are the stream's.
    assert OutboxCursor(10, 60, MappingProxyType({8: 10})).covers(horizon)
    # 7 had finished: it may have committed rows in (10, 50], which the snapshot shows.
    assert not OutboxCursor(10, 60, MappingProxyType({7: 10})).covers(horizon)
    assert OutboxCursor(50, 60, MappingProxyType({7: 50})).covers(horizon)
    # 13 began after the snapshot: nothing of it is visible there.
    assert OutboxCursor(10, 60, MappingProxyType({13: 10})).covers(horizon)


def commit_one_more(db: Database) -> None:
    """A new transaction that writes one row and commits (the newest is last in ``running()``)."""
    db.begin()
    db.write(len(db.running()) - 1)
    db.end(len(db.running()) - 1, "committed")


writes_between_reads = st.lists(
    st.lists(st.tuples(st.sampled_from(["begin", "write", "write", "commit", "abort"]), st.integers(0, 3)), max_size=6),
    min_size=1,
    max_size=8,
)


@settings(max_examples=3000, deadline=None)
# A transaction seen in flight commits below read_to before the horizon: read_to is already past
# max_visible, yet its row is visible there and unread.
@example([*_LATE_BELOW_FRESH, ("commit", 0)], [[]], 4)
@given(operations, writes_between_reads, st.integers(1, 4))
def test_a_bounded_replay_ends_under_endless_writes_having_read_every_row_of_its_snapshot(
    before: list[tuple[str, int]], between: list[list[tuple[str, int]]], limit: int
) -> None:
    """indexer.reindex's replays: the target is fixed at the start, so however fast the writes
    come the replay ends — and by then it has every change its snapshot showed."""
    db = Database()
    cursor = OutboxCursor.at_checkpoint(0)
    processed: set[int] = set()

    def one_read() -> None:
        nonlocal cursor
        window = read(db, cursor, limit)
        processed.update(change.seq for change in window.changes)
        cursor = cursor.advance(window)

    for op, arg in before:
        if op == "read":
            one_read()
        else:
            apply(db, op, arg)
    visible, horizon = snapshot(db)
    drawn = db.next_seq - 1
    reads = 0
    crossed: tuple[int, int] | None = None  # (reads, seqs drawn) when read_to first passed max_visible
    while not cursor.covers(horizon):
        # The writers never stop: more transactions between every two reads, one new row at least.
        for op, arg in between[reads % len(between)]:
            apply(db, op, arg)
        commit_one_more(db)
        one_read()
        reads += 1
        if crossed is None and cursor.read_to >= horizon.max_visible:
            crossed = (reads, db.next_seq - 1)
        # Before it passes max_visible, each read processes a row at or below it; after, it only
        # finishes the rows below where it stands. It never chases what is written meanwhile.
        if crossed is None:
            assert reads <= drawn + 1
        else:
            assert reads - crossed[0] <= crossed[1] + 1
    assert set(visible) <= processed
    assert all(seq in processed for seq in db.rows("committed") if seq <= cursor.checkpoint)
    assert all(seq > cursor.checkpoint for seq in db.rows("running"))


# --- the streamer and full reindexes, together --------------------------------------------


@dataclass
class Reindex:
    """One run of indexer.reindex.reindex, a statement at a time."""

    index: int
    floor: int  # where it registered its hold row (step 1)
    inherited: int | None  # the hold row of a dead reindex that it found there
    phase: str = "load"
    cursor: OutboxCursor = field(default_factory=lambda: OutboxCursor.at_checkpoint(0))
    horizon: Horizon | None = None
    swapped: bool = False


@dataclass
class Deployment:
    """The streamer (indexer.service) and at most one reindex, over one outbox and an alias.

    ``holds[i]``: the outbox changes that index i holds — written after they committed. The
    stored checkpoints are ``main`` and the ``reindex:<alias>`` row ``hold`` (None: no row).
    """

    limit: int
    db: Database = field(default_factory=Database)
    main: int = 0
    hold: int | None = None
    live: int = 0
    holds: dict[int, set[int]] = field(default_factory=lambda: {0: set()})
    streamer: OutboxCursor = field(default_factory=lambda: OutboxCursor.at_checkpoint(0))
    reindex: Reindex | None = None

    def stream(self) -> bool:
        """One batch: written through the alias, then the checkpoint stored (never backwards)."""
        window = read(self.db, self.streamer, self.limit)
        self.holds[self.live].update(change.seq for change in window.changes)
        self.streamer = self.streamer.advance(window)
        self.main = max(self.main, self.streamer.checkpoint)
        return window.more_waiting

    def adopt(self) -> None:
        """indexer.service at a prune tick: a hold row that no running reindex owns is adopted."""
        if self.reindex is None and self.hold is not None:
            self.main = min(self.main, self.hold)
            self.streamer = OutboxCursor.at_checkpoint(min(self.hold, self.streamer.checkpoint))
            self.hold = None

    def restart_streamer(self) -> None:
        """SIGKILL and start again: resume from the stored checkpoint, adopting a dead reindex's row."""
        stored = self.main
        if self.reindex is None and self.hold is not None:
            stored = min(stored, self.hold)
            self.main = stored
            self.hold = None
        self.streamer = OutboxCursor.at_checkpoint(stored)

    def prune(self) -> None:
        below = self.restart_point()
        self.db.pruned.update(seq for seq in self.db.rows("committed") if seq <= below)

    def restart_point(self) -> int:
        """Where a streamer started now would resume (the lowest stored checkpoint)."""
        return self.main if self.hold is None else min(self.main, self.hold)

    def step_reindex(self) -> None:
        r = self.reindex
        if r is None:  # step 1: the lock, the hold row at the lowest checkpoint (it may exist)
            inherited = self.hold
            self.hold = self.restart_point()
            index = len(self.holds)
            self.holds[index] = set()
            self.reindex = Reindex(index=index, floor=self.hold, inherited=inherited)
        elif r.phase == "load":  # step 3: the products as they are in one snapshot
            _visible, where = snapshot(self.db)
            self.holds[r.index].update(self.db.rows("committed"))
            r.cursor = OutboxCursor.after_snapshot(floor=r.floor, max_visible=where.max_visible, running=where.running)
            r.phase = "replay1"
        elif r.phase in ("replay1", "replay2"):  # steps 4 and 6
            if r.horizon is None:
                _visible, r.horizon = snapshot(self.db)
            elif not r.cursor.covers(r.horizon):
                window = read(self.db, r.cursor, self.limit)
                self.holds[r.index].update(change.seq for change in window.changes)
                advanced = r.cursor.advance(window)
                if advanced.checkpoint != r.cursor.checkpoint:
                    assert self.hold is not None
                    ceiling = advanced.checkpoint if r.inherited is None else min(r.inherited, advanced.checkpoint)
                    self.hold = max(self.hold, ceiling)
                r.cursor = advanced
            else:
                r.horizon = None
                r.phase = "swap" if r.phase == "replay1" else "advance"
        elif r.phase == "swap":  # step 5
            self.live = r.index
            r.swapped = True
            r.phase = "replay2"
        elif r.phase == "advance":  # step 7
            self.main = max(self.main, r.cursor.checkpoint)
            r.phase = "release"
        else:  # step 8
            self.hold = None
            self.reindex = None

    def kill_reindex(self) -> None:
        self.reindex = None  # SIGKILL: its hold row stays as it was

    def fail_reindex(self) -> None:
        """A reindex that fails and runs its ``finally``."""
        r = self.reindex
        if r is not None and not r.swapped and r.inherited is None:
            self.hold = None
        self.reindex = None

    def check_restart_is_safe(self) -> None:
        """A streamer started now (every other process dead) would miss nothing in the live index."""
        point = self.restart_point()
        assert all(seq in self.holds[self.live] for seq in self.db.rows("committed") if seq <= point), (
            f"live index {self.live} misses changes at or below the restart point {point}"
        )
        assert all(seq > point for seq in self.db.rows("running"))
        assert all(seq > self.main for seq in self.db.rows("running"))


deployment_operations = st.lists(
    st.tuples(
        st.sampled_from(
            [
                *["begin", "begin", "write", "write", "write", "commit", "abort"],
                *["stream", "stream", "stream", "restart", "adopt", "prune"],
                *["reindex"] * 6,
                *["kill-reindex", "fail-reindex"],
            ]
        ),
        st.integers(0, 3),
    ),
    min_size=30,
    max_size=200,
)


# A reindex dies after its swap, before replaying a change the streamer wrote to the old index;
# the streamer's checkpoint is held back (T1 open) at the dead reindex's hold row, no lower.
_DIED_AFTER_SWAP = [
    *[("begin", 0), ("write", 0)],  # T1 holds seq 1, open
    ("reindex", 3),  # lock and hold row, load, replay to its horizon: nothing yet
    *[("begin", 0), ("write", 1), ("commit", 1)],  # T2: seq 2
    ("stream", 0),  # seq 2 into the old index
    ("reindex", 0),  # the swap
    ("kill-reindex", 0),
]
# Found by hand: the streamer adopted the dead reindex's row but rewound only when the row was
# below its own checkpoint, so seq 2 never reached the new index.
_ADOPTED_AT_THE_STREAMERS_CHECKPOINT = [*_DIED_AFTER_SWAP, ("adopt", 0)]
# Found by hand: a second reindex that fails before its swap released the dead one's row.
_NEXT_REINDEX_FAILS = [*_DIED_AFTER_SWAP, ("reindex", 0), ("fail-reindex", 0)]
# Found by hand: a second reindex raised the dead one's row past seq 2 as it replayed, then died.
_NEXT_REINDEX_RAISES_THE_ROW = [
    *_DIED_AFTER_SWAP,
    *[("commit", 0), ("stream", 0)],  # T1 commits; the stream passes seq 2
    ("reindex", 1),  # lock and hold row, load
    *[("begin", 0), ("write", 0), ("commit", 0)],  # seq 3
    ("reindex", 2),  # its horizon, one replay batch: its checkpoint passes seq 2
    ("kill-reindex", 0),
]


@settings(max_examples=1500, deadline=None)
@example(_ADOPTED_AT_THE_STREAMERS_CHECKPOINT, 2)
@example(_NEXT_REINDEX_FAILS, 2)
@example(_NEXT_REINDEX_RAISES_THE_ROW, 2)
@given(deployment_operations, st.integers(1, 3))
def test_streamer_and_reindexes_never_lose_a_change_whatever_dies_when(ops: list[tuple[str, int]], limit: int) -> None:
    world = Deployment(limit=limit)
    for op, arg in ops:
        if op == "stream":
            world.stream()
        elif op == "restart":
            world.restart_streamer()
        elif op == "adopt":
            world.adopt()
        elif op == "prune":
            world.prune()
        elif op == "reindex":
            for _ in range(1 + arg):  # one to four statements of the reindex
                world.step_reindex()
                world.check_restart_is_safe()
        elif op == "kill-reindex" and arg == 0:
            world.kill_reindex()
        elif op == "fail-reindex" and arg == 0:
            world.fail_reindex()
        else:
            apply(world.db, op, arg)
        world.check_restart_is_safe()
    reindex = world.reindex
    for txn in world.db.running():
        txn.state = "committed"
    while world.reindex is not None:
        world.step_reindex()
        world.check_restart_is_safe()
    if reindex is not None:  # it completed: the stream begins where it ended
        assert world.main >= reindex.cursor.checkpoint
    world.adopt()
    while world.stream():
        pass
    while world.stream():  # the read above may have been the one that saw the last commits
        pass
    missing = set(world.db.rows("committed")) - world.holds[world.live]
    assert not missing, f"changes {sorted(missing)} never reached the live index {world.live}"
