"""Safe image decoding: one function that turns a file into an RGB picture or a one-line reason why not.

Every oddity found in real photo folders is handled here, so the indexer, search and the UI share
the same behaviour: EXIF rotation, CMYK, 16-bit, palette transparency, animation, truncation,
decompression bombs.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
DEFAULT_MAX_MEGAPIXELS = 100.0
# JPEGs are decoded at a reduced scale no smaller than this (Image.draft): models need ~224-384 px.
DRAFT_SIZE = 512

ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(Exception):
    """A file that cannot be used as an image; the message is one line meant for a person."""


@dataclass
class Decoded:
    """An RGB image with what the catalog keeps about its file."""

    image: Image.Image
    width: int
    height: int
    date: str | None
    camera: str | None


def content_hash(data: bytes) -> str:
    """Identity of a file's bytes, so moved or copied photos reuse their vector."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_bytes(path: str | Path, max_bytes: int = 512 * 1024 * 1024) -> bytes:
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise ImageError("empty file (0 bytes)")
    if size > max_bytes:
        raise ImageError(f"file is {size / 2**20:.0f} MB, over the {max_bytes / 2**20:.0f} MB limit")
    return path.read_bytes()


def decode(
    data: bytes, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, draft_size: int | None = DRAFT_SIZE
) -> Decoded:
    """Decode bytes into an upright RGB image (first frame if animated).

    Raises ImageError with the reason: not an image, truncated, too many pixels, unsupported mode.
    """
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("not an image (unrecognised format)") from None
    except Exception as exc:  # Pillow raises many types for bad headers
        raise ImageError(f"unreadable image header: {exc}") from None
    width, height = image.size
    if width * height > max_megapixels * 1e6:
        raise ImageError(
            f"too large to process ({width * height / 1e6:.0f} MP; the limit is {max_megapixels:g} MP, "
            f"raise it with --max-megapixels)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.load()
        exif = _exif(image)
        rgb = to_rgb(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except OSError as exc:
        raise ImageError(f"corrupt or truncated image: {exc}") from None
    except Exception as exc:
        raise ImageError(f"cannot decode image: {type(exc).__name__}: {exc}") from None
    # Report the upright size of the original, not of the draft.
    if exif.get("orientation") in (5, 6, 7, 8):
        width, height = height, width
    return Decoded(rgb, width, height, exif.get("date"), exif.get("camera"))


def load_image(path: str | Path, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> Image.Image:
    """Read and decode a file into an upright RGB image, or raise ImageError."""
    return decode(read_bytes(path), max_megapixels).image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is flattened onto white, 16-bit is scaled, not clipped."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return Image.fromarray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float32)
        span = max(float(array.max() - array.min()), 1e-6)
        return Image.fromarray(((array - array.min()) / span * 255).astype(np.uint8)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _exif(image: Image.Image) -> dict:
    try:
        exif = image.getexif()
    except Exception:
        return {}
    out: dict = {"orientation": exif.get(0x0112)}
    raw = exif.get_ifd(0x8769).get(0x9003) or exif.get(0x0132)
    if isinstance(raw, str):
        try:
            out["date"] = datetime.strptime(raw.strip()[:19], "%Y:%m:%d %H:%M:%S").isoformat(sep=" ")
        except ValueError:
            pass
    make, model = (str(exif.get(tag) or "").strip("\x00 ") for tag in (0x010F, 0x0110))
    if make or model:
        out["camera"] = (
            model if make and model.lower().startswith(make.lower()) else f"{make} {model}".strip()
        )
    return out
