"""Cluster settings reach Qdrant as its API documents them.

qdrant-client's local mode accepts but drops sharding, replication, quantization and
payload indexes, so each call is recorded on its way to the real local client and checked
against the REST API's own request models (what a server would receive).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from app.settings import Settings
from retrieval.models import ChunkRecord, CollectionRecipe, chunk_id
from retrieval.qdrant_store import QdrantOptions, QdrantServerStore

RECIPE = CollectionRecipe(model="m", dimension=8, instruction="i", revision="r", max_length=64)


class RecordingQdrantClient:
    """The real local-mode client, with every call's arguments written down."""

    def __init__(self, path: Path) -> None:
        self.inner = QdrantClient(path=str(path))
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not callable(target):
            return target

        def record(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            return target(*args, **kwargs)

        return record

    def named(self, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(args, kwargs) for call, args, kwargs in self.calls if call == name]


def test_cluster_settings_are_sent_as_qdrant_documents_them(tmp_path: Path) -> None:
    options = QdrantOptions(
        shard_number=6,
        replication_factor=2,
        write_consistency_factor=2,
        on_disk=True,
        quantization="int8",
        oversampling=3.0,
        tenant_key="tenant",
    )
    client = RecordingQdrantClient(tmp_path / "q")
    store = QdrantServerStore(client, options)  # type: ignore[arg-type]
    store.ensure_collection("c", RECIPE)
    vector = np.ones(8, dtype=np.float32) / np.sqrt(8)
    payload = {"doc_id": "d", "source": "s", "chunk_index": 0, "text": "t"}
    payload["meta"] = {"tenant": "acme"}  # user metadata, where uploads put it
    store.upsert("c", [ChunkRecord(chunk_id("d", 0), vector, payload)])
    hits = store.search("c", vector[None, :], 3, filters={"tenant": "acme"})
    assert [h.doc_id for h in hits[0]] == ["d"]  # the settings do not change the results

    ((_, create),) = client.named("create_collection")
    rest = {"vectors" if k == "vectors_config" else k: v for k, v in create.items()}
    body = models.CreateCollection(**rest)  # the REST body; it forbids unknown fields
    assert body.shard_number == 6 and body.replication_factor == 2
    assert body.write_consistency_factor == 2 and body.on_disk_payload is True
    assert isinstance(body.vectors, models.VectorParams) and body.vectors.on_disk is True
    assert body.vectors.size == 8 and body.vectors.distance == models.Distance.COSINE
    quant = body.quantization_config
    assert isinstance(quant, models.ScalarQuantization)
    assert quant.scalar.type == models.ScalarType.INT8 and quant.scalar.always_ram is True

    indexes = {
        kw["field_name"]: kw["field_schema"] for _, kw in client.named("create_payload_index")
    }
    assert indexes["doc_id"] == indexes["source"] == models.PayloadSchemaType.KEYWORD
    tenant = models.CreateFieldIndex(field_name="meta.tenant", field_schema=indexes["meta.tenant"])
    assert isinstance(tenant.field_schema, models.KeywordIndexParams)
    assert tenant.field_schema.is_tenant is True

    ((_, query),) = client.named("query_batch_points")
    (request,) = query["requests"]
    assert request.params.quantization == models.QuantizationSearchParams(
        rescore=True, oversampling=3.0
    )


def test_one_node_defaults_send_no_cluster_or_quantization_settings(tmp_path: Path) -> None:
    client = RecordingQdrantClient(tmp_path / "q")
    store = QdrantServerStore(client)  # type: ignore[arg-type]
    store.ensure_collection("c", RECIPE)
    ((_, create),) = client.named("create_collection")
    assert create["shard_number"] == 1 and create["replication_factor"] == 1
    assert "quantization_config" not in create and create["vectors_config"].on_disk is False
    assert {kw["field_name"] for _, kw in client.named("create_payload_index")} == {
        "doc_id",
        "source",
    }
    store.search("c", np.ones((1, 8), dtype=np.float32), 1)
    ((_, query),) = client.named("query_batch_points")
    assert query["requests"][0].params is None


def test_a_write_consistency_above_the_replication_factor_is_refused() -> None:
    with pytest.raises(ValueError, match="WRITE_CONSISTENCY_FACTOR"):
        Settings(qdrant_replication_factor=2, qdrant_write_consistency_factor=3)


def test_the_server_store_takes_its_layout_from_the_settings(tmp_path: Path) -> None:
    from app.resources import Resources

    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        qdrant_url="http://127.0.0.1:9",  # never contacted: clients connect on first call
        redis_url="redis://127.0.0.1:9/0",
        qdrant_shard_number=6,
        qdrant_replication_factor=2,
        qdrant_quantization="int8",
        qdrant_tenant_key="tenant",
    )
    resources = Resources(settings)
    store = resources.store
    assert isinstance(store, QdrantServerStore)
    assert store.options == QdrantOptions(
        shard_number=6, replication_factor=2, quantization="int8", tenant_key="tenant"
    )
    resources.close()
