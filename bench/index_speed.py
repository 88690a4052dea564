"""Indexing throughput against the model-only forward pass at the same batch size, same process.

    python bench/index_speed.py --embedder bundled [--images DIR] [--repeat 2]

`model only` embeds images that are already decoded and preprocessed in memory: the ceiling.
`indexer` runs the real pipeline on the files: read, hash, decode (Image.draft), preprocess in a
thread pool, embed, commit to SQLite, add to FAISS. The ratio says how much the loader costs.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from retrieval.embedders.base import get_embedder
from retrieval.images import load_image
from retrieval.indexer import scan
from retrieval.library import Library, LibraryConfig

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "gcompris-photos" / "images"


def model_only(embedder, paths: list[str], batch: int) -> float:
    images = [embedder.preprocess(load_image(p)) for p in paths]
    embedder.embed_images(images[:batch])  # warm-up: lazy load, first-call allocations
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        embedder.embed_images(images[i : i + batch])
    return len(images) / (time.perf_counter() - start)


def indexer(embedder, folder: Path, workers: int | None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        library = Library.open(Path(tmp) / "index", LibraryConfig(show_progress=False), embedder=embedder)
        start = time.perf_counter()
        report = library.index(folder, workers=workers)
        seconds = time.perf_counter() - start
        library.close()
    return report.added / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", default="bundled")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--repeat", type=int, default=1, help="copy the folder N times for a longer run")
    parser.add_argument("--workers", type=int)
    args = parser.parse_args()
    embedder = get_embedder(args.embedder)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        for n in range(args.repeat):
            shutil.copytree(args.images, folder / f"copy{n}")
        paths = [p for p, _ in scan(folder)][: 252 * args.repeat]
        embedder.embed_texts(["warm-up"])
        ceiling = model_only(embedder, paths, embedder.batch_size)
        pipeline = indexer(embedder, folder, args.workers)
    print("| embedder | images | batch | model only img/s | indexer img/s | ratio |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {embedder.id} | {len(paths)} | {embedder.batch_size} | {ceiling:.1f} | {pipeline:.1f} | {pipeline / ceiling:.2f} |"
    )


if __name__ == "__main__":
    main()
