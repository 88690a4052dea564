"""Embed many image files in several processes, sharded with accelerate, results back in input order.

Two ways in, one worker loop (`embed_shard`):
- `iter_embed(paths, spec, processes=N)` / `embed_files(...)` start N local processes themselves (CPU
  cores, or one GPU each when there are enough), joined by torch.distributed over a file rendezvous,
  so concurrent runs on one machine never fight over a port.
- under `accelerate launch` (several GPUs or machines) every launched process calls the same functions;
  they see the launcher's state, shard the list the same way and all get the whole result.

Each process decodes its share with a pluggable loader (`retrieval.images.load_image` by default); a
file that cannot be read becomes a per-path failure, never an exception. Files go through in chunks
so that a caller can commit each chunk (a kill then loses one chunk, not the run), and one progress
bar counts the files of all shards.
"""

from __future__ import annotations

import math
import os
import queue as queue_module
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from retrieval.embedders.base import Embedder, get_embedder
from retrieval.images import ImageError, load_image

Loader = Callable[[str], Image.Image]
Progress = Callable[[int, int], None]
CHUNK = 2048
# Threads per process that decode and resize files ahead of the model (Pillow releases the GIL).
DECODE_THREADS = 4


class ShardError(RuntimeError):
    """An embedding process failed (model error, killed, out of memory)."""


@dataclass
class Embedded:
    """Vectors for a list of files, in input order.

    `vectors[i]` belongs to `paths[i]`; rows of files that failed to load are zero and `ok[i]` is
    False, with the reason in `failed` as (path, reason). `tags[i]` is the embedder's labels, if any.
    """

    vectors: np.ndarray
    ok: np.ndarray
    tags: list[list[tuple[str, float]]]
    failed: list[tuple[str, str]]

    @classmethod
    def empty(cls, dim: int) -> Embedded:
        return cls(np.zeros((0, dim), np.float32), np.zeros(0, bool), [], [])

    @classmethod
    def concat(cls, parts: Sequence[Embedded], dim: int) -> Embedded:
        if not parts:
            return cls.empty(dim)
        return cls(
            np.concatenate([p.vectors for p in parts]),
            np.concatenate([p.ok for p in parts]),
            [t for p in parts for t in p.tags],
            [f for p in parts for f in p.failed],
        )


def embed_files(
    paths: Sequence[str | Path],
    embedder: str | Embedder,
    processes: int = 1,
    *,
    load: Loader = load_image,
    batch_size: int | None = None,
    progress: bool | Progress = True,
) -> Embedded:
    """Embed image files with `processes` local processes (or under `accelerate launch`); input order kept.

    `embedder`: a spec (`bundled`, `clip:...`), or a loaded Embedder to reuse in this process (only
    with processes=1: other processes load their own from a spec). `load` must be a module-level
    function (it is sent to spawned processes). `progress`: True for a tqdm bar, or a callable
    `(done, total)`. Under `accelerate launch` every process must make the same call and every
    process gets the whole result. Scripts that use processes > 1 need an `if __name__ == "__main__":`
    guard (processes are spawned, which re-imports the main module).
    """
    parts = list(iter_embed(paths, embedder, processes, load=load, batch_size=batch_size, progress=progress))
    return Embedded.concat([part for _, part in parts], parts[0][1].vectors.shape[1] if parts else 0)


def iter_embed(
    paths: Sequence[str | Path],
    embedder: str | Embedder,
    processes: int = 1,
    *,
    load: Loader = load_image,
    batch_size: int | None = None,
    progress: bool | Progress = True,
    chunk: int = CHUNK,
) -> Iterator[tuple[int, Embedded]]:
    """Yield (start, Embedded) for consecutive chunks of `paths`, so each can be committed as it lands."""
    paths = [str(p) for p in paths]
    report = _progress(progress if _is_main() else False, len(paths))
    if not paths:
        return
    if processes <= 1 or launched():
        yield from _chunks_in_this_process(paths, embedder, load, batch_size, chunk, report)
        return
    if not isinstance(embedder, str):
        raise TypeError("processes > 1 needs an embedder spec such as 'bundled', not a loaded Embedder")
    yield from _launch_local(paths, embedder, processes, load, batch_size, chunk, report)


def finish() -> None:
    """End the launcher's process group before exit: left to interpreter shutdown, gloo's threads
    abort the process ("terminate called without an active exception") after the work is done."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def launched() -> bool:
    """True inside `accelerate launch` / torchrun with several processes: they are already running."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _use_cpu() -> bool:
    """`accelerate launch --cpu`, or no GPU: PartialState then groups the processes over gloo."""
    import torch

    return (
        os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
        or not torch.cuda.is_available()
    )


