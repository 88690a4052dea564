"""The default vector store: a FAISS index keyed by catalog id, on the GPU when faiss-gpu sees one.

`flat` is exact and supports removal; `hnsw` is approximate and fast at millions of vectors. HNSW
graphs cannot delete: a removed id becomes a tombstone that searches skip, and a changed vector is
added again beside its stale copy (IndexIDMap2 reconstructs the newest; searches rescore and
dedupe). The graph is rebuilt on save once stale entries pass COMPACT_AT of it. The index file is a
cache of the catalog: saved atomically, and re-synced on open.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np

from retrieval.query import Filter
from retrieval.stores.base import Hits, VectorStore, register

# Below this many allowed ids a filtered search scores them directly (exact and cheaper than a selector).
SMALL_FILTER = 20000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 96
# Rebuild an HNSW graph when this share of its entries are removed or superseded.
COMPACT_AT = 0.25


def gpu_count() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


class _one_thread:
    """One query is faster on one OpenMP thread: waking a team costs more than it saves, and far more
    on a busy machine. OpenMP's thread count is per calling thread, so this does not race."""

    def __enter__(self):
        self.before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)

    def __exit__(self, *_):
        faiss.omp_set_num_threads(self.before)


@register("faiss")
class FaissStore(VectorStore):
    def __init__(
        self, path: Path | None, dim: int, metric: str = "ip", kind: str = "flat", use_gpu: bool | None = None
    ):
        if metric not in ("ip", "l2"):
            raise ValueError(f"metric must be 'ip' or 'l2', not {metric!r}")
        if kind not in ("flat", "hnsw"):
            raise ValueError(f"index kind must be 'flat' or 'hnsw', not {kind!r}")
        self.path, self.dim, self.metric, self.kind = (Path(path) if path else None), dim, metric, kind
        self.use_gpu = gpu_count() > 0 if use_gpu is None else use_gpu
        self._gpu_index = None
        # caches of what searches read, dropped on every change: len(self) (counting an HNSW id map
        # sorts it) and the tombstones as an array
        self._live: int | None = None
        self._tombs: np.ndarray | None = None
        self.tombstones: set[int] = set()
        self.index = self._load() or self._empty()

    # --- building --------------------------------------------------------------------------------
    def _empty(self) -> faiss.Index:
        faiss_metric = faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2
        if self.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, HNSW_M, faiss_metric)
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            inner.hnsw.efSearch = HNSW_EF_SEARCH
        else:
            inner = faiss.IndexFlatIP(self.dim) if self.metric == "ip" else faiss.IndexFlatL2(self.dim)
        return faiss.IndexIDMap2(inner)

    def _load(self) -> faiss.Index | None:
        if not self.path or not self.path.exists():
            return None
        self._owner = faiss.read_index(str(self.path))  # owns the C++ object the downcast views share
        index = faiss.downcast_index(self._owner)
        inner = faiss.downcast_index(index.index)
        kind = "hnsw" if isinstance(inner, faiss.IndexHNSW) else "flat"
        metric = "ip" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "l2"
        if index.d != self.dim or kind != self.kind or metric != self.metric:
            return None  # settings changed: the caller re-syncs from the catalog into a fresh index
        if kind == "hnsw":
            inner.hnsw.efSearch = HNSW_EF_SEARCH
        tomb = self.path.with_suffix(".tombstones.npy")
        if tomb.exists():
            self.tombstones = set(np.load(tomb).tolist())
        return index

    def add(self, ids: np.ndarray, vectors: np.ndarray, meta: Sequence[dict] | None = None) -> None:
        ids = np.asarray(ids, np.int64)
        if len(ids) == 0:
            return
        if self.kind == "flat":  # re-adding an id replaces it: crash and rerun never duplicate
            self.index.remove_ids(faiss.IDSelectorBatch(ids))
        else:  # the newest copy wins (see the module docstring)
            self.tombstones.difference_update(ids.tolist())
        self.index.add_with_ids(np.ascontiguousarray(vectors, np.float32), ids)
        self._changed()

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64)
        if self.kind == "hnsw":
            self.tombstones.update(ids[self._present(ids)].tolist())
        else:
            self.index.remove_ids(faiss.IDSelectorBatch(ids))
        self._changed()

    def _changed(self) -> None:
        self._gpu_index = self._live = self._tombs = None

    def _present(self, ids: np.ndarray) -> np.ndarray:
        id_map = self._id_map()
        if not len(id_map):
            return np.zeros(len(ids), bool)
        return np.isin(ids, id_map) & ~np.isin(ids, self._tombstone_array())

    def _id_map(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    # --- reading ---------------------------------------------------------------------------------
    def ids(self) -> np.ndarray:
        ids = self._id_map() if self.kind == "flat" else np.unique(self._id_map())
        return ids[~np.isin(ids, self._tombstone_array())] if self.tombstones else ids

    def _tombstone_array(self) -> np.ndarray:
        """The tombstones as an array, rebuilt only after a change (searches test against it)."""
        if self._tombs is None:
            self._tombs = np.fromiter(self.tombstones, np.int64, len(self.tombstones))
        return self._tombs

    def __len__(self) -> int:
        if self._live is None:
            self._live = len(self.ids())
        return self._live

    def get(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        if len(ids) == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self.index.reconstruct(int(i)) for i in ids]).astype(np.float32)

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None, where: Filter | None = None
    ) -> Hits:
        """Top-k ids for one query vector, best first; `allowed` restricts the ids considered."""
        batch = np.asarray(query, np.float32).reshape(1, -1)
        if allowed is not None and len(allowed) <= SMALL_FILTER:
            return self._search_subset(batch[0], k, np.asarray(allowed, np.int64))
        stale = self.index.ntotal - len(self) if self.kind == "hnsw" else 0
        fetch = min(2 * k + min(stale, 1000) if stale else k, max(self.index.ntotal, 1))
        params = self._params(allowed)
        if params is None and self.use_gpu and self.kind == "flat":
            scores, ids = self._gpu().search(batch, fetch)
        else:
            with _one_thread():
                scores, ids = self.index.search(batch, fetch, params=params)
        scores, ids = (-scores[0] if self.metric == "l2" else scores[0]), ids[0]
        keep = ids >= 0
        if self.tombstones:
            keep &= ~np.isin(ids, self._tombstone_array())
        if stale:  # a changed id may match through its stale copy: score its newest vector, once
            unique = np.array(list(dict.fromkeys(ids[keep].tolist())), np.int64)
            return self._search_subset(batch[0], k, unique)
        return Hits(ids[keep][:k], scores[keep][:k])

    def _search_subset(self, query: np.ndarray, k: int, allowed: np.ndarray) -> Hits:
        allowed = allowed[self._present(allowed)]
        vectors = self.get(allowed)
        scores = vectors @ query if self.metric == "ip" else -((vectors - query) ** 2).sum(-1)
        order = np.argsort(-scores, kind="stable")[:k]
        return Hits(allowed[order], scores[order])

    def _params(self, allowed: np.ndarray | None):
        if allowed is None:
            return None
        selector = faiss.IDSelectorBatch(np.asarray(allowed, np.int64))
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=HNSW_EF_SEARCH)
        return faiss.SearchParameters(sel=selector)

    def _gpu(self) -> faiss.Index:
        """A GPU copy of a flat index, made on first search after a change."""
        if self._gpu_index is None:
            self._gpu_resources = getattr(self, "_gpu_resources", None) or faiss.StandardGpuResources()
            self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self.index)
        return self._gpu_index

    # --- persistence -----------------------------------------------------------------------------
    def compact(self) -> None:
        """Rebuild an HNSW graph from its live vectors, dropping tombstones and stale copies."""
        live = self.ids()
        vectors = self.get(live)
        self.index, self.tombstones = self._empty(), set()
        self._changed()
        self.add(live, vectors)

    def save(self) -> None:
        if (
            self.kind == "hnsw"
            and self.index.ntotal > 1000
            and len(self) < (1 - COMPACT_AT) * self.index.ntotal
        ):
            self.compact()
        if not self.path:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        faiss.write_index(self.index, str(tmp))
        tomb = self.path.with_suffix(".tombstones.npy")
        if self.tombstones:
            np.save(tomb.with_name(tomb.name + ".tmp.npy"), np.array(sorted(self.tombstones), np.int64))
            os.replace(tomb.with_name(tomb.name + ".tmp.npy"), tomb)
        elif tomb.exists():
            tomb.unlink()
        os.replace(tmp, self.path)
