"""The engine client factory against the dev engine."""

from __future__ import annotations

import pytest
from elasticsearch import AsyncElasticsearch, BadRequestError, NotFoundError

from catalog.engine import PlainJsonNode, create_engine_client, engine_info_from_root
from catalog.mapping import index_mappings, index_settings
from devstack.stack import StackUrls


def test_distribution_is_read_from_the_root_answer() -> None:
    assert engine_info_from_root({"version": {"distribution": "opensearch", "number": "3.8.0"}}).plain_json
    elastic = engine_info_from_root({"version": {"number": "9.1.0", "build_flavor": "default"}})
    assert elastic.distribution == "elasticsearch"
    assert not elastic.plain_json


async def test_factory_detects_the_dev_engine_and_round_trips_a_document(
    stack_urls: StackUrls, index_alias: str
) -> None:
    client, info = await create_engine_client(stack_urls.elasticsearch_node)
    try:
        if "ELASTICSEARCH_NODE" not in __import__("os").environ:
            assert info.distribution == "opensearch"
        index = f"{index_alias}_v1"
        await client.indices.create(index=index, settings=index_settings(replicas=0), mappings=index_mappings())
        await client.index(
            index=index,
            id="1",
            refresh=True,
            document={
                "id": "1",
                "name": "Pokémon Pikachu Plush",
                "category": "plush",
                "fandom": "Pokémon",
                "price": 19.99,
                "in_stock": True,
            },
        )
        found = await client.search(index=index, query={"match": {"name": "pokemon"}})
        assert [hit["_id"] for hit in found["hits"]["hits"]] == ["1"]
        with pytest.raises(BadRequestError):  # dynamic: strict rejects an unknown field
            await client.index(index=index, id="2", document={"colour": "yellow"})
        with pytest.raises(NotFoundError):
            await client.get(index=index, id="404")
    finally:
        await client.close()


async def test_plain_json_node_is_what_makes_the_dev_engine_answer(stack_urls: StackUrls) -> None:
    client, info = await create_engine_client(stack_urls.elasticsearch_node)
    await client.close()
    if not info.plain_json:
        pytest.skip("real Elasticsearch accepts the compatibility media type; nothing to prove")
    stock = AsyncElasticsearch(hosts=[stack_urls.elasticsearch_node])
    plain = AsyncElasticsearch(hosts=[stack_urls.elasticsearch_node], node_class=PlainJsonNode)
    try:
        from elasticsearch import ApiError

        with pytest.raises(ApiError) as refused:
            await stock.count(query={"match_all": {}})
        assert refused.value.status_code == 406
        assert (await plain.count(query={"match_all": {}}))["count"] >= 0
    finally:
        await stock.close()
        await plain.close()
