"""``make load`` / ``python -m loadtest``: run a load profile headless with Locust, or with k6.

    python -m loadtest [--profile smoke|average|…|path.json] [--url URL] [--out loadtest/out]
                       [--seed 1] [--products 2000] [--workers 2] [--k6]
    python -m loadtest --compare before/summary.json after/summary.json
    python -m loadtest --write-vocabulary      # regenerate loadtest/k6/vocabulary.js

Against ``--url`` (or ``PROXY_URL``) when given; otherwise against ``hos-search dev`` run here
(``hos_search.dev_process``) and stopped afterwards: embedded servers (never the ones
``DATABASE_URL``, ``REDIS_URL``, ``ELASTICSEARCH_NODE`` name), ``--products`` sample products
indexed, and a ``--workers`` proxy on 127.0.0.1 whose rate limiting is off unless
the profile's ``hos.proxyEnv`` turns it on (every Locust user is one client address). Locust's
exit code is this command's: 0, or 99 when a threshold failed (k6's), or 104 for a profile k6
would refuse. Every wait is bounded: the run by the profile's length plus its graceful stop.

``--k6`` runs the same profile with the real k6 (``loadtest/k6/storefront.js``) instead: found on
PATH or where ``go install go.k6.io/k6@v1.8.1`` puts it; k6's exit code is this command's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

from catalog.processes import stop_process
from hos_search.dev_process import NAMED_SERVERS, DevStackFailed, dev_stack
from loadtest.profile import Profile, ProfileError, load_profile, profile_names
from loadtest.summary import compare
from loadtest.traffic import build_queries, vocabulary_js

ROOT: Final = Path(__file__).resolve().parent.parent
LOCUSTFILE: Final = ROOT / "loadtest" / "locustfile.py"
VOCABULARY_JS: Final = ROOT / "loadtest" / "k6" / "vocabulary.js"
K6_SCRIPT: Final = ROOT / "loadtest" / "k6" / "storefront.js"
K6_INSTALL: Final = "go install go.k6.io/k6@v1.8.1"
DEFAULT_OUT: Final = ROOT / "loadtest" / "out"
INVALID_CONFIG_EXIT: Final = 104
# Beyond the profile's own length and graceful stop: Locust's start-up and report writing.
_RUN_MARGIN_S: Final = 60


def locust_command(profile: str, url: str, out: Path, seed: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        url,
        "--load-profile",
        profile,
        "--seed",
        str(seed),
        "--out-dir",
        str(out),
        "--html",
        str(out / "report.html"),
        "--loglevel",
        "WARNING",
    ]


def find_k6(env: Mapping[str, str]) -> str | None:
    """The k6 binary: on PATH, else in Go's bin directory (where ``go install`` puts it), else None."""
    found = shutil.which("k6", path=env.get("PATH"))
    if found:
        return found
    gobin = env.get("GOBIN") or ""
    if not gobin:
        gopath = env.get("GOPATH") or ""
        if not gopath and shutil.which("go", path=env.get("PATH")):
            done = subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True, timeout=30, check=False)
            gopath = done.stdout.strip()
        gopath = gopath.split(os.pathsep)[0] if gopath else str(Path.home() / "go")
        gobin = str(Path(gopath) / "bin")
    candidate = Path(gobin) / "k6"
    return str(candidate) if os.access(candidate, os.X_OK) else None


def k6_command(k6: str, profile: str, url: str, out: Path, seed: int, env: Mapping[str, str]) -> list[str]:
    key = ["-e", f"API_KEY={env['LOAD_API_KEY']}"] if env.get("LOAD_API_KEY") else []
    return [
        k6,
        "run",
        "--quiet",  # no progress bar: the summary at the end is what a log needs
        "-e",
        f"PROFILE={profile}",
        "-e",
        f"PROXY_URL={url}",
        "-e",
        f"SEED={seed}",
        "-e",
        f"OUT={out}",
        *key,
        str(K6_SCRIPT),
    ]


