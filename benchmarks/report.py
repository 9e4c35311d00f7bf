"""The benchmark report: every bench under ``benchmarks/`` in one run, written up as markdown, JSON and plots.

    python -m benchmarks.report [--quick] [--only seed,proxy,...] [--out benchmarks/results]

(``make bench``, ``make bench QUICK=1``.) Starts the dev stack once (or uses the servers that
``DATABASE_URL`` / ``REDIS_URL`` / ``ELASTICSEARCH_NODE`` name), runs each benchmark against it as a
subprocess with ``--json`` — one that fails or times out is recorded as failed, the others still
run — and writes ``<out>/<YYYY-MM-DD>.md`` and ``.json`` (every figure with its baseline, ratio and
goal, and the machine), PNG plots in ``<out>/<YYYY-MM-DD>/``, and each benchmark's output and raw
JSON in ``<out>/scratch/`` (not committed).

Each bench writes its figures with :class:`benchmarks.kit.results.Results`; this module reads them and
never imports a bench (each runs as ``python -m benchmarks.<name>``, in its own process).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.kit.processes import cores_used_outside, interrupt_on_sigterm, pinning_cpus
from benchmarks.kit.results import OUTSIDE_CORES_MAX, busy, verdict_of
from benchmarks.kit.stack import DevStack
from catalog.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent


# --- the run ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    name: str
    what: str
    full: list[str]
    quick: list[str]
    timeout_s: float  # full run; a quick run gets a third


BENCHES = [
    Bench(
        "seed",
        "seeding speed against a plain COPY",
        ["-m", "benchmarks.seed", "--products", "150000", "--no-breakdown"],
        ["-m", "benchmarks.seed", "--products", "20000", "--small", "0", "--no-breakdown"],
        900,
    ),
    Bench(
        "indexer",
        "reindex against a raw async_bulk; stream commit -> searchable",
        ["-m", "benchmarks.indexing", "--products", "150000", "--seconds", "30", "--refresh", "1s,500ms"],
        ["-m", "benchmarks.indexing", "--products", "10000", "--seconds", "8", "--refresh", "1s,500ms"],
        1500,
    ),
    Bench(
        "proxy",
        "search latency at the catalog size; proxy overhead against the engine direct",
        ["-m", "benchmarks.overhead", "--products", "150000", "--rounds", "40", "--engine-profile", "9"],
        ["-m", "benchmarks.overhead", "--products", "5000", "--rounds", "10", "--engine-profile", "3"],
        1200,
    ),
    Bench(
        "cache",
        "cache-hit throughput against bare aiohttp; hit ratio and freshness under churn; stampede",
        ["-m", "benchmarks.cache", "--products", "20000"],
        ["-m", "benchmarks.cache", "--products", "5000", "--rounds", "1", "--seconds", "4", "--duration", "15"],
        1200,
    ),
    Bench(
        "ratelimit",
        "the limiter on against off, on cache hits, on one Redis and a Redis Cluster; a primary's failover",
        ["-m", "benchmarks.ratelimit", "--cluster"],
        ["-m", "benchmarks.ratelimit", "--cluster", "--rounds", "1", "--seconds", "4"],
        900,
    ),
    Bench(
        "ratelimit-groups",
        "Python calls per cold rate-limit decision on a Redis Cluster, by key groups and batch size",
        ["-m", "benchmarks.ratelimit_groups"],
        ["-m", "benchmarks.ratelimit_groups", "--groups", "1,8,64", "--batches", "1,16,256"],
        300,
    ),
    Bench(
        "ratelimit-phases",
        "the limiter with many clients: a round's cold start and its warm rest, against off, by clients",
        ["-m", "benchmarks.ratelimit_phases"],
        ["-m", "benchmarks.ratelimit_phases", "--clients", "1,10000", "--rounds", "1", "--seconds", "2"],
        600,
    ),
    Bench(
        "cache-cluster",
        "cache throughput and hit ratio under churn, Redis Cluster against one Redis",
        ["-m", "benchmarks.cache", "--only", "cluster", "--products", "5000"],
        ["-m", "benchmarks.cache", "--only", "cluster", "--products", "2000", "--rounds", "1", "--seconds", "4"],
        900,
    ),
    Bench(
        "fallback",
        "the Postgres fallback against the engine; switch-over; shedding goodput; plans",
        ["-m", "benchmarks.fallback"],
        ["-m", "benchmarks.fallback", "--quick"],
        1500,
    ),
    Bench(
        "hostile",
        "hostile traffic: cache hits with large headers, memory, searches beside slow clients and a /readyz flood",
        ["-m", "benchmarks.hostile"],
        ["-m", "benchmarks.hostile", "--rounds", "1", "--requests", "500"],
        900,
    ),
    Bench(
        "engine-cluster",
        "3 engine nodes: search p99 on 3 shards against 1, reindex against raw bulk, losing a node",
        ["-m", "benchmarks.engine_cluster", "--products", "20000"],
        ["-m", "benchmarks.engine_cluster", "--products", "3000", "--searches", "200"],
        1800,
    ),
    Bench(
        "stress",
        "throughput and p99 over time under the stress profile's shape (wrk)",
        ["-m", "benchmarks.stress", "--products", "20000"],
        ["-m", "benchmarks.stress", "--products", "5000", "--quick"],
        900,
    ),
]


@dataclass
class Outcome:
    name: str
    what: str
    command: str
    status: str  # ok, failed (exit N), timed out, no figures
    seconds: float
    figures: list[dict[str, Any]] = field(default_factory=list)
    plots: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    tables: list[dict[str, Any]] = field(default_factory=list)
    outside_cores: float | None = None  # CPU other programs used as it began (kit.processes)
    log: str = ""  # the scratch log, relative to the report
    tail: list[str] = field(default_factory=list)  # the output's last lines when it failed


def run_bench(bench: Bench, quick: bool, env: dict[str, str], scratch: Path, extra: list[str]) -> Outcome:
    """Run one bench as a subprocess, its output to our stdout and to a log; never raises."""
    out_json = scratch / f"{bench.name}.json"
    out_json.unlink(missing_ok=True)
    log_path = scratch / f"{bench.name}.log"
    command = [sys.executable, *(bench.quick if quick else bench.full), *extra, "--json", str(out_json)]
    timeout = bench.timeout_s / 3 if quick else bench.timeout_s
    shown = shlex.join(["python", *command[1:-2]])
    print(f"\n=== {bench.name}: {shown}", flush=True)
    started = time.monotonic()
    status = "ok"
    lines: list[str] = []
    with log_path.open("w") as log:
        # Its own process group, so a timeout stops the bench and every server it started.
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                print(line, end="", flush=True)
                log.write(line)
                lines.append(line.rstrip("\n"))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout:.0f} s"
            stop_process(proc, 60, group=True)  # the benches clean up on SIGTERM
        except KeyboardInterrupt:
            # The bench has a session of its own, out of reach of a Ctrl-C or SIGTERM sent to us.
            stop_process(proc, 60, group=True)
            raise
        reader.join(10)
    if status == "ok" and proc.returncode != 0:
        status = f"failed (exit {proc.returncode})"
    outcome = Outcome(bench.name, bench.what, shown, status, time.monotonic() - started, log=str(log_path))
    if out_json.exists():
        written = json.loads(out_json.read_text())
        outcome.figures, outcome.plots, outcome.meta = written["figures"], written["plots"], written["meta"]
        outcome.tables = written.get("tables", [])
    elif status == "ok":
        outcome.status = "no figures written"
    if outcome.status != "ok":
        outcome.tail = lines[-15:]
    print(f"=== {bench.name}: {outcome.status}, {outcome.seconds:.0f} s", flush=True)
    return outcome


# --- the machine -----------------------------------------------------------------------------------


def _first(path: str, pattern: str) -> str:
    try:
        text = Path(path).read_text()
    except OSError:
        return "?"
    found = re.search(pattern, text, re.M)
    return found[1].strip() if found else "?"


async def _server_versions(env: dict[str, str]) -> dict[str, str]:
    import aiohttp
    import asyncpg
    import redis.asyncio as aioredis

    versions: dict[str, str] = {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            node = env["ELASTICSEARCH_NODE"].rstrip("/")
            async with session.get(node + "/") as response:
                version = (await response.json())["version"]
            versions["engine"] = f"{version.get('distribution', 'elasticsearch')} {version['number']}"
            async with session.get(node + "/_nodes/jvm") as response:
                nodes = (await response.json())["nodes"].values()
            jvm = next(iter(nodes))["jvm"]
            heap = jvm["mem"]["heap_max_in_bytes"] / 2**30
            versions["engine JVM"] = f"{jvm['vm_name']} {jvm['version']}, heap {heap:.1f} GiB"
    except Exception as exc:  # a report without a version beats no report
        versions.setdefault("engine", f"? ({type(exc).__name__})")
    try:
        conn = await asyncpg.connect(env["DATABASE_URL"])
        try:
            versions["postgres"] = str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()
    except Exception as exc:
        versions["postgres"] = f"? ({type(exc).__name__})"
    try:
        client = aioredis.from_url(env["REDIS_URL"], socket_timeout=5)
        try:
            versions["redis"] = str((await client.info("server"))["redis_version"])
        finally:
            await client.aclose()
    except Exception as exc:
        versions["redis"] = f"? ({type(exc).__name__})"
    return versions


def machine(env: dict[str, str]) -> dict[str, Any]:
    memory_kb = _first("/proc/meminfo", r"^MemTotal:\s+(\d+)")
    cpus = sorted(os.sched_getaffinity(0))
    load = os.getloadavg()
    return {
        "cores": os.cpu_count(),
        "cores usable": len(cpus),
        "memory": f"{int(memory_kb) / 2**20:.1f} GiB" if memory_kb.isdigit() else "?",
        "CPU model": _first("/proc/cpuinfo", r"^model name\s*:\s*(.+)$"),
        "OS": _first("/etc/os-release", r'^PRETTY_NAME="?([^"\n]+)'),
        "kernel": platform.release(),
        "Python": platform.python_version(),
        **asyncio.run(_server_versions(env)),
        "wrk": _wrk_version(),
        "load average at start (1, 5, 15 min)": ", ".join(f"{x:.2f}" for x in load),
    }


def _wrk_version() -> str:
    try:
        done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5, check=False)
    except OSError:
        return "not installed"
    return (done.stdout + done.stderr).split("\n")[0].split(" Copyright")[0].strip() or "?"


# --- rendering -------------------------------------------------------------------------------------


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    magnitude = abs(value)
    if value == int(value) and magnitude < 1000:  # counts: "1", not "1.00"
        text = f"{value:.0f}"
    elif magnitude >= 1000:
        text = f"{value:,.0f}"
    elif magnitude >= 100:
        text = f"{value:.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    elif magnitude >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}".strip() if unit and unit not in ("×", "ratio") else text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_plots(outcomes: Sequence[Outcome], folder: Path) -> dict[str, str]:
    """Each bench's plots as PNGs in ``folder``; their paths by file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: dict[str, str] = {}
    folder.mkdir(parents=True, exist_ok=True)
    for outcome in outcomes:
        for plot in outcome.plots:
            path = folder / plot["file"]
            if plot["kind"] == "cdf":
                fig, ax = plt.subplots(figsize=(8, 4.5))
                for label, values in plot["samples"].items():
                    ordered = sorted(values)
                    n = len(ordered)
                    ax.plot(ordered, [(i + 1) / n for i in range(n)], label=f"{label} (n={n:,})", linewidth=1.4)
                ax.set_xscale("log")
                ax.set_xlabel(plot["unit"] + " (log scale)")
                ax.set_ylabel("share of requests at or below")
                ax.set_ylim(0, 1.01)
                ax.grid(True, which="both", alpha=0.3)
                ax.legend(loc="lower right", fontsize=8)
            else:
                panels = plot["panels"]
                fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels) + 0.6), sharex=True)
                axes_list = list(axes) if len(panels) > 1 else [axes]
                for ax, panel in zip(axes_list, panels, strict=True):
                    for label, values in panel["lines"].items():
                        points = [(x, y) for x, y in zip(plot["x"], values, strict=True) if y is not None]
                        ax.plot([p[0] for p in points], [p[1] for p in points], label=label, linewidth=1.4)
                    ax.set_ylabel(panel["ylabel"])
                    ax.grid(True, alpha=0.3)
                    ax.legend(loc="best", fontsize=8)
                axes_list[-1].set_xlabel(plot["xlabel"])
            fig.suptitle(textwrap.fill(plot["title"], 100), fontsize=9)
            fig.tight_layout()
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written[plot["file"]] = f"{folder.name}/{plot['file']}"
    return written


