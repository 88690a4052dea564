"""CLIP and SigLIP embedders through transformers, loaded from a hub id or a local folder.

Each tower loads on first use (a text-only search never loads the vision tower, and indexing never
loads the text tower). Image preprocessing reads the checkpoint's own processor settings but runs
with Pillow and torch, not transformers' processors: their "fast" variants need torchvision, which
breaks beside our torch, and splitting the work lets `preprocess` (resize + crop, in the indexer's
loader threads) run ahead of `embed_images` (tensorise + normalise on the model's device).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from retrieval.embedders.base import Embedder, ImageBatch, ModelUnavailable, normalize, register


@dataclass(frozen=True)
class Family:
    """What differs between CLIP and SigLIP checkpoints for our purpose."""

    text_class: str
    vision_class: str
    text_output: str
    image_output: str
    #: SigLIP was trained on max_length-padded text without a mask; CLIP pads to the longest and masks
    text_padding: str | bool
    text_mask: bool
    default_model: str


FAMILIES = {
    "clip": Family(
        "CLIPTextModelWithProjection",
        "CLIPVisionModelWithProjection",
        "text_embeds",
        "image_embeds",
        text_padding=True,
        text_mask=True,
        default_model="openai/clip-vit-base-patch32",
    ),
    "siglip": Family(
        "SiglipTextModel",
        "SiglipVisionModel",
        "pooler_output",
        "pooler_output",
        text_padding="max_length",
        text_mask=False,
        default_model="google/siglip-base-patch16-224",
    ),
}


@dataclass(frozen=True)
class ImagePrep:
    """A checkpoint's resize / centre-crop / normalise settings (its preprocessor_config.json)."""

    shortest_edge: int | None
    size: tuple[int, int] | None  # (height, width) when resizing to a fixed size
    crop: tuple[int, int] | None
    resample: int
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_config(cls, cfg: dict) -> ImagePrep:
        size = cfg.get("size", 224) if cfg.get("do_resize", True) else None
        if isinstance(size, int):
            size = {"shortest_edge": size}
        crop = cfg.get("crop_size") if cfg.get("do_center_crop", False) else None
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        if size is not None and "shortest_edge" not in size and "height" not in size:
            raise ModelUnavailable(f"unsupported image processor size setting {size}")
        normalise = cfg.get("do_normalize", True)
        return cls(
            shortest_edge=size.get("shortest_edge") if size else None,
            size=(size["height"], size["width"]) if size and "height" in size else None,
            crop=(crop["height"], crop["width"]) if crop else None,
            resample=int(cfg.get("resample", Image.Resampling.BICUBIC)),
            scale=float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0,
            mean=tuple(cfg.get("image_mean", (0.0, 0.0, 0.0))) if normalise else (0.0, 0.0, 0.0),
            std=tuple(cfg.get("image_std", (1.0, 1.0, 1.0))) if normalise else (1.0, 1.0, 1.0),
        )

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(width, height) of every prepared image, when fixed."""
        fixed = self.crop or self.size
        return (fixed[1], fixed[0]) if fixed else None

    def apply(self, image: Image.Image) -> Image.Image:
        """Resize and crop as transformers' PIL processor does (same sizes, same crop offsets)."""
        image = image.convert("RGB")
        if self.shortest_edge:
            image = image.resize(self._shortest_edge_size(image.size), self.resample)
        elif self.size:
            image = image.resize((self.size[1], self.size[0]), self.resample)
        return _centre_crop(image, self.crop) if self.crop else image

    def _shortest_edge_size(self, size: tuple[int, int]) -> tuple[int, int]:
        width, height = size
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.shortest_edge * long / short)
        return (self.shortest_edge, new_long) if width <= height else (new_long, self.shortest_edge)


