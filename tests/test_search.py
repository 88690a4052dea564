"""Search over a real FAISS index and catalog: negatives, feedback, examples, filters, metrics, kinds."""

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.catalog import Catalog
from retrieval.library import Library, LibraryConfig
from retrieval.query import Filter, Query
from retrieval.stores.faiss_store import FaissStore
from tests.conftest import COLOURS


def lib_for(tmp_path, folder, **config) -> Library:
    lib = Library.open(tmp_path / "index", LibraryConfig(embedder="fake", show_progress=False, **config))
    lib.index(folder)
    return lib


def names(results) -> list[str]:
    return [Path(r.path).name for r in results]


def test_text_query_ranks_and_explains(tmp_path, photo_folder):
    results = lib_for(tmp_path, photo_folder).search(Query(positive=[("green", 1.0)], k=2))
    assert sorted(names(results)) == ["green-1.jpg", "green-2.png"]
    assert results[0].score >= results[1].score
    assert "closest to “green”" in results[0].explanation and "looks like green" in results[0].explanation
    assert results[0].meta["width"] in (64, 41)


def test_negative_concept_drops_matching_images(tmp_path, photo_folder):
    lib = lib_for(tmp_path, photo_folder)
    q = Query(positive=[("red", 1.0), ("green", 1.0)], k=2)
    both = names(lib.search(q))
    q.negative = [("red", 1.0)]
    assert all(n.startswith("green") for n in names(lib.search(q))), both


def test_dislikes_never_come_back_and_likes_pull(tmp_path, photo_folder):
    lib = lib_for(tmp_path, photo_folder)
    blue = lib.id_for_path(photo_folder / "holidays" / "blue-1.jpg")
    red = lib.id_for_path(photo_folder / "holidays" / "red-1.jpg")
    plain = lib.search(Query(positive=[("yellow", 1.0)], k=8))
    liked = lib.search(Query(positive=[("yellow", 1.0)], like_ids=[blue], k=8))
    rank = lambda results, name: names(results).index(name)  # noqa: E731
    gap = lambda results: results[0].score - results[rank(results, "blue-2.png")].score  # noqa: E731
    assert rank(liked, "blue-2.png") <= rank(plain, "blue-2.png") and gap(liked) < gap(plain) - 0.05
    disliked = lib.search(Query(positive=[("yellow", 1.0)], dislike_ids=[red], k=8))
    assert "red-1.jpg" not in names(disliked)
    assert rank(disliked, "red-2.png") >= rank(plain, "red-2.png")


def test_query_by_example_image(tmp_path, photo_folder):
    lib = lib_for(tmp_path, photo_folder)
    example = Image.open(photo_folder / "home" / "blue-2.png").convert("RGB")
    results = lib.search(Query(images=[example], k=2))
    assert set(names(results)) == {"blue-1.jpg", "blue-2.png"}
    assert "resembles your photo" in results[0].explanation


def test_folder_and_date_filters(tmp_path, photo_folder):
    old = photo_folder / "home" / "red-2.png"
    lib = lib_for(tmp_path, photo_folder)
    only_home = lib.search(Query(positive=[("red", 1.0)], filter=Filter(folder="home"), k=8))
    assert all("/home/" in r.path for r in only_home) and len(only_home) == 4
    year = time.strftime("%Y")
    lib.catalog.db.execute("UPDATE files SET date = '2019-07-14 10:00:00' WHERE path = ?", (str(old),))
    in_2019 = lib.search(Query(positive=[("red", 1.0)], filter=Filter(date_from="2019", date_to="2019"), k=8))
    assert names(in_2019) == ["red-2.png"], year


def test_files_without_exif_date_by_mtime(tmp_path, photo_folder):
    # no EXIF: the date falls back to the file's modification time, so "photos from <year>" still works
    path = photo_folder / "home" / "green-2.png"
    stamp = time.mktime((2018, 5, 1, 12, 0, 0, 0, 0, -1))
    os.utime(path, (stamp, stamp))
    lib = lib_for(tmp_path, photo_folder)
    hits = lib.search(Query(positive=[("green", 1.0)], filter=Filter(date_from="2018", date_to="2018"), k=8))
    assert names(hits) == ["green-2.png"]


