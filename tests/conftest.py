"""Shared fixtures: an isolated IMGCHAT_HOME, the shared dataset, and real images made with Pillow."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

SHARED = Path(os.environ.get("IMGCHAT_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DATASET = SHARED / "datasets" / "gcompris-photos"


@pytest.fixture(autouse=True)
def imgchat_home(tmp_path, monkeypatch):
    home = tmp_path / "imgchat-home"
    monkeypatch.setenv("IMGCHAT_HOME", str(home))
    return home


@pytest.fixture
def dataset() -> Path:
    if not (DATASET / "captions.jsonl").exists():
        pytest.skip(f"needs ../shared/datasets/gcompris-photos (not found at {DATASET})")
    return DATASET


def make_image(path: Path, colour=(220, 30, 30), size=(64, 48), fmt=None, **save) -> Path:
    """Write a real image file: a solid colour with a little noise so files differ by content."""
    import numpy as np

    seed = int.from_bytes(hashlib.sha256(f"{path.name}{colour}".encode()).digest()[:4], "little")
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None, :] + rng.integers(-8, 8, (size[1], size[0], 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype("uint8")).save(path, format=fmt, **save)
    return path


COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """Eight real JPEG/PNG files, two per colour, in two sub-folders."""
    root = tmp_path / "photos"
    for n, (name, rgb) in enumerate(COLOURS.items()):
        make_image(root / "holidays" / f"{name}-1.jpg", rgb)
        make_image(root / "home" / f"{name}-2.png", rgb, size=(40 + n, 30))
    return root
