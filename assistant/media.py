"""What the web app may show: resized copies of indexed images from a cache folder, and checked uploads.

The app never hands an original file path to Gradio. Every picture it serves is a JPEG that this
module decoded and re-encoded into its own cache folder, so a path in the index (a symlink, a
renamed file, a non-image) can never make the server send other bytes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from retrieval.images import ImageError, decode, read_bytes


@dataclass(frozen=True)
class UploadLimits:
    """Largest upload accepted: file size (also enforced by Gradio before the bytes land) and pixels."""

    max_bytes: int = 20 * 2**20
    max_megapixels: float = 40.0


class UploadRejected(ValueError):
    """An upload that cannot be used; the message is one line meant for the person who sent it."""


def open_upload(path: str | Path, limits: UploadLimits = UploadLimits()) -> Image.Image:
    """Decode an uploaded file into an upright RGB image, or raise UploadRejected saying why."""
    try:
        data = read_bytes(path, max_bytes=limits.max_bytes)
        return decode(data, max_megapixels=limits.max_megapixels, draft_size=None).image
    except ImageError as exc:
        raise UploadRejected(f"{Path(path).name or 'upload'} was not used: {exc}") from None
    except OSError:
        raise UploadRejected("the upload could not be read; please send it again") from None


class MediaCache:
    """Thumbnails and previews of images, written once into `folder` and named by a hash of their source.

    The key covers the source's path, size and modification time, so an edited photo gets a fresh
    thumbnail and a stale one is never shown.
    """

    def __init__(
        self,
        folder: Path,
        thumb_px: int = 256,
        preview_px: int = 1024,
        roots: Callable[[], list[str]] | None = None,
    ):
        self.folder = Path(folder)
        self.thumb_px = thumb_px
        self.preview_px = preview_px
        #: the indexed folders: a source that resolves outside them (a symlink swapped in after
        #: indexing) is shown as the placeholder, never read
        self.roots = roots

    def thumb(self, source: str | Path) -> Path:
        return self._resized(source, self.thumb_px)

    def preview(self, source: str | Path) -> Path:
        return self._resized(source, self.preview_px)

    def store(self, image: Image.Image, name: str) -> Path:
        """Save an already decoded image (an upload) as a thumbnail, under a name derived from `name`."""
        target = self.folder / "uploads" / f"{hashlib.sha256(name.encode()).hexdigest()[:32]}.jpg"
        if not target.exists():
            _save_jpeg(_shrink(image, self.thumb_px), target)
        return target

    def placeholder(self) -> Path:
        """A grey square shown in place of an image that has vanished or no longer decodes."""
        target = self.folder / "missing.jpg"
        if not target.exists():
            _save_jpeg(Image.new("RGB", (self.thumb_px, self.thumb_px), (200, 200, 200)), target)
        return target

    def _resized(self, source: str | Path, px: int) -> Path:
        if self.roots is not None and not _inside(Path(source), self.roots()):
            return self.placeholder()
        target = self._key_path(Path(source), px)
        if target.exists():
            return target
        try:
            image = decode(read_bytes(source), draft_size=px).image
        except (ImageError, OSError):
            return self.placeholder()
        _save_jpeg(_shrink(image, px), target)
        return target

    def _key_path(self, source: Path, px: int) -> Path:
        try:
            stat = source.stat()
            stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest = hashlib.sha256(f"{source.absolute()}|{stamp}|{px}".encode()).hexdigest()
        return self.folder / str(px) / digest[:2] / f"{digest[2:34]}.jpg"


def _inside(source: Path, roots: list[str]) -> bool:
    real = source.resolve()
    return any(real.is_relative_to(Path(root).resolve()) for root in roots)


def _shrink(image: Image.Image, px: int) -> Image.Image:
    image = image.copy()
    image.thumbnail((px, px), Image.Resampling.LANCZOS)
    return image


def _save_jpeg(image: Image.Image, target: Path) -> None:
    """Write atomically, so a concurrent reader never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            image.convert("RGB").save(handle, "JPEG", quality=85)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
