"""The engine's connection settings: node lists, index layout, credentials, CA, Cloud ID, sniffing.

Pure parsing: each mistake is one line naming the setting, and no secret appears in a message
or a ``repr``. The secured path against a live TLS front is in ``tests/test_engine_secured.py``.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from catalog.config import ConfigError, EngineAccess, elasticsearch_node, engine_access, redact_url
from catalog.engine import sniffed_node
from indexer.settings import IndexerSettings
from proxy.settings import ProxySettings

SECRET = "s3cr3t-value-never-shown"
CLOUD_ID = "deployment:" + base64.b64encode(b"europe-west1.gcp.cloud.es.io:443$abc123$def456").decode()


def test_a_node_list_is_accepted_and_normalised() -> None:
    assert elasticsearch_node({"ELASTICSEARCH_NODE": " http://a:9200 , https://b:9200,"}) == (
        "http://a:9200,https://b:9200"
    )


@pytest.mark.parametrize(
    "value",
    ["http://a:9200,b:9200", "http://a:9200,ftp://b", ",", "http://a:notaport", ",".join(["http://a:9200"] * 33)],
)
def test_a_bad_node_list_is_refused_in_one_line_naming_the_setting(value: str) -> None:
    with pytest.raises(ConfigError, match="ELASTICSEARCH_NODE") as refused:
        elasticsearch_node({"ELASTICSEARCH_NODE": value})
    assert "\n" not in str(refused.value)


def test_a_node_lists_passwords_are_redacted_url_by_url() -> None:
    shown = redact_url(f"http://elastic:{SECRET}@a:9200,http://elastic:{SECRET}@b:9200")
    assert shown == "http://elastic:***@a:9200,http://elastic:***@b:9200"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SEARCH_INDEX_SHARDS": "0"}, "SEARCH_INDEX_SHARDS"),
        ({"SEARCH_INDEX_SHARDS": "three"}, "SEARCH_INDEX_SHARDS"),
        ({"SEARCH_INDEX_SHARDS": "5000"}, "SEARCH_INDEX_SHARDS"),
        ({"SEARCH_INDEX_REPLICAS": "-1"}, "SEARCH_INDEX_REPLICAS"),
        ({"SEARCH_INDEX_REPLICAS": "1.5"}, "SEARCH_INDEX_REPLICAS"),
        ({"SEARCH_INDEX_REPLICAS": "99"}, "SEARCH_INDEX_REPLICAS"),
    ],
)
def test_nonsense_index_layout_is_refused_naming_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named) as refused:
        IndexerSettings.from_env(env)
    assert "\n" not in str(refused.value)


def test_the_index_layout_defaults_to_one_shard_and_one_replica() -> None:
    settings = IndexerSettings.from_env({})
    assert (settings.index_shards, settings.index_replicas) == (1, 1)
    settings = IndexerSettings.from_env({"SEARCH_INDEX_SHARDS": "3", "SEARCH_INDEX_REPLICAS": "2"})
    assert (settings.index_shards, settings.index_replicas) == (3, 2)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ELASTICSEARCH_API_KEY": SECRET, "ELASTICSEARCH_USERNAME": "elastic"}, "ELASTICSEARCH_API_KEY"),
        ({"ELASTICSEARCH_USERNAME": "elastic"}, "ELASTICSEARCH_PASSWORD"),
        ({"ELASTICSEARCH_PASSWORD": SECRET}, "ELASTICSEARCH_USERNAME"),
        ({"ELASTICSEARCH_CA_CERTS": "/nonexistent/ca.pem"}, "ELASTICSEARCH_CA_CERTS"),
        ({"ELASTICSEARCH_CLOUD_ID": "not-a-cloud-id"}, "ELASTICSEARCH_CLOUD_ID"),
        ({"ELASTICSEARCH_CLOUD_ID": CLOUD_ID, "ELASTICSEARCH_NODE": "http://a:9200"}, "ELASTICSEARCH_CLOUD_ID"),
        ({"ELASTICSEARCH_CLOUD_ID": CLOUD_ID, "ELASTICSEARCH_SNIFF": "true"}, "ELASTICSEARCH_SNIFF"),
        ({"ELASTICSEARCH_SNIFF": "sometimes"}, "ELASTICSEARCH_SNIFF"),
    ],
)
def test_contradictory_or_malformed_engine_access_is_refused_naming_the_setting(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named) as refused:
        engine_access(env)
    message = str(refused.value)
    assert "\n" not in message and SECRET not in message


def test_a_file_that_is_not_a_pem_certificate_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"ELASTICSEARCH_CA_CERTS.*PEM"):
        engine_access({"ELASTICSEARCH_CA_CERTS": str(bogus)})


def test_secrets_stay_out_of_the_settings_repr() -> None:
    for env in (
        {"ELASTICSEARCH_API_KEY": SECRET},
        {"ELASTICSEARCH_USERNAME": "elastic", "ELASTICSEARCH_PASSWORD": SECRET},
    ):
        assert SECRET not in repr(ProxySettings.from_env(env))
        assert SECRET not in repr(IndexerSettings.from_env(env))
    assert engine_access({"ELASTICSEARCH_CLOUD_ID": CLOUD_ID}).cloud_id == CLOUD_ID


def test_the_refused_credential_names_the_setting_in_use() -> None:
    assert EngineAccess(api_key=SECRET).credential_setting == "ELASTICSEARCH_API_KEY"
    assert "ELASTICSEARCH_USERNAME" in EngineAccess(username="u", password=SECRET).credential_setting


def test_sniffing_keeps_data_nodes_and_skips_dedicated_cluster_managers() -> None:
    config = object()
    assert sniffed_node({"roles": ["cluster_manager"]}, config) is None  # type: ignore[arg-type]
    assert sniffed_node({"roles": ["master"]}, config) is None  # type: ignore[arg-type]
    assert sniffed_node({"roles": ["cluster_manager", "data"]}, config) is config  # type: ignore[arg-type]
    assert sniffed_node({"roles": []}, config) is config  # type: ignore[arg-type]  # coordinating-only
