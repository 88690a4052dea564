"""Multi-process embedding: N real processes (spawned, joined by torch.distributed over gloo through
accelerate) must give the vectors one process gives, in input order, with per-file failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.embedders import get_embedder
from retrieval.images import load_image
from retrieval.shard import Embedded, ShardError, embed_files, iter_embed

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def photos(tmp_path) -> list[str]:
    """21 real JPEG/PNG files of varied colours and noise, one corrupt file and one missing path."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(21):
        base = rng.integers(0, 256, 3)
        pixels = np.clip(base + rng.normal(0, 40, (48 + i, 64, 3)), 0, 255).astype(np.uint8)
        path = tmp_path / f"img{i:02d}.{'png' if i % 5 == 0 else 'jpg'}"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    paths.insert(7, str(tmp_path / "broken.jpg"))
    paths.insert(15, str(tmp_path / "gone.jpg"))
    return paths


def explode(path: str) -> Image.Image:
    """A loader with a bug (not an ImageError): the run must fail loudly, not hang or skip."""
    raise RuntimeError(f"loader bug on {Path(path).name}")


def test_in_process_vectors_follow_input_order_and_failures_are_per_path(photos):
    seen = []
    result = embed_files(
        photos, "fake", 1, batch_size=4, progress=lambda done, total: seen.append((done, total))
    )
    assert result.vectors.shape == (23, 32) and result.ok.sum() == 21
    assert [Path(p).name for p, _ in result.failed] == ["broken.jpg", "gone.jpg"]
    assert "image header" in result.failed[0][1] and "No such file" in result.failed[1][1]
    assert not result.ok[7] and not result.ok[15] and not result.vectors[[7, 15]].any()
    good = [p for i, p in enumerate(photos) if i not in (7, 15)]
    expected = get_embedder("fake").embed_images([load_image(p) for p in good]).vectors
    np.testing.assert_allclose(result.vectors[result.ok], expected, atol=1e-6)
    assert result.tags[0] and result.tags[7] == []
    assert seen[-1] == (23, 23) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_loaded_embedder_is_reused_in_process_but_not_sent_to_other_processes(photos):
    embedder = get_embedder("fake")
    by_spec = embed_files(photos, "fake", 1, progress=False)
    np.testing.assert_array_equal(embed_files(photos, embedder, 1, progress=False).vectors, by_spec.vectors)
    with pytest.raises(TypeError, match="needs an embedder spec"):
        embed_files(photos, embedder, 2, progress=False)


def test_chunks_arrive_in_order_and_concatenate_to_the_whole(photos):
    chunks = list(iter_embed(photos, "fake", 1, batch_size=3, chunk=10, progress=False))
    assert [start for start, _ in chunks] == [0, 10, 20]
    whole = embed_files(photos, "fake", 1, progress=False)
    joined = Embedded.concat([part for _, part in chunks], 32)
    np.testing.assert_array_equal(joined.vectors, whole.vectors)
    assert joined.failed == whole.failed


def test_two_processes_give_the_vectors_of_one(photos):
    one = embed_files(photos, "fake", 1, progress=False)
    seen = []
    two = embed_files(photos, "fake", 2, batch_size=3, progress=lambda done, total: seen.append(done))
    np.testing.assert_array_equal(two.vectors, one.vectors)
    np.testing.assert_array_equal(two.ok, one.ok)
    assert two.failed == one.failed and two.tags == one.tags
    assert seen[-1] == len(photos) and seen == sorted(seen)


@pytest.mark.slow
def test_more_processes_than_files_and_several_chunks(photos):
    one = embed_files(photos[:5], "fake", 1, progress=False)
    chunks = list(iter_embed(photos[:5], "fake", 3, chunk=2, progress=False))
    assert [start for start, _ in chunks] == [0, 2, 4]
    np.testing.assert_array_equal(Embedded.concat([c for _, c in chunks], 32).vectors, one.vectors)


@pytest.mark.slow
def test_a_failing_process_raises_instead_of_hanging(photos):
    with pytest.raises(ShardError, match="RuntimeError: loader bug on img"):
        embed_files(photos, "fake", 2, load=explode, progress=False)


LAUNCHED = """
import json, os, sys
from retrieval.shard import embed_files, finish
result = embed_files(json.loads(sys.argv[1]), "fake", progress=False)
out = os.path.join(sys.argv[2], "rank%s.json" % os.environ["RANK"])  # one file each: stdout lines interleave
with open(out, "w") as f:
    json.dump([result.vectors.round(5).tolist(), result.failed], f)
finish()
"""


@pytest.mark.slow
def test_under_a_launcher_every_process_gets_the_whole_result(photos, tmp_path):
    """`torchrun` stands in for `accelerate launch`: both start N processes with RANK/WORLD_SIZE set."""
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)
    # CPU processes (gloo) even where a GPU is visible: two NCCL ranks cannot share one GPU.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.Popen(
        [*command, str(script), json.dumps(photos), str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:  # a hang: end the launcher and the workers it started, then fail below
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
    results = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rank*.json"))]
    assert len(results) == 2, stderr[-2000:]
    one = embed_files(photos, "fake", 1, progress=False)
    for vectors, failed in results:
        np.testing.assert_allclose(np.array(vectors), one.vectors, atol=1e-5)
        assert [tuple(f) for f in failed] == one.failed


@pytest.mark.slow
@pytest.mark.shared
def test_bundled_embedder_two_processes_match_one_on_dataset_images(dataset):
    pytest.importorskip("retrieval.embedders.bundled")
    paths = [str(p) for p in sorted((dataset / "images").glob("*.jpg"))[::12][:20]]
    one = embed_files(paths, "bundled", 1, progress=False)
    two = embed_files(paths, "bundled", 2, progress=False)
    assert one.ok.all() and two.ok.all()
    # Batches differ between the runs, so float sums may differ in the last bits.
    np.testing.assert_allclose(two.vectors, one.vectors, atol=1e-5)
    assert [[label for label, _ in t] for t in two.tags] == [[label for label, _ in t] for t in one.tags]