def render_markdown(report: dict[str, Any], plots: dict[str, str], outcomes: Sequence[Outcome]) -> str:
    quick = report["quick"]
    lines = [
        f"# Benchmark report, {report['date']}" + (" (QUICK pass: small catalogs, short phases)" if quick else ""),
        "",
        f"`{report['command']}`, one run on one machine, {report['minutes']:.0f} minutes. Every ratio is "
        "against a baseline measured in the same run on the same machine; the machine is shared and was "
        "not idle (see the load average), so compare ratios rather than absolute figures across reports.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {_cell(str(v))} |" for k, v in report["machine"].items()),
        "",
        f"Load generation: {report['pinning']}",
        "",
        "## Goals",
        "",
    ]
    goals = [(o.name, f) for o in outcomes for f in o.figures if f["met"] is not None]
    met = sum(1 for _, f in goals if f["met"])
    failed = [o for o in outcomes if o.status != "ok"]
    was_busy = bool(report.get("busy"))
    if was_busy:
        lines.append(
            "**The machine was busy** (a 1-minute load average above its usable cores at the start, or "
            f"programs outside the run using more than {OUTSIDE_CORES_MAX} cores as a bench began): "
            "**no goal is claimed from this run**. A goal below reads *would be met* where "
            "the figure reached it; run `make bench` alone on a quiet machine to claim it."
        )
        lines.append("")
    lines.append(
        (f"**{met} of {len(goals)} goals would be met**" if was_busy else f"**{met} of {len(goals)} goals met**")
        + (f"; {len(failed)} benchmark(s) did not finish: {', '.join(o.name for o in failed)}" if failed else "")
        + "."
        + (
            " A QUICK pass judges the goals at its small sizes and short phases (a goal stated for 150,000 "
            "products only is not judged): a smoke test of the benchmarks, not a measurement to quote."
            if quick
            else ""
        )
    )
    lines += ["", "| bench | figure | value | goal | met |", "|---|---|---|---|---|"]
    for name, f in goals:
        verdict = verdict_of(f["met"], busy=was_busy, bold=True)
        value = _number(f["value"], f["unit"])
        if f["ratio"] is not None:
            value += f" ({f['ratio']:.2f} × {f['baseline_label'].split(',')[0] or 'baseline'})"
        lines.append(f"| {name} | {_cell(f['name'])} | {value} | {_cell(f['goal'])} | {verdict} |")
    for outcome in outcomes:
        lines += ["", f"## {outcome.name}: {outcome.what}", ""]
        lines.append(f"`{outcome.command}` — **{outcome.status}**, {outcome.seconds:.0f} s.")
        if outcome.outside_cores is not None:
            lines.append(f"Programs outside the run used {outcome.outside_cores:.2f} cores as it began.")
        if outcome.meta:
            lines += ["", *(f"- {k}: {_cell(str(v))}" for k, v in outcome.meta.items())]
        if outcome.figures:
            lines += [
                "",
                "| figure | value | baseline (same run) | ratio | goal | met | notes |",
                "|---|---|---|---|---|---|---|",
            ]
            for f in outcome.figures:
                baseline = _number(f["baseline"], f["unit"]) if f["baseline"] is not None else "—"
                if f["baseline_label"] and f["baseline"] is not None:
                    baseline += f" ({f['baseline_label']})"
                ratio = f"{f['ratio']:.2f} ×" if f["ratio"] is not None else "—"
                verdict = verdict_of(f["met"], busy=was_busy)
                lines.append(
                    f"| {_cell(f['name'])} | {_number(f['value'], f['unit'])} | {_cell(baseline)} | {ratio} | "
                    f"{_cell(f['goal']) or '—'} | {verdict} | {_cell(f['notes'])} |"
                )
        for table in outcome.tables:
            lines += ["", f"{table['title']}:", "", "| " + " | ".join(map(_cell, table["header"])) + " |"]
            lines.append("|" + "---|" * len(table["header"]))
            lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in table["rows"]]
        for plot in outcome.plots:
            if plot["file"] in plots:
                lines += ["", f"![{plot['title']}]({plots[plot['file']]})"]
        if outcome.tail:
            lines += ["", "Last lines of its output:", "", "```", *outcome.tail, "```"]
    lines.append("")
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: Path) -> None:
    """``<out>/<date>[-quick].md`` and ``.json``, and the plots in ``<out>/<date>[-quick]/``."""
    # A quick or partial run never overwrites the day's full report.
    stem = report["date"] + ("-quick" if report["quick"] else "") + "".join(f"-{n}" for n in report.get("only", []))
    by_file = {p["file"]: p for p in report["plots"]}
    outcomes = [
        Outcome(**{k: v for k, v in b.items() if k != "plots"}, plots=[by_file[f] for f in b["plots"]])
        for b in report["benches"]
    ]
    plots = render_plots(outcomes, out / stem)
    md_path, json_path = out / f"{stem}.md", out / f"{stem}.json"
    md_path.write_text(render_markdown(report, plots, outcomes))
    json_path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(f"\nreport: {md_path}\n        {json_path}\nplots:  {out / stem}/ ({len(plots)} PNG)")


