"""Vector stores behind one interface: `faiss` (default, GPU when present) and `milvus` / `milvus-lite`."""

from retrieval.stores import faiss_store  # noqa: F401  (registers "faiss")
from retrieval.stores.base import STORES, Hits, VectorStore

__all__ = ["STORES", "Hits", "VectorStore"]
