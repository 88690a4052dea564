"""The Milvus store on a real embedded Milvus Lite engine, checked against the FAISS store and the catalog.

Each store opens a real Milvus Lite database under tmp_path (no server, no fakes). Filters are checked
for parity: Milvus evaluating `where` itself must return what FAISS returns when the catalog computes
the allowed ids, on the same vectors.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from retrieval.catalog import Catalog, FileRow  # noqa: E402
from retrieval.query import Filter  # noqa: E402
from retrieval.stores.base import STORES  # noqa: E402
from retrieval.stores.faiss_store import FaissStore  # noqa: E402
from retrieval.stores.milvus import (  # noqa: E402
    MilvusStore,
    StoreMismatch,
    StoreUnavailable,
    collection_for,
    connect_args,
    filter_expression,
)

REPO = Path(__file__).resolve().parents[1]
DIM = 384


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def open_lite(tmp_path: Path, dim: int = DIM, metric: str = "ip", **kw) -> MilvusStore:
    return STORES["milvus-lite"](f"milvus-lite:{tmp_path / 'vectors.db'}", dim, metric, **kw)


@pytest.fixture
def lite(tmp_path):
    store = open_lite(tmp_path)
    yield store
    store.close()


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_search_matches_faiss(tmp_path, metric):
    vectors, queries = unit_vectors(600), unit_vectors(5, seed=1)
    ids = np.arange(1000, 1600, dtype=np.int64)
    milvus, faiss_store = open_lite(tmp_path, metric=metric), FaissStore(None, DIM, metric, "flat")
    milvus.add(ids, vectors)
    faiss_store.add(ids, vectors)
    for q in queries:
        got, want = milvus.search(q, 10), faiss_store.search(q, 10)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)
    if metric == "l2":  # higher is better: the negated squared distance
        expect = -((vectors[got.ids - 1000] - queries[-1]) ** 2).sum(1)
        np.testing.assert_allclose(got.scores, expect, atol=1e-4)
    milvus.close()


def test_incremental_add_replace_remove(lite):
    vectors = unit_vectors(200)
    lite.add(np.arange(100), vectors[:100])
    lite.add(np.arange(100, 150), vectors[100:150])
    lite.add(np.arange(10), vectors[150:160])  # re-adding ids replaces their vectors
    lite.remove(np.arange(140, 150))
    assert lite.ids().tolist() == list(range(140))
    assert len(lite) == 140
    np.testing.assert_allclose(lite.get(np.array([3, 120])), vectors[[153, 120]], atol=1e-6)
    hits = lite.search(vectors[145], 140)
    assert 145 not in hits.ids and len(hits.ids) == 140
    assert lite.search(vectors[153], 1).ids.tolist() == [3]
    with pytest.raises(KeyError, match="145"):
        lite.get(np.array([1, 145]))


def test_repeated_id_in_one_add_keeps_the_last_row(lite):
    vectors = unit_vectors(3)
    lite.add(np.array([7, 8, 7]), vectors)
    assert lite.ids().tolist() == [7, 8]
    np.testing.assert_allclose(lite.get(np.array([7]))[0], vectors[2], atol=1e-6)


def test_reopen_keeps_rows_and_rebuilds_index_for_a_new_metric(tmp_path):
    vectors = unit_vectors(50)
    store = open_lite(tmp_path)
    store.add(np.arange(50), vectors)
    store.close()
    store = open_lite(tmp_path, metric="l2")
    assert len(store) == 50
    hits = store.search(vectors[0], 3)
    assert hits.ids[0] == 0 and hits.scores[0] == pytest.approx(0.0, abs=1e-5)
    assert np.all(hits.scores[1:] < -0.5)  # negated squared distances of random unit vectors (~ -2)
    store.close()


def test_other_dimension_is_refused(tmp_path):
    open_lite(tmp_path, dim=8).close()
    with pytest.raises(StoreMismatch, match="holds 8-d vectors, not 16-d"):
        open_lite(tmp_path, dim=16)


def test_a_lite_file_held_by_another_process_gives_a_clear_message(lite, tmp_path):
    code = (
        "from retrieval.stores.milvus import MilvusStore, StoreUnavailable\n"
        f"try:\n    MilvusStore({str(tmp_path / 'vectors.db')!r}, {DIM})\n"
        "except StoreUnavailable as exc:\n    print(exc)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "another process" in out.stdout and "Milvus Lite allows one at a time" in out.stdout, out.stderr[
        -1000:
    ]


def test_hnsw_index_finds_exact_neighbours(tmp_path):
    vectors = unit_vectors(300)
    store = open_lite(tmp_path, kind="hnsw")
    store.add(np.arange(300), vectors)
    assert store.search(vectors[42], 1).ids.tolist() == [42]
    store.close()


# --- filters pushed down, against the catalog ------------------------------------------------------

FOLDERS = [
    "/photos/Holidays",
    "/photos/holidays 2019",
    "/photos/b_c",
    "/photos/bxc",
    "/other/Work",
    '/x/it\'s "q"',
]
DATES = ["2019-07-14 10:00:00", "2019-12-31 23:59:59", "2020-01-01 00:00:00", "2018-05-05 08:00:00", None]
CAMERAS = ["Canon EOS 5D", "iPhone 12", "NIKON D750", None]
FILTERS = [
    Filter(date_from="2019"),
    Filter(date_to="2019"),
    Filter(date_from="2019-07", date_to="2019-12"),
    Filter(date_to="2019-07-14"),
    Filter(folder="holidays"),
    Filter(folder="/photos/Holidays/"),
    Filter(folder="b_c"),
    Filter(folder="photos"),
    Filter(folder='it\'s "q"'),
    Filter(camera="canon"),
    Filter(camera="PHONE"),
    Filter(camera="nikon", date_from="2019"),
    Filter(folder="holidays", camera="iphone", date_to="2020"),
]


@pytest.fixture
def catalogued(tmp_path):
    """300 files spread over folders, dates and cameras (some unknown), in a real catalog."""
    catalog = Catalog(tmp_path / "catalog.sqlite")
    rows = [
        FileRow(
            path=f"{FOLDERS[i % len(FOLDERS)]}/img{i}.jpg",
            size=1,
            mtime_ns=1,
            hash=f"h{i}",
            status="ok",
            date=DATES[(i // 2) % len(DATES)],
            camera=CAMERAS[(i // 5) % len(CAMERAS)],
        )
        for i in range(300)
    ]
    with catalog.transaction():
        ids = np.array(catalog.put_files(rows), np.int64)
    yield catalog, ids, unit_vectors(len(ids), seed=3)
    catalog.close()


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_filters_pushed_down_equal_faiss_with_catalog_ids(tmp_path, catalogued, metric):
    catalog, ids, vectors = catalogued
    milvus, faiss_store = open_lite(tmp_path, metric=metric), FaissStore(None, DIM, metric, "flat")
    milvus.add(ids, vectors, catalog.meta_for(ids))
    faiss_store.add(ids, vectors, catalog.meta_for(ids))
    query = unit_vectors(1, seed=9)[0]
    for flt in FILTERS:
        allowed = catalog.ids_matching(flt)
        assert 0 < len(allowed) < len(ids), flt  # every filter in the table selects something, not all
        want = faiss_store.search(query, 400, allowed=allowed)
        got = milvus.search(query, 400, where=flt)
        assert got.ids.tolist() == want.ids.tolist(), flt
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)
    milvus.close()


def test_allowed_ids_and_filter_combine(lite, catalogued):
    catalog, ids, vectors = catalogued
    lite.add(ids, vectors, catalog.meta_for(ids))
    flt = Filter(date_from="2019")
    allowed = ids[:60]
    got = lite.search(vectors[0], 300, allowed=allowed, where=flt)
    assert set(got.ids.tolist()) == set(allowed.tolist()) & set(catalog.ids_matching(flt).tolist())
    assert lite.search(vectors[0], 10, allowed=np.array([], np.int64)).ids.size == 0


def test_filter_expression_text():
    assert filter_expression(None) == ""
    assert filter_expression(Filter(), np.array([], np.int64)) is None
    assert (
        filter_expression(Filter(camera='Ca"n_'), np.array([1, 2]))
        == 'id in [1,2] and camera like "%ca\\"n\\\\_%"'
    )


def test_connect_args():
    assert connect_args("milvus://alice:pw@db.example:19531") == {
        "uri": "http://db.example:19531",
        "token": "alice:pw",
    }
    assert connect_args("http://db.example") == {"uri": "http://db.example:19530"}
    with pytest.raises(ValueError, match="expected milvus://HOST:PORT"):
        connect_args("milvus://")


def test_each_index_folder_gets_a_valid_collection_name(tmp_path):
    assert (
        collection_for("/home/u/.local/share/imgchat/indexes/Pictures-1a2b3c4d")
        == "imgchat_Pictures_1a2b3c4d"
    )
    store = open_lite(tmp_path, collection=collection_for("/x/my photos-2019.é"))
    assert store.collection == "imgchat_my_photos_2019__" and len(store) == 0
    store.close()


def test_an_unreachable_server_gives_a_clear_message():
    with pytest.raises(StoreUnavailable, match=r"cannot reach Milvus at http://127\.0\.0\.1:1"):
        STORES["milvus"]("milvus://127.0.0.1:1", DIM)


# --- crash safety ---------------------------------------------------------------------------------

WRITER = """
import sys, numpy as np
from retrieval.stores.milvus import MilvusStore
store = MilvusStore(sys.argv[1], 16, "ip")
vectors = np.random.default_rng(0).standard_normal((4000, 16)).astype(np.float32)
for start in range(0, 4000, 100):
    store.add(np.arange(start, start + 100), vectors[start : start + 100])
    print(start + 100, flush=True)