def embed_shard(
    paths: list[str],
    embedder: Embedder,
    load: Loader = load_image,
    batch_size: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Embedded:
    """This process's share of `paths` under the current accelerate state, gathered from all processes.

    Every process must call it with the same `paths`. Processes step through their shares in lockstep,
    one batch at a time, summing the files done so that the main process can report the total.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    batch = batch_size or embedder.batch_size
    with (
        state.split_between_processes(list(range(len(paths)))) as mine,
        ThreadPoolExecutor(DECODE_THREADS) as pool,
    ):
        steps = math.ceil(math.ceil(len(paths) / state.num_processes) / batch)  # the same on every process
        rows, done = [], 0
        for step in range(steps):
            indices = mine[step * batch : (step + 1) * batch]
            rows += _embed_batch(indices, paths, embedder, load, pool)
            done += _sum_over_processes(len(indices), state)
            if on_progress and state.is_main_process:
                on_progress(done)
    return _assemble(gather_object(rows), paths, embedder.dim)


def _embed_batch(indices: list[int], paths: list[str], embedder, load: Loader, pool) -> list[tuple]:
    """Rows (index, vector | None, tags, reason) for one batch; unreadable files give a reason."""
    images, kept, rows = [], [], []
    decoded = pool.map(lambda i: _decode(paths[i], embedder, load), indices)
    for i, (image, reason) in zip(indices, decoded, strict=True):
        if image is None:
            rows.append((i, None, [], reason))
        else:
            images.append(image)
            kept.append(i)
    if images:
        out = embedder.embed_images(images)
        tags = out.tags or [[] for _ in kept]
        rows += [(i, out.vectors[n], tags[n], None) for n, i in enumerate(kept)]
    return rows


def _decode(path: str, embedder, load: Loader) -> tuple[Image.Image | None, str | None]:
    try:
        return embedder.preprocess(load(path)), None
    except ImageError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"cannot read file: {exc.strerror or exc}"


def _assemble(rows: list[tuple], paths: list[str], dim: int) -> Embedded:
    n = len(paths)
    vectors, ok, tags, reasons = np.zeros((n, dim), np.float32), np.zeros(n, bool), [[] for _ in range(n)], {}
    for i, vector, labels, reason in rows:
        if reason is None:
            vectors[i], ok[i], tags[i] = vector, True, [tuple(t) for t in labels]
        else:
            reasons[i] = reason
    return Embedded(vectors, ok, tags, [(paths[i], reasons[i]) for i in sorted(reasons)])


def _sum_over_processes(value: int, state) -> int:
    if state.num_processes == 1:
        return value
    import torch
    from accelerate.utils import reduce

    return int(reduce(torch.tensor([value], device=state.device), reduction="sum").item())


def _chunks_in_this_process(
    paths, embedder, load, batch_size, chunk, report
) -> Iterator[tuple[int, Embedded]]:
    from accelerate import PartialState

    PartialState(cpu=_use_cpu())  # joins the launcher's process group, if any
    embedder = get_embedder(embedder) if isinstance(embedder, str) else embedder
    for start in range(0, len(paths), chunk):
        part = paths[start : start + chunk]
        yield start, embed_shard(part, embedder, load, batch_size, lambda done, s=start: report(s + done))
    report(None)


# --- local launcher --------------------------------------------------------------------------------


def _launch_local(paths, spec, processes, load, batch_size, chunk, report) -> Iterator[tuple[int, Embedded]]:
    """Spawn `processes` workers joined over a file rendezvous; relay their chunks and progress."""
    import torch.multiprocessing as mp

    messages = mp.get_context("spawn").Queue()
    with tempfile.TemporaryDirectory(prefix="imgchat-shard-") as rendezvous:
        args = (processes, f"file://{rendezvous}/init", paths, spec, load, batch_size, chunk, messages)
        workers = mp.start_processes(
            _worker, args=args, nprocs=processes, join=False, daemon=True, start_method="spawn"
        )
        try:
            yield from _relay(workers, messages, report, len(paths))
            _join(workers)
        finally:
            for process in workers.processes:
                if process.is_alive():
                    process.terminate()


def _relay(workers, messages, report, total: int) -> Iterator[tuple[int, Embedded]]:
    received, exited = 0, False
    while received < total:
        try:
            kind, start, value = messages.get(timeout=0.5)
        except queue_module.Empty:
            if exited:  # checked once more after the exit: the last message may still have been in the pipe
                raise ShardError("embedding processes exited before sending every result") from None
            exited = _join(workers, timeout=0)
            continue
        if kind == "progress":
            report(start + value)
        else:
            received += len(value.ok)
            yield start, value
    report(None)


def _join(workers, timeout: float | None = None) -> bool:
    from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

    try:
        return workers.join(timeout)
    except (ProcessRaisedException, ProcessExitedException) as exc:
        raise ShardError(f"an embedding process failed: {str(exc).strip().splitlines()[-1]}") from exc


def _worker(rank, world, init_method, paths, spec, load, batch_size, chunk, messages) -> None:
    """One spawned process: join the group, embed every chunk's share; rank 0 sends results home."""
    import torch
    from accelerate import PartialState

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // world)
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world)
    )
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # also keeps accelerate from warning about it
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    cpu = torch.cuda.device_count() < world
    state = PartialState(cpu=cpu, init_method=init_method, rank=rank, world_size=world)
    embedder = get_embedder(spec)
    for start in range(0, len(paths), chunk):
        part = paths[start : start + chunk]
        result = embed_shard(
            part, embedder, load, batch_size, lambda done, s=start: messages.put(("progress", s, done))
        )
        if state.is_main_process:
            messages.put(("chunk", start, result))
    torch.distributed.destroy_process_group()


def _progress(progress: bool | Progress, total: int) -> Callable[[int | None], None]:
    """A reporter taking the total done so far (None when finished): tqdm, a callback, or nothing."""
    if callable(progress):
        return lambda done: progress(total if done is None else done, total)
    if not progress or not total:
        return lambda done: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="img", desc="embedding")

    def update(done: int | None) -> None:
        if done is None:
            bar.close()
        else:
            bar.update(done - bar.n)

    return update
