"""Where each outbox reader has got to: the rows of ``search_indexer_checkpoint``.

A streaming indexer has one row (``INDEXER_NAME``) that only moves forward; a reindex *holds* a
row at the lowest checkpoint while it builds, so pruning keeps every change it may replay, and
releases it when done. A reindex that died after its alias swap leaves its hold row behind; the
streamer adopts it (re-reading from there). Which seq is safe to store is decided by the cursor
in :mod:`indexer.outbox`; pruning rows behind every checkpoint is there too.

A streaming indexer's row is *seen* (``seen_at``) whenever that indexer prunes. A row of another
name not seen for ``INDEXER_CHECKPOINT_EXPIRY_S`` belongs to an indexer nobody runs any more
(an ``INDEXER_NAME`` renamed or retired): :func:`expire_checkpoints` deletes it, since its
``last_seq`` would hold pruning back forever (issue 23). Reindex holds (``reindex:<alias>``) are
never expired here: a running reindex holds its advisory lock, and a dead one's hold is adopted.
"""

from __future__ import annotations

import asyncpg


async def read_checkpoint(conn: asyncpg.Connection, name: str) -> int:
    """The stored checkpoint for ``name``, created at 0 when it does not exist yet."""
    await conn.execute(
        "INSERT INTO search_indexer_checkpoint (name, last_seq) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING",
        name,
    )
    return int(await conn.fetchval("SELECT last_seq FROM search_indexer_checkpoint WHERE name = $1", name))


async def advance_checkpoint(conn: asyncpg.Connection, name: str, seq: int) -> None:
    """Move ``name`` forward to ``seq``; never backwards (a second writer cannot rewind it)."""
    await conn.execute(
        """INSERT INTO search_indexer_checkpoint (name, last_seq, updated_at) VALUES ($1, $2, now())
           ON CONFLICT (name) DO UPDATE SET last_seq = EXCLUDED.last_seq, updated_at = now()
            WHERE search_indexer_checkpoint.last_seq < EXCLUDED.last_seq""",
        name,
        seq,
    )


async def hold_checkpoint(conn: asyncpg.Connection, name: str) -> int:
    """Register ``name`` at the lowest existing checkpoint, so pruning keeps what it will need.

    Pruning deletes only rows at or below every checkpoint, and a valid checkpoint is below
    any seq a running or future transaction can hold — so from here on nothing that ``name``
    may still read is pruned. Returns the registered position.
    """
    return int(
        await conn.fetchval(
            """INSERT INTO search_indexer_checkpoint (name, last_seq, updated_at)
               SELECT $1, coalesce(min(last_seq), 0), now() FROM search_indexer_checkpoint
               ON CONFLICT (name) DO UPDATE SET last_seq = EXCLUDED.last_seq, updated_at = now()
               RETURNING last_seq""",
            name,
        )
    )


async def release_checkpoint(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute("DELETE FROM search_indexer_checkpoint WHERE name = $1", name)


async def adopt_abandoned_hold(conn: asyncpg.Connection, name: str, hold: str, lock: str) -> int | None:
    """Take over the checkpoint row ``hold`` of a reindex that died, if there is one.

    A reindex that dies after its alias swap may leave changes the streamer wrote to the old
    index missing from the new one; its hold row says from where it still had to replay. When
    no reindex holds the advisory lock ``lock``, the row is abandoned: move checkpoint ``name``
    back to it (re-reading is idempotent: every write carries its version) and delete it.
    Returns the seq rewound to, or ``None`` when there was nothing to adopt.
    """
    seq = await conn.fetchval("SELECT last_seq FROM search_indexer_checkpoint WHERE name = $1", hold)
    if seq is None or not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", lock):
        return None  # nothing abandoned, or a reindex is running right now
    try:
        async with conn.transaction():
            seq = await conn.fetchval("DELETE FROM search_indexer_checkpoint WHERE name = $1 RETURNING last_seq", hold)
            if seq is None:
                return None
            await conn.execute(
                "UPDATE search_indexer_checkpoint SET last_seq = least(last_seq, $2), updated_at = now() "
                "WHERE name = $1",
                name,
                seq,
            )
        return int(seq)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", lock)


async def expire_checkpoints(conn: asyncpg.Connection, name: str, older_than_s: float) -> list[tuple[str, int]]:
    """Mark ``name`` seen now; delete the rows of other streams not seen for ``older_than_s``.

    Returns the (name, last_seq) of each row deleted, for the log.
    """
    await conn.execute("UPDATE search_indexer_checkpoint SET seen_at = now() WHERE name = $1", name)
    rows = await conn.fetch(
        """DELETE FROM search_indexer_checkpoint
            WHERE name <> $1 AND name NOT LIKE 'reindex:%'
              AND seen_at < now() - make_interval(secs => $2)
        RETURNING name, last_seq""",
        name,
        older_than_s,
    )
    return [(str(r["name"]), int(r["last_seq"])) for r in rows]