"""


def test_kill_during_adds_then_rerun_loses_nothing_and_duplicates_nothing(tmp_path):
    target = f"milvus-lite:{tmp_path / 'vectors.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, target], stdout=subprocess.PIPE, text=True, env=env
    )
    acknowledged = 0
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= 1000:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert acknowledged >= 1000, "the writer died before the kill"
    vectors = np.random.default_rng(0).standard_normal((4000, 16)).astype(np.float32)
    store = MilvusStore(target, 16, "ip")
    ids = store.ids()
    assert len(ids) == len(np.unique(ids)) == len(store)
    assert set(range(acknowledged)) <= set(ids.tolist()) <= set(range(4000))  # acknowledged writes survive
    np.testing.assert_allclose(store.get(ids), vectors[ids], atol=1e-6)
    store.add(np.arange(4000), vectors)  # the rerun re-adds everything, as the catalog sync does
    assert store.ids().tolist() == list(range(4000)) and len(store) == 4000
    np.testing.assert_allclose(store.get(np.array([0, 3999])), vectors[[0, 3999]], atol=1e-6)
    store.close()


# --- real dataset vectors -------------------------------------------------------------------------


@pytest.mark.shared
def test_fake_embedder_vectors_of_the_dataset_match_faiss(tmp_path, dataset):
    from PIL import Image

    from retrieval.embedders import get_embedder

    records = [json.loads(line) for line in (dataset / "captions.jsonl").read_text().splitlines()][:80]
    embedder = get_embedder("fake", dim=64)
    images = [Image.open(dataset / r["file"]).convert("RGB") for r in records]
    vectors = embedder.embed_images(images).vectors
    ids = np.arange(1, len(records) + 1, dtype=np.int64)
    meta = [{"folder": f"/photos/{r['source']}", "date": "", "camera": ""} for r in records]
    milvus, faiss_store = open_lite(tmp_path, dim=64), FaissStore(None, 64, "ip", "flat")
    milvus.add(ids, vectors, meta)
    faiss_store.add(ids, vectors, meta)
    for text in ("green", "blue sky", "red"):
        q = embedder.embed_texts([text])[0]
        assert milvus.search(q, 15).ids.tolist() == faiss_store.search(q, 15).ids.tolist()
    farm = milvus.search(embedder.embed_texts(["green"])[0], 80, where=Filter(folder="explore_farm_animals"))
    sources = {records[i - 1]["source"] for i in farm.ids}
    assert sources == {"explore_farm_animals"}
    milvus.close()


# --- through the library --------------------------------------------------------------------------


def test_library_on_milvus_lite_answers_like_faiss(tmp_path, photo_folder):
    from retrieval.library import Library, LibraryConfig
    from retrieval.query import Query

    queries = [
        Query(positive=[("red", 1.0)], k=4),
        Query(positive=[("blue", 1.0)], filter=Filter(folder="holidays"), k=8),
        Query(positive=[("green", 1.0)], negative=[("yellow", 1.0)], filter=Filter(folder="home"), k=3),
    ]
    answers = {}
    for store in ("faiss", f"milvus-lite:{tmp_path / 'milvus.db'}"):
        config = LibraryConfig(embedder="fake", store=store, show_progress=False)
        lib = Library.open(tmp_path / store.split(":")[0], config)
        assert lib.index(photo_folder).added == 8
        lib.close()
        lib = Library.open(
            tmp_path / store.split(":")[0], config
        )  # reopen: searches read the persisted store
        answers[store.split(":")[0]] = [[(r.path, round(r.score, 4)) for r in lib.search(q)] for q in queries]
        lib.close()
    assert answers["milvus-lite"] == answers["faiss"]
    red, holidays, home = answers["faiss"]
    assert Path(red[0][0]).name.startswith("red-")
    assert len(holidays) == 4 and all("/holidays/" in path for path, _ in holidays)
    assert all("/home/" in path for path, _ in home) and Path(home[0][0]).name.startswith("green-")
