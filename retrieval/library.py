"""The library API: one indexed photo collection, opened from its index folder.

The CLI, the chat session and the web UI all go through this class; none of them touches FAISS,
SQLite or torch directly.

On disk (`index_dir`):
  catalog.sqlite      files, metadata, vectors (float32 blobs by content hash), embedder id, dim, metric
  faiss.index         FAISS IndexIDMap2 keyed by catalog file id (a cache of the catalog's vectors)
  faiss.tombstones.npy  ids removed from an HNSW index, skipped until the next rebuild
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from retrieval.catalog import Catalog
from retrieval.embedders.base import Embedder, get_embedder
from retrieval.indexer import IndexOptions, IndexReport, Progress, index_folder
from retrieval.query import Query, Result, Weights
from retrieval.search import search
from retrieval.stores.base import STORES, VectorStore

# ConSE text-image vectors plus the classifier's visual features: text search as plain `bundled`,
# much better query-by-example and near-duplicates (bench/quality.py: near-dup R@1 0.996 vs 0.817).
DEFAULT_EMBEDDER = "bundled:visual"
# Image-to-image cosine above which two photos count as the same picture (resized, re-encoded,
# lightly cropped). On the dev set no two distinct photos reach it; see README "Measured".
NEAR_DUPLICATE = 0.9
# Above this many vectors `kind="auto"` picks HNSW over the exact flat index.
HNSW_FROM = 200_000


@dataclass
class LibraryConfig:
    """How an index is built and searched. `store`: `faiss`, `milvus-lite:PATH` or `milvus://HOST:PORT`."""

    #: None: the embedder the index was built with, or DEFAULT_EMBEDDER for a new index
    embedder: str | None = None
    store: str = "faiss"
    #: None for these two: as the index was built (else "ip" and "auto")
    metric: str | None = None
    kind: str | None = None
    max_megapixels: float = IndexOptions.max_megapixels
    show_progress: bool = True


class Library:
    def __init__(
        self, index_dir: Path, config: LibraryConfig, embedder: Embedder, catalog: Catalog, store: VectorStore
    ):
        self.index_dir, self.config, self.embedder = index_dir, config, embedder
        self.catalog, self.store = catalog, store
        self.weights = Weights()
        # one writer (the indexer) and many readers (chat sessions) share the catalog and the store
        self.lock = threading.RLock()

    @classmethod
    def open(
        cls,
        index_dir: str | Path,
        config: LibraryConfig | None = None,
        embedder: Embedder | None = None,
        reset: bool = False,
    ) -> Library:
        """Open (or create) an index. Refuses an index built with another embedder; `reset` starts afresh."""
        config = config or LibraryConfig()
        index_dir = Path(index_dir).expanduser()
        if reset and index_dir.exists():
            shutil.rmtree(index_dir)
        catalog = Catalog(index_dir / "catalog.sqlite")
        stored = catalog.stored_space()
        config = replace(
            config,
            embedder=config.embedder or stored.get("embedder_spec") or DEFAULT_EMBEDDER,
            metric=config.metric or stored.get("metric") or "ip",
            kind=config.kind or stored.get("kind") or "auto",
        )
        embedder = embedder or get_embedder(config.embedder)
        catalog.check_space(embedder.id, embedder.dim, config.metric, config.embedder, config.kind)
        store = open_store(config, index_dir, embedder.dim, catalog.count())
        library = cls(index_dir, config, embedder, catalog, store)
        library.sync()
        return library

    def sync(self) -> None:
        """Bring the store in line with the catalog (after a crash, or when the store was rebuilt)."""
        wanted, have = self.catalog.ok_ids(), self.store.ids()
        extra = np.setdiff1d(have, wanted)
        if len(extra):
            self.store.remove(extra)
        missing = np.union1d(np.setdiff1d(wanted, have), self.catalog.unsynced_ids())
        for ids, vectors in self.catalog.iter_vectors(missing, self.store.dim):
            self.store.add(ids, vectors, self.catalog.meta_for(ids))
        if len(extra) or len(missing):
            self.store.save()
        self.catalog.mark_synced()

    def index(
        self,
        folder: str | Path,
        progress: Progress | None = None,
        on_skip: Callable[[str, str], None] | None = None,
        workers: int | None = None,
        processes: int = 1,
    ) -> IndexReport:
        """Index new and changed images under `folder`, drop vanished ones; see `retrieval.indexer`.

        `processes` > 1 embeds with that many processes (accelerate); under `accelerate launch` every
        rank calls this and only rank 0 writes.
        """
        options = IndexOptions(
            processes=processes,
            embedder_spec=self.config.embedder,
            max_megapixels=self.config.max_megapixels,
            show_progress=self.config.show_progress,
            on_skip=on_skip,
            lock=self.lock,
        )
        if workers:
            options.workers = workers
        return index_folder(folder, self.catalog, self.store, self.embedder, options, progress)

    def search(self, query: Query) -> list[Result]:
        with self.lock:
            return search(query, self.embedder, self.store, self.catalog, self.weights)

    def near_duplicates(
        self, image: Image.Image, threshold: float = NEAR_DUPLICATE, k: int = 5
    ) -> list[Result]:
        """Indexed photos that are the same picture as `image` (best first): "is it already in my library?"."""
        floor = threshold if self.store.metric == "ip" else 2 * threshold - 2  # l2 scores are -||a-b||²
        return [r for r in self.search(Query(images=[image], k=k)) if r.score >= floor]

    def record(self, file_id: int) -> dict | None:
        with self.lock:
            return self.catalog.record(file_id)

    def id_for_path(self, path: str | Path) -> int | None:
        with self.lock:
            return self.catalog.id_for_path(str(Path(path).expanduser().resolve()))

    def vectors(self, ids) -> np.ndarray:
        with self.lock:
            return self.store.get(np.asarray(ids, np.int64))

    @property
    def roots(self) -> list[str]:
        return self.catalog.roots()

    def __len__(self) -> int:
        return len(self.store)

    def close(self) -> None:
        self.store.close()
        self.catalog.close()


def open_store(config: LibraryConfig, index_dir: Path, dim: int, count: int) -> VectorStore:
    """Build the store a config names; FAISS kind `auto` is flat below HNSW_FROM vectors."""
    scheme, _, target = config.store.partition(":")
    if scheme == "faiss":
        kind = config.kind if config.kind != "auto" else ("hnsw" if count >= HNSW_FROM else "flat")
        return STORES["faiss"](index_dir / "faiss.index", dim, config.metric, kind)
    if scheme in ("milvus-lite", "milvus"):
        from retrieval.stores.milvus import collection_for  # registers itself; needs the [milvus] extra

        if scheme == "milvus":
            target = "http:" + target  # milvus://host:port -> http://host:port, as pymilvus expects
        target = target or str(index_dir / "milvus.db")
        return STORES[scheme](target, dim, config.metric, collection_for(index_dir), config.kind)
    raise ValueError(f"unknown store {config.store!r}; use faiss, milvus-lite:PATH or milvus://HOST:PORT")
