"""Incremental, crash-safe indexing of a photo folder.

walk → diff with the catalog (path, size, mtime) → decode in a thread pool, ahead of the model →
embed in batches → commit each batch (files + vectors) in one SQLite transaction → add to the store.
A kill at any moment loses at most the batch in flight; the next run skips what was committed.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from retrieval.catalog import Catalog, FileRow
from retrieval.embedders.base import Embedder
from retrieval.images import (
    DEFAULT_MAX_MEGAPIXELS,
    IMAGE_EXTENSIONS,
    ImageError,
    content_hash,
    decode,
    read_bytes,
)
from retrieval.stores.base import VectorStore

SAVE_EVERY_S = 30.0


@dataclass
class IndexOptions:
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    workers: int = max(2, min(8, (os.cpu_count() or 2)))
    batch_size: int | None = None  # default: the embedder's
    show_progress: bool = True
    #: called with (path, reason) for each file skipped in this run, as it happens
    on_skip: Callable[[str, str], None] | None = None
    #: >1: embed with that many processes through accelerate (`retrieval.shard`), from `embedder_spec`
    processes: int = 1
    embedder_spec: str = ""
    #: held while the catalog and store change, so searches from other threads see whole batches
    lock: threading.RLock = field(default_factory=threading.RLock)


@dataclass
class IndexReport:
    added: int = 0
    reused: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{self.added} embedded, {self.reused} reused by content, {self.unchanged} unchanged, "
            f"{self.removed} removed, {len(self.failed)} skipped ({self.seconds:.1f} s)"
        )


@dataclass
class _Loaded:
    path: str
    size: int
    mtime_ns: int
    hash: str | None = None
    image: object = None  # preprocessed PIL image, None when the vector is reused or on error
    row: FileRow | None = None
    error: str | None = None


Progress = Callable[[int, int], None]


def scan(folder: Path, errors: list[str] | None = None) -> Iterator[tuple[str, os.stat_result]]:
    """Image files under `folder`, sorted; symlinks that lead outside it are ignored (never served).

    Folders that cannot be listed go to `errors`, so their catalogued files are not taken for deleted.
    """
    root = folder.resolve()
    on_error = (lambda exc: errors.append(exc.filename)) if errors is not None else None
    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS or name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                continue
            try:
                yield str(path), path.stat()
            except OSError:
                continue


def index_folder(
    folder: str | Path,
    catalog: Catalog,
    store: VectorStore,
    embedder: Embedder,
    options: IndexOptions | None = None,
    progress: Progress | None = None,
) -> IndexReport:
    options = options or IndexOptions()
    started = time.monotonic()
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    writer = _rank() == 0  # under `accelerate launch` the other ranks only embed
    if writer:
        catalog.add_root(str(root))
    known = catalog.files_under(str(root))
    report = IndexReport()
    todo: list[tuple[str, int, int]] = []
    seen = set()
    walk_errors: list[str] = []
    for path, st in scan(root, walk_errors):
        seen.add(path)
        old = known.get(path)
        if old and old[0] == st.st_size and old[1] == st.st_mtime_ns and old[2] == "ok":
            report.unchanged += 1
        else:
            todo.append((path, st.st_size, st.st_mtime_ns))
    unreadable = tuple(d.rstrip(os.sep) + os.sep for d in walk_errors)
    gone = [p for p in known if p not in seen and not p.startswith(unreadable)]
    if gone and writer:
        with options.lock, catalog.transaction():
            ids = catalog.delete_paths(gone)
            store.remove(np.array(ids, np.int64))
        report.removed = len(gone)
    if options.processes > 1 or _launched():
        _embed_sharded(todo, catalog, store, options, progress, report)
    else:
        _embed_all(todo, catalog, store, embedder, options, progress, report)
    if not writer:
        return report
    with options.lock:
        with catalog.transaction():
            catalog.drop_orphan_vectors()
        store.save()
        catalog.mark_synced()
    report.failed = [(p, e) for p, e in catalog.failures() if p.startswith(str(root) + os.sep)]
    report.seconds = time.monotonic() - started
    return report


def _embed_all(todo, catalog, store, embedder, options, progress, report) -> None:
    known_hashes = {h for (h,) in catalog.db.execute("SELECT hash FROM vectors")}
    batch_size = options.batch_size or embedder.batch_size
    bar = tqdm(total=len(todo), unit="img", desc="indexing", disable=not options.show_progress or not todo)
    done, last_save = 0, time.monotonic()
    pending: list[_Loaded] = []

    def flush() -> None:
        nonlocal done, last_save
        _commit(pending, catalog, store, embedder, report, options)
        done += len(pending)
        bar.update(len(pending))
        if progress:
            progress(done, len(todo))
        pending.clear()
        if time.monotonic() - last_save > SAVE_EVERY_S:
            with options.lock:
                store.save()
                catalog.mark_synced()
            last_save = time.monotonic()

    def load(item) -> _Loaded:
        return _load(item, embedder, known_hashes, options.max_megapixels)

    with ThreadPoolExecutor(options.workers) as pool:
        window: deque[Future] = deque()
        items = iter(todo)
        for item in items:
            window.append(pool.submit(load, item))
            if len(window) >= batch_size * 3:
                break
        while window:
            pending.append(window.popleft().result())
            nxt = next(items, None)
            if nxt is not None:
                window.append(pool.submit(load, nxt))
            if len(pending) >= batch_size:
                flush()
        if pending:
            flush()
    bar.close()


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _launched() -> bool:
    """Running under `accelerate launch` / torchrun: every process shares the embedding."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _embed_sharded(todo, catalog, store, options: IndexOptions, progress, report) -> None:
    """Embed with several processes; this (main) process reads each file's metadata and commits
    each chunk as it lands. Under `accelerate launch` the other ranks only embed."""
    from retrieval.images import load_image
    from retrieval.shard import iter_embed

    is_main = _rank() == 0
    chunks = iter_embed(
        [p for p, _, _ in todo],
        options.embedder_spec,
        options.processes,
        load=partial(load_image, max_megapixels=options.max_megapixels),
        progress=progress or options.show_progress,
    )
    for start, part in chunks:
        if not is_main:
            continue
        reasons = dict(part.failed)
        batch, keep = [], []
        for n, (path, size, mtime_ns) in enumerate(todo[start : start + len(part.ok)]):
            item = _describe((path, size, mtime_ns), options.max_megapixels)
            if item.error is None and not part.ok[n]:
                item.error = reasons.get(path, "could not be embedded")
                item.row = FileRow(path, size, mtime_ns, None, "failed", error=item.error)
            elif item.error is None:
                keep.append(n)
            batch.append(item)
        first: dict[str, int] = {}
        for n in keep:
            first.setdefault(batch[n].hash, n)
        rows = list(first.values())
        _write(
            batch,
            [batch[n].hash for n in rows],
            part.vectors[rows],
            [part.tags[n] for n in rows],
            catalog,
            store,
            report,
            options,
        )


