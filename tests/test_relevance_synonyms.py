"""The synonym file is reloaded by a running proxy on SIGHUP: no reindex, no restart.

A real ``hos-search proxy`` with two workers (the supervisor passes SIGHUP on to each) over
the shared search catalog on the real engine; the test edits the file the proxy was started
with, signals the supervisor, and polls until every worker answers with the new synonym.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, TCPConnector

from catalog.processes import stop_process
from devstack.stack import StackUrls
from proxy.synonyms import DEFAULT_SYNONYMS_PATH
from tests.conftest import SearchCatalog
from tests.proxy_support import proxy_env, spawn_proxy, wait_healthy

# Snorlax's Japanese name: no product says it, so only a synonym can make it find Snorlax.
NEW_WORD = "kabigon"


async def _search(url: str, q: str) -> dict[str, Any]:
    # A new connection per request, so the kernel spreads them over both workers.
    async with (
        ClientSession(connector=TCPConnector(force_close=True)) as session,
        session.get(url + "/api/search", params={"q": q}) as response,
    ):
        assert response.status == 200, await response.text()
        return dict(await response.json())


def _finds_snorlax(body: dict[str, Any]) -> bool:
    items = body["items"]
    return bool(items) and not body["relaxed"] and all("Snorlax" in i["name"] + i["description"] for i in items)


async def _until(predicate: Any, url: str, q: str, *, consecutive: int, timeout: float = 30) -> None:
    """Poll until ``consecutive`` answers in a row satisfy ``predicate`` (every worker has it)."""
    deadline = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < deadline:
        streak = streak + 1 if predicate(await _search(url, q)) else 0
        if streak >= consecutive:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {consecutive} answers in a row for {q!r} within {timeout} s")


def _stderr_lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """The proxy's stderr, line by line, read by a daemon thread (never blocks the test's end)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put("")  # EOF

    threading.Thread(target=pump, daemon=True).start()
    return lines


async def _logged(lines: queue.Queue[str], text: str, times: int, read: list[str], timeout: float = 30) -> None:
    """Wait until the proxy's stderr has shown ``text`` ``times`` times; every line read is kept
    in ``read`` (for the caller, and for the failure's message)."""
    deadline = time.monotonic() + timeout
    seen = 0
    while seen < times:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{seen} of {times} times {text!r} logged within {timeout} s: {read[-20:]}"
        try:
            # Polled, not read in asyncio's default executor: its few threads are shared by the
            # whole session, and this wait failed only in full runs (never alone).
            line = lines.get_nowait()
        except queue.Empty:
            await asyncio.sleep(0.05)
            continue
        assert line, f"the proxy exited: {read[-20:]}"
        read.append(line.rstrip())
        # Both workers log at the same moment into one pipe: two records can share a read line.
        seen += line.count(text)


def _drain(lines: queue.Queue[str], read: list[str]) -> None:
    """Add to ``read`` what the proxy has logged and nobody has read yet."""
    while True:
        try:
            read.append(lines.get_nowait().rstrip())
        except queue.Empty:
            return


async def test_an_edited_synonym_file_takes_effect_on_sighup_without_reindex(
    search_catalog: SearchCatalog, stack_urls: StackUrls, tmp_path: Path
) -> None:
    synonyms = tmp_path / "synonyms.txt"
    shutil.copyfile(DEFAULT_SYNONYMS_PATH, synonyms)
    proc, url = spawn_proxy(proxy_env(search_catalog, stack_urls, SYNONYMS_PATH=str(synonyms)), workers=2)
    try:
        await wait_healthy(url, proc)
        stderr = _stderr_lines(proc)
        assert _finds_snorlax(await _search(url, "snorlax")), "the catalog should carry Snorlax products"
        assert not _finds_snorlax(await _search(url, NEW_WORD))

        synonyms.write_text(synonyms.read_text() + f"\n{NEW_WORD}, snorlax\n")
        proc.send_signal(signal.SIGHUP)
        await _until(_finds_snorlax, url, NEW_WORD, consecutive=8)

        # A file that does not parse is refused: the synonyms in use stay, and so does the proxy.
        synonyms.write_text(synonyms.read_text() + "this line has no comma\n")
        proc.send_signal(signal.SIGHUP)
        await _logged(stderr, "synonyms NOT reloaded", 2, [])  # each worker refused it
        assert proc.poll() is None
        for _ in range(6):
            assert _finds_snorlax(await _search(url, NEW_WORD))

        # Folded and split like any query: "KABIGON!" is the word too.
        assert _finds_snorlax(await _search(url, NEW_WORD.upper() + "!"))
    finally:
        stop_process(proc, 30)
    assert proc.returncode == 0


