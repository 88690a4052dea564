"""Query → vectors → store → reranked, explained results.

The arithmetic (Rocchio composition, negative penalties) is in `retrieval.query`; this module only
gathers the vectors it needs and explains each result in words.
"""

from __future__ import annotations

import numpy as np

from retrieval.catalog import Catalog
from retrieval.embedders.base import Embedder
from retrieval.query import Query, Result, Weights, compose, rerank
from retrieval.stores.base import VectorStore

# With negatives or exclusions, fetch this many candidates per wanted result before reranking.
OVERFETCH = 8
MIN_CANDIDATES = 200


def search(
    query: Query, embedder: Embedder, store: VectorStore, catalog: Catalog, weights: Weights = Weights()
) -> list[Result]:
    if query.is_empty():
        return []
    texts = [t for t, _ in query.positive] + [t for t, _ in query.negative]
    text_vecs = embedder.embed_texts(texts) if texts else np.zeros((0, store.dim), np.float32)
    pos_vecs, neg_vecs = text_vecs[: len(query.positive)], text_vecs[len(query.positive) :]
    image_vecs = embedder.embed_images(query.images).vectors if query.images else _none(store.dim)
    like_ids, dislike_ids = catalog.ok_among(query.like_ids), catalog.ok_among(query.dislike_ids)
    liked = store.get(np.array(like_ids, np.int64)) if like_ids else _none(store.dim)
    disliked = store.get(np.array(dislike_ids, np.int64)) if dislike_ids else _none(store.dim)
    q = compose(pos_vecs, np.array([w for _, w in query.positive]), image_vecs, liked, disliked, weights)

    banned = set(query.exclude_ids) | set(query.dislike_ids)
    wide = bool(query.negative) or bool(banned)
    k_fetch = max(query.k * OVERFETCH, MIN_CANDIDATES) if wide else query.k
    allowed = where = None
    if not query.filter.is_empty():
        if store.filters_natively:
            where = query.filter
        else:
            allowed = catalog.ids_matching(query.filter)
    hits = store.search(q, k_fetch, allowed=allowed, where=where)
    ids = np.array([i for i in hits.ids if int(i) not in banned], np.int64)
    if len(ids) == 0:
        return []
    vectors = store.get(ids)
    neg_weights = np.array([w for _, w in query.negative], np.float32)
    scores, penalties = rerank(q, vectors, neg_vecs, neg_weights, weights)
    if store.metric == "l2":
        scores = 2 * scores - 2  # -||a-b||² for unit vectors, so scores read as the metric's
    order = np.argsort(-scores, kind="stable")[: query.k]
    explain = Explainer(query, pos_vecs, neg_vecs, image_vecs, liked, embedder)
    records = [catalog.record(int(ids[n])) or {"path": "", "tags": []} for n in order]
    explain.warm([tag for r in records for tag, _ in r["tags"][: Explainer.TAGS]])
    results = []
    for n, record in zip(order, records, strict=True):
        tags = record.pop("tags")
        results.append(
            Result(
                id=int(ids[n]),
                path=record["path"],
                score=float(scores[n]),
                explanation=explain(vectors[n], tags, float(penalties[n])),
                tags=tags,
                meta=record,
            )
        )
    return results


def _none(dim: int) -> np.ndarray:
    return np.zeros((0, dim), np.float32)


class Explainer:
    """Says why an image matched: the concept it is closest to, its own labels, and the examples it resembles."""

    #: labels of an image that are ranked against the query's concepts
    TAGS = 5

    def __init__(self, query: Query, pos, neg, images, liked, embedder: Embedder):
        self.query, self.pos, self.neg, self.images, self.liked = query, pos, neg, images, liked
        self.embedder = embedder
        self.labels: dict[str, np.ndarray] = embedder.__dict__.setdefault("_label_vector_cache", {})

    def warm(self, labels: list[str]) -> None:
        """Embed the labels not seen yet in one batch (one call instead of one per label)."""
        if not len(self.pos):
            return
        missing = list(dict.fromkeys(t for t in labels if t not in self.labels))
        if missing:
            self.labels.update(zip(missing, self.embedder.embed_texts(missing), strict=True))

    def __call__(self, vector: np.ndarray, tags: list, penalty: float) -> str:
        parts = []
        if len(self.pos):
            sims = self.pos @ vector
            best = int(np.argmax(sims))
            parts.append(f"closest to “{self.query.positive[best][0]}” ({sims[best]:.2f})")
        if tags:
            parts.append("looks like " + ", ".join(self._ranked_tags(tags)))
        if len(self.images):
            parts.append(f"resembles your photo ({float((self.images @ vector).max()):.2f})")
        if len(self.liked):
            parts.append(f"resembles images you liked ({float((self.liked @ vector).max()):.2f})")
        if penalty > 0.05 and len(self.neg):
            worst = int(np.argmax(self.neg @ vector))
            parts.append(f"ranked lower for resembling “{self.query.negative[worst][0]}”")
        return "; ".join(parts)

    def _ranked_tags(self, tags: list) -> list[str]:
        """The image's labels, those nearest the query's concepts first."""
        if not len(self.pos):
            return [t for t, _ in tags[:3]]
        self.warm([t for t, _ in tags[: self.TAGS]])
        scored = [(float((self.pos @ self.labels[t]).max()), t) for t, _ in tags[: self.TAGS]]
        return [t for _, t in sorted(scored, reverse=True)[:3]]