def test_l2_metric_gives_the_same_ranking(tmp_path, photo_folder):
    ip = lib_for(tmp_path / "a", photo_folder)
    l2 = lib_for(tmp_path / "b", photo_folder, metric="l2")
    q = Query(positive=[("yellow", 1.0)], k=8)
    assert names(ip.search(q)) == names(l2.search(q))
    assert all(r.score <= 0 for r in l2.search(q))


def test_hnsw_matches_flat_and_handles_removal(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(10, 2010, dtype=np.int64)
    flat, hnsw = FaissStore(None, 32, kind="flat"), FaissStore(tmp_path / "h.index", 32, kind="hnsw")
    for store in (flat, hnsw):
        store.add(ids, vectors)
        store.remove(ids[:5])
    recall = []
    for q in vectors[100:150]:
        exact, approx = set(flat.search(q, 10).ids.tolist()), set(hnsw.search(q, 10).ids.tolist())
        recall.append(len(exact & approx) / 10)
    assert np.mean(recall) > 0.9
    assert not set(ids[:5]) & set(hnsw.search(vectors[0], 10).ids.tolist())
    hnsw.save()
    again = FaissStore(tmp_path / "h.index", 32, kind="hnsw")
    assert len(again) == 1995 and 10 not in again.ids()


def test_filtered_search_through_selector_on_large_allowed_set(tmp_path):
    import retrieval.stores.faiss_store as fs

    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((500, 16)).astype(np.float32)
    store = FaissStore(None, 16)
    store.add(np.arange(500), vectors)
    allowed = np.arange(0, 500, 2)
    small = store.search(vectors[3], 5, allowed=allowed)
    old, fs.SMALL_FILTER = fs.SMALL_FILTER, 10
    try:
        big = store.search(vectors[3], 5, allowed=allowed)
    finally:
        fs.SMALL_FILTER = old
    assert np.all(small.ids % 2 == 0) and small.ids.tolist() == big.ids.tolist()


def test_empty_query_returns_nothing(tmp_path, photo_folder):
    assert lib_for(tmp_path, photo_folder).search(Query()) == []


def test_catalog_filter_escapes_like_wildcards(tmp_path):
    catalog = Catalog(tmp_path / "c.sqlite")
    assert catalog.ids_matching(Filter(folder="%")).tolist() == []
    catalog.close()


@pytest.mark.parametrize("colour", list(COLOURS))
def test_each_colour_finds_its_images(tmp_path, photo_folder, colour):
    lib = lib_for(tmp_path, photo_folder)
    assert all(n.startswith(colour) for n in names(lib.search(Query(positive=[(colour, 1.0)], k=2))))


def test_hnsw_update_replaces_the_vector_without_duplicates(tmp_path):
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((1500, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = FaissStore(tmp_path / "h.index", 16, kind="hnsw")
    store.add(np.arange(1500), vectors)
    new = vectors[7] * -1  # id 3 now holds what looks like nothing it held before
    store.add(np.array([3]), new[None])
    hits = store.search(new, 5)
    assert hits.ids[0] == 3 and np.isclose(hits.scores[0], 1.0) and len(set(hits.ids.tolist())) == 5
    assert 3 not in store.search(vectors[3], 5).ids.tolist()  # the stale copy no longer answers as 3
    np.testing.assert_allclose(store.get(np.array([3]))[0], new, atol=1e-6)
    assert len(store) == 1500
    store.add(np.arange(600), vectors[:600])  # many updates: the graph is rebuilt on save
    store.save()
    again = FaissStore(tmp_path / "h.index", 16, kind="hnsw")
    assert again.index.ntotal == len(again) == 1500
    np.testing.assert_allclose(again.get(np.array([3]))[0], vectors[3], atol=1e-6)
