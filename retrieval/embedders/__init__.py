"""Embedders, registered by name: `bundled` (offline default), `clip`/`siglip` (transformers), `fake` (tests)."""

from retrieval.embedders.base import EMBEDDERS, Embedder, ImageBatch, get_embedder, normalize, register

__all__ = ["EMBEDDERS", "Embedder", "ImageBatch", "get_embedder", "normalize", "register"]
