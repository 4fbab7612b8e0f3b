"""LlamaIndex's ingestion, as its docs build it, for `bench/ingest.py` to time beside Quarry.

Run by the Python of the bench's own LlamaIndex environment (`bench/peer.py` makes it),
never Quarry's: IngestionPipeline(SentenceSplitter 256/32, HuggingFaceEmbedding) into a
local Qdrant (qdrant-client's on-disk local mode), the documents read by
SimpleDirectoryReader. Prints one JSON line: seconds, documents, nodes.

    <peer python> bench/llamaindex_run.py FILES_LIST MODEL_DIR QDRANT_DIR
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> None:
    files_list, model_dir, qdrant_dir = sys.argv[1:4]
    from llama_index.core import SimpleDirectoryReader
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    files = Path(files_list).read_text(encoding="utf-8").split("\n")
    embed = HuggingFaceEmbedding(model_name=model_dir, device="cpu")
    embed.get_text_embedding("warm up")  # the model loaded, as Quarry's warm-up file does
    client = QdrantClient(path=qdrant_dir)
    store = QdrantVectorStore(client=client, collection_name="bench")
    pipeline = IngestionPipeline(
        transformations=[SentenceSplitter(chunk_size=256, chunk_overlap=32), embed],
        vector_store=store,
    )
    started = time.perf_counter()
    documents = SimpleDirectoryReader(input_files=[f for f in files if f]).load_data()
    nodes = pipeline.run(documents=documents)
    seconds = time.perf_counter() - started
    client.close()
    print(json.dumps({"seconds": seconds, "documents": len(documents), "nodes": len(nodes)}))


if __name__ == "__main__":
    main()