def _describe(item, max_megapixels: float) -> _Loaded:
    """Hash and metadata of a file whose vector comes from elsewhere (a cheap reduced decode)."""
    return _load(item, None, None, max_megapixels)


def _load(item, embedder: Embedder | None, known_hashes: set | None, max_megapixels: float) -> _Loaded:
    path, size, mtime_ns = item
    out = _Loaded(path, size, mtime_ns)
    try:
        data = read_bytes(path)
        out.hash = content_hash(data)
        reuse = embedder is None or out.hash in known_hashes
        decoded = decode(data, max_megapixels, draft_size=64 if reuse else None)
        if not reuse:
            out.image = embedder.preprocess(decoded.image)
        date = decoded.date or datetime.fromtimestamp(mtime_ns / 1e9).isoformat(sep=" ", timespec="seconds")
        out.row = FileRow(
            path, size, mtime_ns, out.hash, "ok", decoded.width, decoded.height, date, decoded.camera
        )
    except (ImageError, OSError) as exc:
        out.error = str(exc) if isinstance(exc, ImageError) else f"cannot read file: {exc.strerror or exc}"
        out.row = FileRow(path, size, mtime_ns, None, "failed", error=out.error)
    return out


def _commit(
    batch: list[_Loaded],
    catalog: Catalog,
    store: VectorStore,
    embedder: Embedder,
    report,
    options: IndexOptions,
) -> None:
    """Embed the new images of a batch, then write files and vectors in one transaction, then the store.

    The model runs outside the lock, so searches from other threads wait only for the writes.
    """
    hashes, vectors, tags = _embed([x for x in batch if x.image is not None], embedder)
    _write(batch, hashes, vectors, tags, catalog, store, report, options)


def _write(
    batch: list[_Loaded], hashes, vectors, tags, catalog: Catalog, store: VectorStore, report, options
) -> None:
    """Files and vectors in one transaction, then the store, then the report."""
    with options.lock:
        with catalog.transaction():
            if hashes:
                catalog.put_vectors(hashes, vectors, tags)
            ids = catalog.put_files([x.row for x in batch])
        ok_ids = np.array([i for i, x in zip(ids, batch, strict=True) if x.row.status == "ok"], np.int64)
        if len(ok_ids):
            store.add(ok_ids, catalog.vectors_for(ok_ids, store.dim), catalog.meta_for(ok_ids))
        failed = np.array([i for i, x in zip(ids, batch, strict=True) if x.row.status != "ok"], np.int64)
        if len(failed):  # a file that was fine and is now broken leaves the index
            store.remove(failed)
    embedded = set(hashes)
    for x in batch:
        if x.row.status == "failed":
            if options.on_skip:
                options.on_skip(x.path, x.error)
        elif x.hash in embedded:
            report.added += 1
        else:
            report.reused += 1


def _embed(fresh: list[_Loaded], embedder: Embedder) -> tuple[list[str], np.ndarray, list]:
    """Vectors for a batch, one per distinct content; if the model fails on the batch, retry image by
    image and mark only the images it rejects as failed."""
    if not fresh:
        return [], np.zeros((0, embedder.dim), np.float32), []
    try:
        out = embedder.embed_images([x.image for x in fresh])
        good, vectors, tags = fresh, out.vectors, out.tags or [[] for _ in fresh]
    except Exception:
        good, rows, tags = [], [], []
        for x in fresh:
            try:
                one = embedder.embed_images([x.image])
            except Exception as exc:
                x.error = f"the model failed on this image: {type(exc).__name__}: {exc}"
                x.row = FileRow(x.path, x.size, x.mtime_ns, None, "failed", error=x.error)
                continue
            good.append(x)
            rows.append(one.vectors[0])
            tags.append(one.tags[0] if one.tags else [])
        vectors = np.array(rows, np.float32).reshape(len(rows), embedder.dim)
    first: dict[str, int] = {}
    for n, x in enumerate(good):
        first.setdefault(x.hash, n)
    keep = list(first.values())
    return [good[n].hash for n in keep], vectors[keep], [tags[n] for n in keep]
