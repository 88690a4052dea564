"""`imgchat index --processes 2` (accelerate, two real CPU processes) builds the same index as one process."""

from pathlib import Path

import numpy as np
import pytest

from retrieval.library import Library, LibraryConfig


@pytest.mark.slow
def test_two_processes_index_like_one(tmp_path, photo_folder):
    (photo_folder / "broken.jpg").write_bytes(b"not an image")
    libraries = []
    for processes in (1, 2):
        lib = Library.open(tmp_path / f"p{processes}", LibraryConfig(embedder="fake", show_progress=False))
        report = lib.index(photo_folder, processes=processes)
        assert (report.added, report.reused, len(report.failed)) == (8, 0, 1)
        libraries.append(lib)
    one, two = libraries
    by_path = lambda lib: {  # noqa: E731
        Path(lib.record(int(i))["path"]).name: lib.vectors([i])[0] for i in lib.store.ids()
    }
    a, b = by_path(one), by_path(two)
    assert a.keys() == b.keys() and len(a) == 8
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-6)
    assert two.record(two.id_for_path(photo_folder / "holidays" / "red-1.jpg"))["width"] == 64
