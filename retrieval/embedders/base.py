"""The embedder interface and the registry of embedders by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass
class ImageBatch:
    """Vectors for a batch of images, plus optional tags that explain them.

    `vectors` is (n, dim) float32 and L2-normalised. `tags[i]` lists (label, weight) pairs that
    describe image i (the bundled embedder's top classes); empty for embedders without labels.
    """

    vectors: np.ndarray
    tags: list[list[tuple[str, float]]] = field(default_factory=list)


class Embedder:
    """Maps texts and images into one space where cosine similarity ranks matches.

    Subclasses load their models lazily, each tower on first use, so a text-only search never
    loads the image tower.
    """

    name: str = ""
    #: identifies the vector space; an index built with one id refuses another
    id: str = ""
    dim: int = 0
    #: images per forward pass that suits this embedder on this device
    batch_size: int = 32

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def embed_images(self, images: list[Image.Image]) -> ImageBatch:
        raise NotImplementedError

    def preprocess(self, image: Image.Image) -> Image.Image:
        """Cheap per-image work (resize) that the indexer's loader threads run ahead of the model."""
        return image


EMBEDDERS: dict[str, Callable[..., Embedder]] = {}


def register(name: str):
    """Class decorator: make an embedder available by `name` in `get_embedder`."""

    def wrap(factory):
        EMBEDDERS[name] = factory
        return factory

    return wrap


class UnknownEmbedder(ValueError):
    pass


class ModelUnavailable(RuntimeError):
    """A model's weights cannot be loaded (offline, missing folder, wrong family); one line for a person."""


def get_embedder(spec: str, **options) -> Embedder:
    """Build an embedder from a spec: `bundled`, `fake`, `clip:openai/clip-vit-base-patch32`, `clip:/a/folder`."""
    name, _, arg = spec.partition(":")
    if name not in EMBEDDERS:
        _load_builtin(name)
    if name not in EMBEDDERS:
        known = ", ".join(sorted(EMBEDDERS) or ["bundled", "clip", "siglip", "fake"])
        raise UnknownEmbedder(f"unknown embedder {name!r}; choose one of: {known}")
    return EMBEDDERS[name](arg, **options) if arg else EMBEDDERS[name](**options)


def _load_builtin(name: str) -> None:
    """Import the module of a built-in embedder so that it registers itself (keeps torch imports lazy)."""
    import importlib

    module = {"bundled": "bundled", "clip": "clip", "siglip": "clip", "fake": "fake"}.get(name)
    if module:
        importlib.import_module(f"retrieval.embedders.{module}")


def normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise rows; zero rows stay zero instead of becoming NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
