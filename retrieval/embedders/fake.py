"""A deterministic embedder for fast tests: no model, stable vectors, real registry.

Texts map to a sum of per-word random directions (seeded by the word), so "red car" is close to
"car" and far from "cat". Images map to the text of their dominant colour name plus a hash of
their pixels, so tests can build images that a text query finds.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
from PIL import Image

from retrieval.embedders.base import Embedder, ImageBatch, normalize, register

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 30),
    "blue": (30, 30, 220),
    "yellow": (230, 220, 30),
    "black": (10, 10, 10),
    "white": (245, 245, 245),
}


def _word_vector(word: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def colour_name(image: Image.Image) -> str:
    """The named colour nearest to the image's mean colour."""
    mean = np.asarray(image.convert("RGB").resize((8, 8)), dtype=np.float32).reshape(-1, 3).mean(0)
    return min(COLOURS, key=lambda name: float(((np.array(COLOURS[name]) - mean) ** 2).sum()))


@register("fake")
class FakeEmbedder(Embedder):
    name = "fake"
    batch_size = 8

    def __init__(self, dim: int = 32):
        self.dim = dim
        self.id = f"fake:{dim}"

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            words = re.findall(r"[a-z0-9]+", text.lower()) or ["<empty>"]
            rows.append(sum(_word_vector(w, self.dim) for w in words))
        return normalize(np.stack(rows))

    def embed_images(self, images: list[Image.Image]) -> ImageBatch:
        rows, tags = [], []
        for image in images:
            name = colour_name(image)
            pixels = hashlib.sha256(np.asarray(image.convert("RGB").resize((16, 16))).tobytes()).hexdigest()
            rows.append(3 * _word_vector(name, self.dim) + 0.5 * _word_vector(pixels, self.dim))
            tags.append([(name, 1.0)])
        return ImageBatch(normalize(np.stack(rows)), tags)
