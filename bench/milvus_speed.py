"""Milvus Lite against the FAISS store on the same vectors, same process: add, search, filtered search, get.

    python bench/milvus_speed.py --n 20000

Random unit vectors of the bundled embedder's dimension (384) with date/folder/camera fields; the
FAISS store gets the filter as allowed ids (what the catalog computes), Milvus as a pushed-down expression.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from retrieval.query import Filter
from retrieval.stores.faiss_store import FaissStore
from retrieval.stores.milvus import MilvusStore


def per_query_ms(fn, queries) -> float:
    start = time.perf_counter()
    for q in queries:
        fn(q)
    return (time.perf_counter() - start) / len(queries) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    n, dim = args.n, args.dim
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(n, dtype=np.int64)
    meta = [
        {
            "date": f"20{10 + i % 15}-0{1 + i % 9}-01 00:00:00",
            "folder": f"/photos/f{i % 50}",
            "camera": "Canon",
        }
        for i in range(n)
    ]
    queries = vectors[rng.integers(0, n, 50)]
    where = Filter(date_from="2015", date_to="2019", folder="f7")
    allowed = np.array([i for i in range(n) if 2015 <= 2010 + i % 15 <= 2019 and i % 50 == 7])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        milvus = MilvusStore(f"{tmp}/m.db", dim)
        milvus.add(ids, vectors, meta)
        milvus.save()
        add_milvus = time.perf_counter() - start
        start = time.perf_counter()
        faiss = FaissStore(None, dim)
        faiss.add(ids, vectors, meta)
        add_faiss = time.perf_counter() - start
        rows = [
            ("add all (total)", add_faiss * 1000, add_milvus * 1000),
            (
                "search k=12",
                per_query_ms(lambda q: faiss.search(q, 12), queries),
                per_query_ms(lambda q: milvus.search(q, 12), queries),
            ),
            (
                "search k=12, date+folder filter",
                per_query_ms(lambda q: faiss.search(q, 12, allowed=allowed), queries),
                per_query_ms(lambda q: milvus.search(q, 12, where=where), queries),
            ),
            (
                "get 200 vectors",
                per_query_ms(lambda q: faiss.get(ids[:200]), queries),
                per_query_ms(lambda q: milvus.get(ids[:200]), queries),
            ),
        ]
        milvus.close()
    print(f"{n:,} vectors, {dim}-d\n\n| operation | faiss ms | milvus-lite ms | ratio |\n|---|---|---|---|")
    for name, a, b in rows:
        print(f"| {name} | {a:.2f} | {b:.2f} | {b / a:.1f}x |")


if __name__ == "__main__":
    main()