def run_load(command: list[str], tool: str, profile: Profile, url: str, out: Path) -> int:
    """``command`` (Locust or k6) against ``url``; its exit code. Stopped when it overruns the profile."""
    length_s = (profile.duration_ms + profile.graceful_stop_ms) / 1000
    limit = int(length_s) + _RUN_MARGIN_S
    print(f"load profile {profile.name} ({length_s:.0f} s at most, {tool}) against {url}; output in {out}", flush=True)
    out.mkdir(parents=True, exist_ok=True)  # k6 writes its summary only into a folder that exists
    proc = subprocess.Popen(command, cwd=ROOT)
    try:
        return proc.wait(limit)
    except subprocess.TimeoutExpired:
        print(f"{tool} overran {limit} s; stopped", file=sys.stderr)
        stop_process(proc)
        return 1
    except KeyboardInterrupt:
        stop_process(proc)
        raise


def run_on_dev_stack(
    profile: Profile, env: Mapping[str, str], products: int, workers: int, run: Callable[[str], int]
) -> int:
    """``run(proxy URL)`` on ``hos-search dev``: embedded servers, ``products`` sample products
    indexed, a ``workers`` proxy; all stopped and removed afterwards."""
    # Embedded servers always: a load run never seeds or reindexes a database the environment names.
    stack_env = {key: value for key, value in env.items() if key not in NAMED_SERVERS}
    stack_env |= {
        "LOG_LEVEL": "warning",
        "REDIS_KEY_PREFIX": f"load{uuid.uuid4().hex[:8]}:",  # a fresh cache and fresh buckets
        "RATE_LIMIT_ENABLED": "false",
        **profile.proxy_env,
    }
    print(f"dev stack: seeding and indexing {products} products…", flush=True)
    try:
        with dev_stack(stack_env, products=products, workers=workers) as urls:
            return run(urls["PROXY_URL"])
    except DevStackFailed as exc:
        print(f"the dev stack did not get ready: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--profile", default="smoke", help=f"a name ({', '.join(profile_names())}) or a JSON path")
    parser.add_argument("--url", help="the proxy to load (default: PROXY_URL, else a dev stack started here)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where summary.json and report.html go")
    parser.add_argument("--seed", type=int, default=1, help="global seed: the same seed sends the same sessions")
    parser.add_argument("--products", type=int, default=2000, help="dev stack: sample products to index")
    parser.add_argument("--workers", type=int, default=2, help="dev stack: proxy worker processes")
    parser.add_argument(
        "--k6", action="store_true", help=f"run the profile with k6 ({K6_SCRIPT.name}) instead of Locust"
    )
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="compare two summaries")
    parser.add_argument("--write-vocabulary", action="store_true", help=f"regenerate {VOCABULARY_JS.name}")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.compare:
        before, after = (json.loads(path.read_text(encoding="utf-8")) for path in args.compare)
        print(compare(before, after))
        return 0
    if args.write_vocabulary:
        VOCABULARY_JS.write_text(vocabulary_js(build_queries()), encoding="utf-8")
        return 0
    try:
        profile = load_profile(args.profile, env)
        profile.only_scenario()
    except ProfileError as exc:
        print(f"invalid profile: {exc}", file=sys.stderr)
        return INVALID_CONFIG_EXIT
    profile_arg = args.profile if Path(args.profile).suffix != ".json" else str(Path(args.profile).resolve())
    out = args.out.resolve()
    k6 = find_k6(env) if args.k6 else None
    if args.k6 and k6 is None:
        print(f"k6 is not installed: {K6_INSTALL} (it lands in $(go env GOPATH)/bin)", file=sys.stderr)
        return 2

    def run(url: str) -> int:
        if k6 is not None:
            return run_load(k6_command(k6, profile_arg, url, out, args.seed, env), "k6", profile, url, out)
        return run_load(locust_command(profile_arg, url, out, args.seed), "locust", profile, url, out)

    url = args.url or env.get("PROXY_URL")
    if url:
        return run(url.rstrip("/"))
    return run_on_dev_stack(profile, env, args.products, args.workers, run)
