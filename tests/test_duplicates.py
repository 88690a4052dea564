"""Near-duplicate detection with the default offline embedder on real photos: a re-encoded, resized,
slightly cropped copy is found; another photo of an indexed subject is not."""

import shutil

import pytest
from click.testing import CliRunner
from PIL import Image

from assistant.cli import cli

pytestmark = pytest.mark.slow

IN_INDEX = [
    "erase-cheetah",
    "monuments-eiffel-tower",
    "farm-animals-cow",
    "categorization-tools-hammer-1",
    "erase-bee",
    "world-animals-giraffe",
    "categorization-fishes-fish-1",
]


def test_copies_are_found_and_strangers_are_not(dataset, tmp_path):
    library = tmp_path / "library"
    library.mkdir()
    for name in IN_INDEX:
        shutil.copy(dataset / "images" / f"{name}.jpg", library)
    assert CliRunner().invoke(cli, ["index", str(library), "--index", "mine"]).exit_code == 0
    original = Image.open(library / "erase-cheetah.jpg")
    w, h = original.size
    copy = original.crop((w // 20, h // 20, w - w // 20, h - h // 20)).resize((w // 2, h // 2))
    copy.save(tmp_path / "copy.jpg", quality=60)
    out = CliRunner().invoke(cli, ["duplicates", str(tmp_path / "copy.jpg"), "--index", "mine"])
    assert out.exit_code == 0 and "erase-cheetah.jpg" in out.output, out.output
    stranger = dataset / "images" / "erase-giraffe.jpg"  # another photo of a giraffe that is indexed
    out = CliRunner().invoke(cli, ["duplicates", str(stranger), "--index", "mine"])
    assert out.exit_code == 1 and "no near-duplicate" in out.output, out.output