def _centre_crop(image: Image.Image, crop: tuple[int, int]) -> Image.Image:
    """Crop (height, width) from the centre; an image smaller than that is padded with black."""
    height, width = crop
    top, left = (image.height - height) // 2, (image.width - width) // 2
    if top >= 0 and left >= 0:
        return image.crop((left, top, left + width, top + height))
    canvas = Image.new("RGB", (max(width, image.width), max(height, image.height)))
    canvas.paste(image, (-(-(canvas.width - image.width) // 2), -(-(canvas.height - image.height) // 2)))
    return _centre_crop(canvas, crop)


def _load(what: str, model: str, loader):
    """Run a transformers loader, turning "not cached and no network" into one clear message."""
    try:
        return loader()
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelUnavailable(
            f"cannot load {what} of {model!r} offline: {reason[:200]}; "
            "download it once with network (it is then cached) or pass a local folder"
        ) from error


@contextmanager
def _quiet_transformers():
    """Hide the load report listing the other tower's weights as unused: that is the point."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def _resolve(model: str) -> str:
    """A local folder becomes an absolute path; anything else is a hub id."""
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if model.startswith(("/", ".", "~")):
        raise ModelUnavailable(f"no model folder at {model!r}")
    return model


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class TransformersEmbedder(Embedder):
    """Shared loading and batching for CLIP-like dual encoders."""

    def __init__(self, model: str | None = None, device: str | None = None, batch_size: int | None = None):
        self.family = FAMILIES[self.name]
        self.model = _resolve(model or self.family.default_model)
        self.device = torch.device(device or _default_device())
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.batch_size = batch_size or (128 if self.device.type == "cuda" else 16)
        # the vector space depends on the weights, not on the device or dtype
        self.id = f"{self.name}:{self.model}"

    @cached_property
    def config(self):
        from transformers import AutoConfig

        config = _load("the config", self.model, lambda: AutoConfig.from_pretrained(self.model))
        if config.model_type != self.name:
            raise ModelUnavailable(
                f"{self.model!r} is a {config.model_type!r} model, not {self.name!r}; "
                f"use '{config.model_type}:{self.model}' if it is supported"
            )
        return config

    @property
    def dim(self) -> int:  # type: ignore[override]
        """Vector size from the config alone: no weights are loaded."""
        return _output_dim(self.config)

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        return _load("the tokenizer", self.model, lambda: AutoTokenizer.from_pretrained(self.model))

    @cached_property
    def image_prep(self) -> ImagePrep:
        from transformers.image_processing_utils import ImageProcessingMixin

        cfg, _ = _load(
            "the image processor",
            self.model,
            lambda: ImageProcessingMixin.get_image_processor_dict(self.model),
        )
        return ImagePrep.from_config(cfg)

    @cached_property
    def text_model(self) -> torch.nn.Module:
        return self._load_tower(self.family.text_class, "text_config", "the text tower")

    @cached_property
    def vision_model(self) -> torch.nn.Module:
        return self._load_tower(self.family.vision_class, "vision_config", "the vision tower")

    def _load_tower(self, class_name: str, config_key: str, what: str) -> torch.nn.Module:
        """Load one tower's weights out of the full checkpoint; the other tower's are skipped."""
        import transformers

        config = getattr(self.config, config_key)
        if hasattr(self.config, "projection_dim"):  # CLIP keeps it at the top level only
            config.projection_dim = self.config.projection_dim
        cls = getattr(transformers, class_name)
        with _quiet_transformers():
            model = _load(what, self.model, lambda: cls.from_pretrained(self.model, config=config))
        return model.to(self.device, self.dtype).eval()

    def loaded_towers(self) -> set[str]:
        """Which towers are in memory (for tests and diagnostics)."""
        return {tower for tower in ("text", "vision") if f"{tower}_model" in self.__dict__}

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        chunks = [self._embed_text_batch(texts[i : i + 256]) for i in range(0, len(texts), 256)]
        return normalize(np.concatenate(chunks)) if chunks else np.zeros((0, self.dim), np.float32)

    @torch.inference_mode()
    def _embed_text_batch(self, texts: list[str]) -> np.ndarray:
        max_length = self.config.text_config.max_position_embeddings
        tokens = self.tokenizer(
            texts,
            padding=self.family.text_padding,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        inputs = {"input_ids": tokens["input_ids"].to(self.device)}
        if self.family.text_mask:
            inputs["attention_mask"] = tokens["attention_mask"].to(self.device)
        output = getattr(self.text_model(**inputs), self.family.text_output)
        return output.float().cpu().numpy()

    def preprocess(self, image: Image.Image) -> Image.Image:
        return self.image_prep.apply(image)

    def embed_images(self, images: list[Image.Image]) -> ImageBatch:
        if not images:
            return ImageBatch(np.zeros((0, self.dim), np.float32), [])
        prep = self.image_prep
        ready = [im if im.size == prep.output_size and im.mode == "RGB" else prep.apply(im) for im in images]
        step = self.batch_size
        vectors = np.concatenate(
            [self._embed_image_batch(ready[i : i + step]) for i in range(0, len(ready), step)]
        )
        return ImageBatch(normalize(vectors), [[] for _ in images])

    @torch.inference_mode()
    def _embed_image_batch(self, images: list[Image.Image]) -> np.ndarray:
        prep = self.image_prep
        pixels = torch.from_numpy(np.stack([np.asarray(im) for im in images])).to(self.device)
        pixels = pixels.permute(0, 3, 1, 2).float() * prep.scale
        mean = torch.tensor(prep.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(prep.std, device=self.device).view(1, 3, 1, 1)
        pixels = ((pixels - mean) / std).to(self.dtype)
        output = getattr(self.vision_model(pixel_values=pixels), self.family.image_output)
        return output.float().cpu().numpy()


def _output_dim(config) -> int:
    """CLIP projects both towers to projection_dim; SigLIP's vision pooler keeps the hidden size."""
    if config.model_type == "clip":
        return int(config.projection_dim)
    return int(config.vision_config.hidden_size)


@register("clip")
class ClipEmbedder(TransformersEmbedder):
    """OpenAI CLIP and its relatives (OpenCLIP/LAION checkpoints in transformers format)."""

    name = "clip"


@register("siglip")
class SiglipEmbedder(TransformersEmbedder):
    """Google SigLIP (sigmoid-loss CLIP): text padded to max_length, as it was trained."""

    name = "siglip"
