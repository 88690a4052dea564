"""What a search asks for, as plain data, and the pure vector arithmetic that turns it into a ranking.

Kept free of models and indexes so that query composition and feedback are tested as tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Filter:
    """Constraints the catalog can answer. Dates are ISO strings (`2019`, `2019-07`, `2019-07-14`)."""

    date_from: str | None = None
    date_to: str | None = None
    folder: str | None = None
    camera: str | None = None

    def is_empty(self) -> bool:
        return not (self.date_from or self.date_to or self.folder or self.camera)


@dataclass
class Query:
    """A search: weighted text concepts, example images, feedback ids, negatives and filters.

    `positive` and `negative` are (text, weight) pairs. `like_ids` / `dislike_ids` are catalog ids
    of indexed images (thumbs up / down, "more like #2"); `images` are uploaded examples.
    Disliked and `exclude_ids` images never appear in the results.
    """

    positive: list[tuple[str, float]] = field(default_factory=list)
    negative: list[tuple[str, float]] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)
    like_ids: list[int] = field(default_factory=list)
    dislike_ids: list[int] = field(default_factory=list)
    exclude_ids: list[int] = field(default_factory=list)
    filter: Filter = field(default_factory=Filter)
    k: int = 12

    def is_empty(self) -> bool:
        return not (self.positive or self.images or self.like_ids)


@dataclass(frozen=True)
class Weights:
    """Rocchio weights: how much each part of the query pulls or pushes.

    Negatives are applied as a penalty on the candidate's similarity to each negative concept
    (`negative_penalty`), which ranks better than subtracting vectors from the query.
    """

    text: float = 1.0
    image: float = 1.0
    liked: float = 0.75
    disliked: float = 0.35
    negative_penalty: float = 1.0


def weighted_mean(vectors: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Unit vector along the weighted mean of rows; zero when there are none."""
    if len(vectors) == 0:
        return np.zeros(vectors.shape[-1] if vectors.ndim == 2 else 0, dtype=np.float32)
    w = np.ones(len(vectors), np.float32) if weights is None else np.asarray(weights, np.float32)
    mean = (vectors * w[:, None]).sum(0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def compose(
    text: np.ndarray,
    text_weights: np.ndarray,
    images: np.ndarray,
    liked: np.ndarray,
    disliked: np.ndarray,
    weights: Weights = Weights(),
) -> np.ndarray:
    """Rocchio: one unit query vector from text concepts, example images, liked and disliked vectors.

    Each group is first averaged to a unit vector so that ten thumbs-up do not drown the text.
    """
    dim = next(a.shape[1] for a in (text, images, liked, disliked) if a.ndim == 2 and a.shape[1])
    q = np.zeros(dim, np.float32)
    if len(text):
        q += weights.text * weighted_mean(text, text_weights)
    if len(images):
        q += weights.image * weighted_mean(images)
    if len(liked):
        q += weights.liked * weighted_mean(liked)
    if len(disliked):
        q -= weights.disliked * weighted_mean(disliked)
    return (q / max(float(np.linalg.norm(q)), 1e-12)).astype(np.float32)


def rerank(
    query: np.ndarray,
    candidates: np.ndarray,
    negatives: np.ndarray,
    negative_weights: np.ndarray,
    weights: Weights = Weights(),
) -> tuple[np.ndarray, np.ndarray]:
    """Score candidates by similarity to the query minus a penalty for the closest negative concept.

    Returns (scores, penalties). Each negative is first stripped of its component along the query,
    so "windmills, not white windmills" penalises whiteness, not every windmill.
    """
    scores = candidates @ query
    if len(negatives) == 0:
        return scores, np.zeros_like(scores)
    weights_row = np.asarray(negative_weights, np.float32)[None, :]
    neg_sims = (candidates @ _orthogonal_to(negatives, query).T) * weights_row
    penalty = np.clip(neg_sims.max(axis=1), 0.0, None) * weights.negative_penalty
    return scores - penalty, penalty


def _orthogonal_to(negatives: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Unit negatives minus their projection on the query; a negative that is (almost) the query stays as is."""
    rest = negatives - np.outer(negatives @ query, query)
    norms = np.linalg.norm(rest, axis=1, keepdims=True)
    safe = norms[:, 0] > 0.2
    out = negatives.copy()
    out[safe] = rest[safe] / norms[safe]
    return out.astype(np.float32)


@dataclass
class Result:
    """One ranked image: catalog id, absolute path, score, and why it matched, in words."""

    id: int
    path: str
    score: float
    explanation: str = ""
    tags: list[tuple[str, float]] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


_NEGATION = re.compile(r"^(?:not|no|without|except|minus)\s+", re.I)


def split_concepts(text: str) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """`"cats, not black, outdoors"` → positives [cats, outdoors], negatives [black] (weight 1 each).

    The command line's shorthand; the chat has a fuller parser in `assistant.rules`.
    """
    positive, negative = [], []
    for part in (p.strip() for p in re.split(r"[,;]", text)):
        if not part:
            continue
        stripped = _NEGATION.sub("", part)
        (negative if stripped != part else positive).append((stripped, 1.0))
    return positive, negative
