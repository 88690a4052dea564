"""Incremental, failure-isolating, crash-safe indexing on real files, a real FAISS index and SQLite."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from retrieval.library import Library, LibraryConfig
from retrieval.query import Query
from tests.conftest import COLOURS, make_image

FAKE = LibraryConfig(embedder="fake", show_progress=False)


def open_lib(tmp_path) -> Library:
    return Library.open(tmp_path / "index", FAKE)


def top_path(lib: Library, text: str) -> str:
    return Path(lib.search(Query(positive=[(text, 1.0)], k=1))[0].path).name


def test_second_run_skips_unchanged_files(tmp_path, photo_folder):
    lib = open_lib(tmp_path)
    first = lib.index(photo_folder)
    assert (first.added, first.unchanged, first.failed) == (8, 0, [])
    second = lib.index(photo_folder)
    assert (second.added, second.unchanged, second.removed) == (0, 8, 0)
    assert len(lib) == 8


def test_modified_moved_copied_and_deleted_files(tmp_path, photo_folder):
    lib = open_lib(tmp_path)
    lib.index(photo_folder)
    red = photo_folder / "holidays" / "red-1.jpg"
    id_before = lib.id_for_path(red)
    shutil.move(photo_folder / "home" / "blue-2.png", photo_folder / "blue-moved.png")
    shutil.copy(photo_folder / "home" / "green-2.png", photo_folder / "green-copy.png")
    (photo_folder / "home" / "yellow-2.png").unlink()
    make_image(red, COLOURS["blue"])  # same path, new content
    os.utime(red, ns=(time.time_ns(), time.time_ns() + 10**9))
    report = lib.index(photo_folder)
    assert report.reused == 2  # the moved and the copied file keep their vectors
    assert report.added == 1 and report.removed == 2
    assert lib.id_for_path(red) == id_before  # a modified file keeps its id
    assert len(lib) == 8 and len(set(lib.store.ids())) == 8
    hits = [Path(r.path).name for r in lib.search(Query(positive=[("blue", 1.0)], k=3))]
    assert set(hits) == {"red-1.jpg", "blue-1.jpg", "blue-moved.png"}


def test_bad_files_are_skipped_reported_and_do_not_shift_vectors(tmp_path, photo_folder):
    (photo_folder / "empty.jpg").write_bytes(b"")
    (photo_folder / "notes.jpg").write_text("not a photo")
    good = (photo_folder / "holidays" / "green-1.jpg").read_bytes()
    (photo_folder / "half.jpg").write_bytes(good[: len(good) // 2])
    (photo_folder / "readme.txt").write_text("ignored: not an image extension")
    lib = open_lib(tmp_path)
    told = []
    report = lib.index(photo_folder, on_skip=lambda path, why: told.append(Path(path).name))
    reasons = dict((Path(p).name, why) for p, why in report.failed)
    assert set(reasons) == {"empty.jpg", "notes.jpg", "half.jpg"}
    assert "empty file" in reasons["empty.jpg"] and "not an image" in reasons["notes.jpg"]
    assert sorted(told) == sorted(reasons)
    for colour in COLOURS:  # each colour still finds its own files: vectors stayed aligned with paths
        hits = [Path(r.path).name for r in lib.search(Query(positive=[(colour, 1.0)], k=2))]
        assert all(h.startswith(colour) for h in hits), (colour, hits)
    assert lib.index(photo_folder).failed == report.failed  # retried, and still reported


def test_symlinks_leading_outside_are_not_indexed(tmp_path, photo_folder):
    outside = make_image(tmp_path / "secret" / "private.png", COLOURS["red"])
    (photo_folder / "link.png").symlink_to(outside)
    lib = open_lib(tmp_path)
    lib.index(photo_folder)
    assert lib.id_for_path(photo_folder / "link.png") is None
    assert len(lib) == 8


def test_other_embedder_is_refused_with_a_fix(tmp_path, photo_folder):
    open_lib(tmp_path).index(photo_folder)
    with pytest.raises(Exception, match=r"built with embedder 'fake:32'.*re-index"):
        Library.open(tmp_path / "index", LibraryConfig(embedder="fake"), embedder=_Fake16())


def _Fake16():
    from retrieval.embedders.fake import FakeEmbedder

    return FakeEmbedder(dim=16)


def test_store_is_rebuilt_from_catalog_when_index_file_is_lost(tmp_path, photo_folder):
    lib = open_lib(tmp_path)
    lib.index(photo_folder)
    lib.close()
    (tmp_path / "index" / "faiss.index").unlink()
    lib = open_lib(tmp_path)
    assert len(lib) == 8 and top_path(lib, "yellow").startswith("yellow")


SLOW_INDEXER = textwrap.dedent(
    """
    import sys, time
    from retrieval.embedders.fake import FakeEmbedder
    from retrieval.library import Library, LibraryConfig

    class Slow(FakeEmbedder):
        batch_size = 4
        def embed_images(self, images):
            time.sleep(0.15)
            return super().embed_images(images)

    lib = Library.open(sys.argv[1], LibraryConfig(embedder="fake", show_progress=False), embedder=Slow())
    lib.index(sys.argv[2])
    """
)


def test_kill_9_mid_indexing_then_resume_without_loss_or_duplicates(tmp_path):
    folder = tmp_path / "many"
    names = list(COLOURS)
    for n in range(80):
        make_image(folder / f"{names[n % 4]}-{n:03d}.png", COLOURS[names[n % 4]], size=(32 + n % 7, 24))
    index = tmp_path / "index"
    script = tmp_path / "slow.py"
    script.write_text(SLOW_INDEXER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, str(script), str(index), str(folder)], env=env)
    deadline = time.time() + 60
    while time.time() < deadline and _committed(index) < 20:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = _committed(index)
    assert 20 <= committed < 80, "the kill must land mid-run"
    lib = open_lib(tmp_path)
    report = lib.index(folder)
    assert report.unchanged == committed and report.added == 80 - committed
    ids = lib.store.ids()
    assert len(ids) == len(set(ids.tolist())) == 80 == lib.catalog.count()
    for colour in COLOURS:
        hits = lib.search(Query(positive=[(colour, 1.0)], k=20))
        assert {Path(r.path).name.split("-")[0] for r in hits} == {colour}


def _committed(index: Path) -> int:
    db = index / "catalog.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=0.1) as con:
            return con.execute("SELECT count(*) FROM files").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_progress_callback_counts_to_total(tmp_path, photo_folder):
    seen = []
    open_lib(tmp_path).index(photo_folder, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (8, 8) and all(t == 8 for _, t in seen)


def test_vectors_round_trip_from_store(tmp_path, photo_folder):
    lib = open_lib(tmp_path)
    lib.index(photo_folder)
    ids = lib.store.ids()[:3]
    np.testing.assert_allclose(lib.vectors(ids), lib.catalog.vectors_for(ids, lib.store.dim), atol=1e-6)


def test_a_file_that_breaks_leaves_the_index(tmp_path, photo_folder):
    lib = open_lib(tmp_path)
    lib.index(photo_folder)
    green = photo_folder / "home" / "green-2.png"
    green.write_bytes(b"now garbage")
    lib.index(photo_folder)
    assert len(lib) == 7 and lib.id_for_path(green) is None
    assert all(r.path for r in lib.search(Query(positive=[("green", 1.0)], k=8)))


def test_raising_the_pixel_limit_retries_skipped_files(tmp_path, photo_folder):
    big = make_image(photo_folder / "big.png", COLOURS["red"], size=(1200, 1000))
    small_limit = LibraryConfig(embedder="fake", show_progress=False, max_megapixels=1)
    report = Library.open(tmp_path / "index", small_limit).index(photo_folder)
    assert [Path(p).name for p, _ in report.failed] == ["big.png"]
    lib = Library.open(tmp_path / "index", LibraryConfig(show_progress=False, max_megapixels=5))
    report = lib.index(photo_folder)
    assert report.failed == [] and report.added == 1 and lib.id_for_path(big) is not None


def test_crash_between_commit_and_store_save_keeps_the_new_vector(tmp_path, photo_folder, monkeypatch):
    lib = open_lib(tmp_path)
    lib.index(photo_folder)
    red = photo_folder / "holidays" / "red-1.jpg"
    make_image(red, COLOURS["blue"])
    os.utime(red, ns=(time.time_ns(), time.time_ns() + 10**9))

    def die(self):  # the process dies when it would first save the store, after the commit
        raise KeyboardInterrupt

    monkeypatch.setattr(type(lib.store), "save", die)
    with pytest.raises(KeyboardInterrupt):
        lib.index(photo_folder)
    monkeypatch.undo()
    lib = open_lib(tmp_path)
    rid = lib.id_for_path(red)
    np.testing.assert_allclose(
        lib.vectors([rid]), lib.catalog.vectors_for(np.array([rid]), lib.store.dim), atol=1e-6
    )
    assert "red-1.jpg" in [Path(r.path).name for r in lib.search(Query(positive=[("blue", 1.0)], k=3))]


def test_metric_and_kind_are_remembered(tmp_path, photo_folder):
    Library.open(tmp_path / "index", LibraryConfig(embedder="fake", metric="l2", kind="hnsw")).index(
        photo_folder
    )
    lib = Library.open(tmp_path / "index")
    assert (lib.store.metric, lib.store.kind, lib.config.embedder) == ("l2", "hnsw", "fake")


def test_feedback_on_an_image_removed_since_is_ignored(tmp_path, photo_folder):
    lib = open_lib(tmp_path)
    lib.index(photo_folder)
    gone = lib.id_for_path(photo_folder / "home" / "blue-2.png")
    (photo_folder / "home" / "blue-2.png").unlink()
    lib.index(photo_folder)
    results = lib.search(Query(positive=[("blue", 1.0)], like_ids=[gone], dislike_ids=[gone], k=3))
    assert results and gone not in [r.id for r in results]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any folder")
def test_an_unreadable_folder_is_not_taken_for_deleted(tmp_path, photo_folder):
    lib = open_lib(tmp_path)
    lib.index(photo_folder)
    (photo_folder / "home").chmod(0)
    try:
        assert lib.index(photo_folder).removed == 0 and len(lib) == 8
    finally:
        (photo_folder / "home").chmod(0o755)


def test_a_version_1_catalog_is_migrated(tmp_path, photo_folder):
    lib = open_lib(tmp_path)
    lib.index(photo_folder)
    lib.close()
    with sqlite3.connect(tmp_path / "index" / "catalog.sqlite") as con:  # as imgchat's first schema wrote it
        con.execute("ALTER TABLE files DROP COLUMN synced")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    lib = open_lib(tmp_path)
    assert lib.catalog.stored_space()["schema_version"] == "2" and len(lib) == 8
    assert lib.catalog.unsynced_ids().size == 0  # re-added once on open, then marked
