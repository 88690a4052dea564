"""Chat-turn latency of the web app over HTTP (gradio_client) with 1, 5 and 20 people at once, against
the same turns run in process (`Session.turn`, no server, one at a time).

    python bench/app_latency.py                      # fake embedder over 200 generated photos
    python bench/app_latency.py --embedder bundled --folder ../shared/datasets/gcompris-photos/images
    python bench/app_latency.py --sessions 1,5,20 --turns 8 --concurrency 1,4

Each simulated person opens a client (not timed), then sends `--turns` messages from a fixed script
(a search, refinements, a thumbs-down on the top result, a reset). Latency is measured at the client
from request to complete answer; thumbnails are made and cached on the server within that time, but
the client does not download them (a browser fetches them in parallel; see tests/test_browser.py
for the page-ready time). `--concurrency` is how many turns the server
runs at once (Gradio's concurrency limit; 1 is the app's default). Prints a markdown table whose
ratio column compares each p50 with the in-process p50.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gradio_client import Client  # noqa: E402

from assistant.app import AppConfig, LaunchOptions, build_app, launch  # noqa: E402
from assistant.conversation import QueryState  # noqa: E402
from assistant.session import Session  # noqa: E402
from retrieval.library import Library, LibraryConfig  # noqa: E402

SCRIPTS = {
    "fake": ["show me red", "but also yellow", "not the green ones", "actually blue instead", "start over"],
    "bundled": ["show me a lion", "but on a rock", "not the cubs", "actually a tower instead", "start over"],
}
COLOURS = [(220, 30, 30), (30, 180, 30), (30, 30, 220), (230, 220, 30), (10, 10, 10)]


def generated_folder(root: Path, n: int) -> Path:
    """`n` camera-sized JPEGs of five colours with noise, so thumbnails cost what real ones do."""
    rng = np.random.default_rng(0)
    folder = root / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        base = np.array(COLOURS[i % len(COLOURS)], np.int16)
        pixels = np.clip(base + rng.integers(-20, 20, (900, 1200, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"photo-{i:04d}.jpg", quality=85)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process(session: Session, script: list[str], turns: int) -> list[float]:
    times, state = [], QueryState()
    for i in range(turns):
        started = time.perf_counter()
        state = session.turn(state, script[i % len(script)]).state
        times.append(time.perf_counter() - started)
    return times


def converse(url: str, script: list[str], turns: int, out: list[float], errors: list[str]) -> None:
    client = Client(url, verbose=False, download_files=False)  # a browser fetches thumbnails in parallel
    rows: list = []
    for i in range(turns):
        started = time.perf_counter()
        try:
            if i % len(script) == 2 and rows:
                _, _, rows, *_ = client.predict(rows[0]["id"], api_name="/thumbs_down")
            else:
                _, _, rows, *_ = client.predict(
                    {"text": script[i % len(script)], "files": []}, api_name="/send"
                )
        except Exception as exc:  # counted and shown: a benchmark reports failures instead of stopping
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        out.append(time.perf_counter() - started)


def over_http(url: str, script: list[str], people: int, turns: int) -> tuple[list[float], list[str], float]:
    times: list[float] = []
    errors: list[str] = []
    threads = [
        threading.Thread(target=converse, args=(url, script, turns, times, errors)) for _ in range(people)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times, errors, time.perf_counter() - started


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedder", default="fake", choices=sorted(SCRIPTS))
    ap.add_argument("--folder", type=Path, help="photos to index (default: 200 generated ones)")
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--sessions", default="1,5,20")
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--concurrency", default="1")
    ap.add_argument("--k", type=int, default=12)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="imgchat-bench-"))
    os.environ.setdefault("GRADIO_TEMP_DIR", str(work / "gradio"))
    folder = args.folder or generated_folder(work, args.photos)
    library = Library.open(work / "index", LibraryConfig(embedder=args.embedder, show_progress=False))
    report = library.index(folder)
    session = Session(library, k=args.k)
    script = SCRIPTS[args.embedder]
    in_process(session, script, 2)  # warm-up: model load, first search
    base = in_process(session, script, max(args.turns, 10))
    base_p50 = statistics.median(base) * 1000
    print(
        f"{len(library)} photos ({report.added} indexed now), embedder {args.embedder}, k={args.k}, {args.turns} turns each"
    )
    print(
        "\n| where | server concurrency | people | turns | p50 ms | p95 ms | turns/s | ratio p50 | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| in process | - | 1 | {len(base)} | {base_p50:.1f} | {pct(base, 95):.1f} | "
        f"{len(base) / sum(base):.1f} | 1.0 | 0 |"
    )
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        config = AppConfig(cache_dir=work / "media", concurrency=concurrency)
        served = launch(build_app(session, library, config), LaunchOptions(port=free_port()), config)
        over_http(served.local_url, script, 1, 2)  # warm-up: thumbnails of the first answers
        for people in (int(p) for p in args.sessions.split(",")):
            times, errors, wall = over_http(served.local_url, script, people, args.turns)
            p50 = pct(times, 50)
            print(
                f"| HTTP | {concurrency} | {people} | {len(times)} | {p50:.1f} | {pct(times, 95):.1f} | "
                f"{len(times) / wall:.1f} | {p50 / base_p50:.1f} | {len(errors)} |"
            )
            for error in sorted(set(errors))[:3]:
                print(f"  error: {error[:200]}")
        served.close()
    library.close()


if __name__ == "__main__":
    main()