async def test_a_reload_signal_while_workers_start_kills_none_and_still_reloads(
    search_catalog: SearchCatalog, stack_urls: StackUrls, tmp_path: Path
) -> None:
    """SIGHUPs from the moment the supervisor has spawned its workers, while they import: before
    the fix a worker still starting died of one (status -1) and was restarted; a restart after the
    synonym file broke could not start at all (the crash loop one CI run showed)."""
    synonyms = tmp_path / "synonyms.txt"
    shutil.copyfile(DEFAULT_SYNONYMS_PATH, synonyms)
    env = proxy_env(search_catalog, stack_urls, SYNONYMS_PATH=str(synonyms), LOG_LEVEL="info")
    proc, url = spawn_proxy(env, workers=2)
    try:
        stderr = _stderr_lines(proc)
        read: list[str] = []
        await _logged(stderr, "proxy supervisor:", 1, read)  # its SIGHUP handler is in place
        # The file changes now, while the workers import: the SIGHUPs must reach them all.
        synonyms.write_text(synonyms.read_text() + f"\n{NEW_WORD}, snorlax\n")
        for _ in range(40):  # two seconds of reload signals, from the workers' first instants
            proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.05)
        await wait_healthy(url, proc)
        await _until(_finds_snorlax, url, NEW_WORD, consecutive=8)
    finally:
        stop_process(proc, 30)
    _drain(stderr, read)
    assert not [line for line in read if "exited with status" in line], read
    assert proc.returncode == 0


async def test_a_worker_that_cannot_start_is_retried_later_each_time_and_returns_once_fixed(
    search_catalog: SearchCatalog, stack_urls: StackUrls, tmp_path: Path
) -> None:
    """A worker killed while the synonym file is broken cannot start again. Before the backoff its
    slot was restarted every second for as long as the file stayed broken; now each restart waits
    twice as long as the last (proxy.restarts), the other worker keeps answering, and a fixed file
    lets the next restart succeed."""
    synonyms = tmp_path / "synonyms.txt"
    shutil.copyfile(DEFAULT_SYNONYMS_PATH, synonyms)
    good = synonyms.read_text()
    env = proxy_env(search_catalog, stack_urls, SYNONYMS_PATH=str(synonyms), LOG_LEVEL="info")
    proc, url = spawn_proxy(env, workers=2)
    read: list[str] = []
    try:
        stderr = _stderr_lines(proc)
        await _logged(stderr, "proxy ready", 2, read, timeout=60)  # both workers have read the file
        synonyms.write_text(good + "this line has no comma\n")
        os.kill(_workers(proc)[0], signal.SIGKILL)
        # The kill's restart waits 1 s and each failed start doubles it: the fourth exit, 8 s.
        # (Repeated log lines are folded into "and N more like it", so not every delay shows.)
        delays: list[int] = []
        while not delays or max(delays) < 8:
            await _logged(stderr, "restarting it in", 1, read, timeout=60)
            delays = [int(m[1]) for line in read for m in re.finditer(r"restarting it in (\d+) s", line)]
        assert delays[0] == 1 and delays == sorted(delays), "\n".join(read)
        assert (await _search(url, "snorlax"))["items"]  # the other worker answers meanwhile

        synonyms.write_text(good)
        deadline = time.monotonic() + 60  # the slot's next start is at most 16 s away
        while len(_workers(proc)) < 2 or not await _answers_on_new_connections(url, 6):
            assert time.monotonic() < deadline, f"the worker never came back: {read[-20:]}"
            await asyncio.sleep(0.2)
    finally:
        stop_process(proc, 30)
    _drain(stderr, read)
    assert proc.returncode == 0


def _workers(proc: subprocess.Popen[str]) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


async def _answers_on_new_connections(url: str, times: int) -> bool:
    """Whether ``times`` searches on new connections (spread by the kernel over the workers) answer."""
    for _ in range(times):
        if not (await _search(url, "snorlax"))["items"]:
            return False
    return True