# --- orchestration ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small catalogs and short phases (minutes)")
    parser.add_argument("--only", help="comma-separated benches: " + ",".join(b.name for b in BENCHES))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="where the report goes")
    parser.add_argument("--date", default=datetime.date.today().isoformat(), help="the report's name (YYYY-MM-DD)")
    parser.add_argument("--render", type=Path, metavar="JSON", help="only write a report's markdown and plots again")
    args = parser.parse_args(argv)
    interrupt_on_sigterm()
    if args.render:
        write_report(json.loads(args.render.read_text()), args.render.parent)
        return 0
    chosen = [b for b in BENCHES if not args.only or b.name in args.only.split(",")]
    if not chosen:
        parser.error(f"--only: none of {args.only!r} is a bench")
    out: Path = args.out
    scratch = out / "scratch" / args.date
    scratch.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    server_cpu, wrk_cpu = pinning_cpus()
    pinning = (
        f"wrk (`-t1`, one thread) pinned to CPU {wrk_cpu} and the proxy under test (1 worker unless a bench says "
        f"otherwise) pinned to CPU {server_cpu}: one core each; the engine, Postgres and Redis are not pinned and "
        "share both cores with them."
        if server_cpu is not None
        else "no CPU pinning (fewer than two CPUs or no taskset): wrk and the proxy share the cores."
    )
    stack = DevStack(os.environ)
    outcomes: list[Outcome] = []
    try:
        urls = stack.start()
        env = {**os.environ, **urls.as_env(), "PYTHONUNBUFFERED": "1"}
        facts = machine(env)
        load_at_start = os.getloadavg()[0]
        print("machine: " + "; ".join(f"{k} {v}" for k, v in facts.items()), flush=True)
        for bench in chosen:
            extra = ["--database-url", urls.database_url] if bench.name == "seed" else []
            # What other programs take from the machine now, before this bench adds its own load.
            (outside,) = cores_used_outside(os.getpid())
            print(f"programs outside this run used {outside:.2f} cores as {bench.name} began", flush=True)
            outcomes.append(run_bench(bench, args.quick, env, scratch, extra))
            outcomes[-1].outside_cores = round(outside, 3)
    finally:
        stack.close()
    report = {
        "date": args.date,
        "quick": args.quick,
        "only": [b.name for b in chosen] if args.only else [],
        "command": "make bench"
        + (" QUICK=1" if args.quick else "")
        + (f" BENCH_ARGS=--only={args.only}" * bool(args.only)),
        "minutes": (time.monotonic() - started) / 60,
        "machine": facts | {"load average at the end": ", ".join(f"{x:.2f}" for x in os.getloadavg())},
        "busy": busy((load_at_start,), len(os.sched_getaffinity(0)), [o.outside_cores or 0.0 for o in outcomes]),
        "pinning": pinning,
        "benches": [
            {k: v for k, v in asdict(o).items() if k != "plots"} | {"plots": [p["file"] for p in o.plots]}
            for o in outcomes
        ],
    }
    for o in report["benches"]:
        o["log"] = os.path.relpath(o["log"], out)
    # The plotted samples go in the JSON too, so a reader can redraw them (--render).
    report["plots"] = [p for o in outcomes for p in o.plots]
    write_report(report, out)
    failed = [o.name for o in outcomes if o.status != "ok"]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
