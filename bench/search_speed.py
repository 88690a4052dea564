"""Search latency of the FAISS store (exact flat and HNSW) against numpy brute force, same process.

    python bench/search_speed.py --sizes 10000,100000,1000000

Vectors are synthetic but shaped like image embeddings: a mixture of clusters in 384-d (the bundled
embedder's dimension), L2-normalised. Queries are held-out points of the same mixture. Recall@10 is
measured against exact search. Prints a markdown table; memory per vector is the index's own.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from retrieval.stores import faiss_store
from retrieval.stores.faiss_store import FaissStore


def synthetic(n: int, dim: int, seed: int = 0, clusters: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        out[start : start + m] = centres[rng.integers(0, clusters, m)] + 0.6 * rng.standard_normal((m, dim))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def timed(fn, queries) -> tuple[np.ndarray, list]:
    times, answers = [], []
    for q in queries:
        t = time.perf_counter()
        answers.append(fn(q))
        times.append((time.perf_counter() - t) * 1000)
    return np.array(times), answers


def run(n: int, dim: int, nq: int, k: int, ef: int) -> list[dict]:
    data = synthetic(n + nq, dim, seed=n)
    base, queries = data[:n], data[n:]
    ids = np.arange(n, dtype=np.int64)

    def brute(q):
        scores = base @ q
        top = np.argpartition(-scores, k)[:k]
        return top[np.argsort(-scores[top])]

    rows = []
    t_np, truth = timed(brute, queries)
    rows.append(_row(n, "numpy brute force", t_np, t_np, 1.0, 0.0, base.nbytes / n))
    for kind in ("flat", "hnsw"):
        faiss_store.HNSW_EF_SEARCH = ef
        t0 = time.perf_counter()
        store = FaissStore(None, dim, kind=kind)
        store.add(ids, base)
        build = time.perf_counter() - t0
        t, got = timed(lambda q, s=store: s.search(q, k).ids, queries)
        recall = np.mean(
            [len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(got, truth, strict=True)]
        )
        memory = _index_bytes(store) / n
        rows.append(
            _row(
                n,
                f"faiss {kind}" + (f" (M={faiss_store.HNSW_M}, ef={ef})" if kind == "hnsw" else ""),
                t,
                t_np,
                recall,
                build,
                memory,
            )
        )
    return rows


def _index_bytes(store: FaissStore) -> int:
    import faiss

    return faiss.serialize_index(store.index).nbytes


def _row(n, method, t, baseline, recall, build, per_vector):
    return {
        "vectors": n,
        "method": method,
        "p50_ms": float(np.percentile(t, 50)),
        "p95_ms": float(np.percentile(t, 95)),
        "speedup_vs_numpy": float(np.percentile(baseline, 50) / np.percentile(t, 50)),
        "recall@10": float(recall),
        "build_s": build,
        "bytes_per_vector": per_vector,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef", type=int, default=faiss_store.HNSW_EF_SEARCH)
    args = parser.parse_args()
    print(
        "| vectors | method | p50 ms | p95 ms | p50 speed-up vs numpy | recall@10 | build s | bytes/vector |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        for r in run(n, args.dim, args.queries, 10, args.ef):
            print(
                f"| {r['vectors']:,} | {r['method']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
                f"{r['speedup_vs_numpy']:.1f}x | {r['recall@10']:.3f} | {r['build_s']:.1f} | {r['bytes_per_vector']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
