"""The vector store interface and the registry of stores by URL scheme."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from retrieval.query import Filter


@dataclass
class Hits:
    """Search results for one query vector: catalog ids and similarity scores, best first."""

    ids: np.ndarray
    scores: np.ndarray


class VectorStore:
    """Holds one vector per catalog id and answers nearest-neighbour queries.

    `metric` is "ip" (inner product on normalised vectors: cosine) or "l2" (scores are then
    negative squared distances, so higher is still better). `meta` rows carry the scalar fields
    (`date`, `folder`, `camera`) a store may filter on natively; stores that cannot are given
    `allowed` ids computed by the catalog instead.
    """

    dim: int
    metric: str
    filters_natively: bool = False

    def add(self, ids: np.ndarray, vectors: np.ndarray, meta: Sequence[dict] | None = None) -> None:
        raise NotImplementedError

    def remove(self, ids: np.ndarray) -> None:
        raise NotImplementedError

    def search(
        self,
        query: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        where: Filter | None = None,
    ) -> Hits:
        raise NotImplementedError

    def get(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of `ids`, in order (feedback and reranking need them)."""
        raise NotImplementedError

    def ids(self) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.ids())

    def save(self) -> None:
        """Persist atomically; a crash leaves the previous saved state intact."""

    def close(self) -> None:
        self.save()


STORES: dict[str, Callable[..., VectorStore]] = {}


def register(scheme: str):
    def wrap(factory):
        STORES[scheme] = factory
        return factory

    return wrap
