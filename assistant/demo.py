"""A small demo gallery for `imgchat serve` without a folder: real photos that installed packages already ship.

Nothing is downloaded. Gradio (a dependency) ships cheetah, lion and Eiffel Tower photos;
scikit-learn (installed with sentence-transformers) ships two Flickr photos. The packages are
located with `importlib.util.find_spec`, which does not import them (scikit-learn must stay out
of a process that runs torch).
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DemoPhoto:
    package: str
    source: str
    name: str
    credit: str


PHOTOS = (
    DemoPhoto("gradio", "media_assets/images/cheetah1.jpg", "cheetah-portrait.jpg", "Gradio media assets"),
    DemoPhoto("gradio", "media_assets/images/cheetah.jpg", "cheetah-running.jpg", "Gradio media assets"),
    DemoPhoto("gradio", "test_data/cheetah2.jpg", "cheetah-cub.jpg", "Gradio test data"),
    DemoPhoto("gradio", "media_assets/images/lion.jpg", "lion-on-a-rock.jpg", "Gradio media assets"),
    DemoPhoto("gradio", "media_assets/images/tower.jpg", "eiffel-tower-at-night.jpg", "Gradio media assets"),
    DemoPhoto(
        "sklearn",
        "datasets/images/china.jpg",
        "pagoda-by-a-lake.jpg",
        "danielbuechele on Flickr, CC BY 2.0 (shipped by scikit-learn)",
    ),
    DemoPhoto(
        "sklearn",
        "datasets/images/flower.jpg",
        "orange-dahlia-flower.jpg",
        "vultilion on Flickr, CC BY 2.0 (shipped by scikit-learn)",
    ),
)


#: requests the demo photos answer well with the bundled offline embedder (pass as AppConfig.examples)
EXAMPLES = ("show me a cheetah", "a lion on a rock", "an orange flower", "a pagoda by a lake")


class DemoUnavailable(RuntimeError):
    """None of the demo photos were found in the installed packages."""


def package_dir(package: str) -> Path | None:
    """The folder of an installed package, without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def available_photos() -> list[tuple[DemoPhoto, Path]]:
    """The demo photos present in this environment, with their source files."""
    found = []
    for photo in PHOTOS:
        root = package_dir(photo.package)
        if root is not None and (root / photo.source).is_file():
            found.append((photo, root / photo.source))
    return found


def prepare_demo(folder: Path) -> Path:
    """Copy the demo photos into `folder` (once) with descriptive names and a CREDITS.txt; return it."""
    photos = available_photos()
    if not photos:
        raise DemoUnavailable(
            "no demo photos found in the installed packages; run `imgchat serve FOLDER` with your own photos"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for photo, source in photos:
        target = folder / photo.name
        if not target.exists():
            shutil.copyfile(source, target)
    credits = [f"{photo.name}: {photo.credit} ({photo.package}/{photo.source})" for photo, _ in photos]
    (folder / "CREDITS.txt").write_text("\n".join(credits) + "\n")
    return folder
