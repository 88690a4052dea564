"""bench/gpu_bench.py: its tiny run works end to end, and its GPU search code finds what faiss finds.

No GPU here: the GPU search classes (torch) are run on CPU tensors and compared with real faiss-cpu
indexes built on the same vectors, centroids and lists, so the code the GPU runs is checked for
correctness; its speed is only measured on a GPU machine (bench/gpu.sh).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_bench.py"


@pytest.fixture(scope="module")
def gb():
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_bench"] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_bench"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "gpu.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text()), done.stdout


def test_tiny_run_has_a_cpu_row_per_size_index_and_batch(tiny_run):
    results, _ = tiny_run
    rows = {(r["n"], r["index"], r["backend"], r["batch"]): r for r in results["search"]}
    for n in (2000, 5000):
        nlist = 32 if n == 2000 else 64
        for index in ("Flat", f"IVF{nlist},nprobe=4"):
            for batch in (1, 32):
                row = rows[(n, index, "faiss-cpu", batch)]
                assert row["qps"] > 0 and row["latency_ms"] > 0
                assert row["speedup"] == 1.0
        assert rows[(n, "Flat", "faiss-cpu", 32)]["recall_at_10"] == 1.0
        assert 0.3 < rows[(n, f"IVF{nlist},nprobe=4", "faiss-cpu", 32)]["recall_at_10"] < 1.0


def test_tiny_run_says_gpu_na_without_cuda(tiny_run):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    results, stdout = tiny_run
    assert results["meta"]["gpu"] is None
    gpu_rows = [r for r in results["search"] + results["embed"] if r.get("backend", r.get("device")) == "gpu"]
    assert len(gpu_rows) == 2 * 2 * 2 + 2  # sizes x indexes x batches, and one per embedding model
    assert all(r["status"] == "n/a: no CUDA device" for r in gpu_rows)
    assert "GPU n/a (no CUDA device)" in stdout and "| n | index | backend |" in stdout


def test_tiny_run_measures_both_image_networks_on_cpu(tiny_run):
    results, _ = tiny_run
    cpu = {(r["model"], r["batch"]): r for r in results["embed"] if r["device"] == "cpu"}
    assert set(cpu) == {(m, b) for m in ("efficientnet-lite0", "clip-vit-b32 (2 layers)") for b in (1, 2)}
    assert all(r["images_s"] > 0 and r["dtype"] == "fp32" for r in cpu.values())


@pytest.fixture(scope="module")
def collection(gb):
    plan = gb.PLANS["tiny"]
    return gb.Collection.make(3000, plan, torch.device("cpu")), plan


def test_torch_flat_finds_what_faiss_flat_finds(gb, collection):
    data, plan = collection
    want = gb.faiss_flat(data.xb).search(data.xq, plan.k)[1]
    got = gb.TorchFlat(data.xb_t, torch.float32).search(data.xq, plan.k)
    assert got.shape == want.shape == (plan.queries, plan.k)
    assert gb.recall_at(got, want) == 1.0


@pytest.mark.parametrize("nprobe", [1, 4, 16])
def test_torch_ivf_finds_what_faiss_ivf_finds(gb, collection, nprobe):
    data, plan = collection
    faiss_ivf = gb.FaissSearcher(data.faiss_ivf())
    faiss_ivf.set_nprobe(nprobe)
    torch_ivf = gb.TorchIVF(data.xb_t, data.centroids, data.labels)
    torch_ivf.set_nprobe(nprobe)
    want = faiss_ivf.search(data.xq, plan.k)
    got = torch_ivf.search(data.xq, plan.k)
    assert gb.recall_at(got, want) == 1.0


def test_one_probe_is_approximate_so_the_ivf_comparison_means_something(gb, collection):
    data, plan = collection
    ivf = gb.TorchIVF(data.xb_t, data.centroids, data.labels)
    ivf.set_nprobe(1)
    exact = gb.faiss_flat(data.xb).search(data.xq, plan.k)[1]
    assert gb.recall_at(ivf.search(data.xq, plan.k), exact) < 0.9


def test_gpu_rows_path_runs_on_a_stand_in_device(gb):
    """The rows a GPU run writes, produced with the CPU standing in for the GPU."""
    plan = gb.PLANS["tiny"]
    env = gb.Env(torch.device("cpu"), faiss_gpu=False)
    rows = gb.bench_size(2000, plan, env)
    by = {(r["index"], r["backend"], r["dtype"], r["batch"]): r for r in rows}
    assert by[("Flat", "torch-gpu", "fp32", 32)]["recall_at_10"] == 1.0
    assert by[("Flat", "torch-gpu", "fp16", 32)]["recall_at_10"] > 0.9
    ivf = "IVF32,nprobe=4"
    assert (
        by[(ivf, "torch-gpu", "fp32", 32)]["recall_at_10"]
        == by[(ivf, "faiss-cpu", "fp32", 32)]["recall_at_10"]
    )
    assert {r["batch"] for r in rows} == {1, 32}


def test_markdown_table_marks_na_rows(gb):
    table = gb.markdown([{"n": 10, "index": "Flat", "status": "n/a: no CUDA device"}], ["n", "index", "qps"])
    assert table.splitlines()[-1] == "| 10 | Flat | n/a: no CUDA device |"
    assert np.isclose(gb.recall_at(np.array([[1, 2]]), np.array([[2, 3]])), 0.5)
