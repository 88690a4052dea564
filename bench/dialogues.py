"""Chat-refinement quality and turn latency on the gcompris-photos dialogues, per LLM backend.

    python bench/dialogues.py --backends rules,smollm2,gemma3              # --mode translate (default)
    python bench/dialogues.py --backends smollm2 --mode merge --ids dev-22,dev-23
    python bench/dialogues.py --backends gemma3 --rewrite-only   # LLM phase only, cached in --rewrites

For each backend the conversation is replayed through `Session.turn` (rewrite → apply → search) and
the final turn's top 10 is scored against the dialogue's target: Hits@10 (any target shown) and
Recall@10 (targets shown / min(targets, 10)). Two baselines search without any conversation state:
the last user message alone, and all user messages concatenated. Simulated feedback: after the
final turn the user gives thumbs up to the targets and down to the others among the 10 shown, once
and twice; the table shows Hits@10 and Recall@10 after each round.

The LLM phase does not depend on the search (prompts see only the concepts), so rewrites are cached
in `--rewrites` (JSON) per backend: a slow model runs once, the search phase replays its updates.
Latency of a turn is split into rewrite (measured when the rewrite ran), embed and search (the
library's search minus the embedder's calls), p50/p95 over all turns.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant import conversation  # noqa: E402
from assistant.conversation import QueryState  # noqa: E402
from assistant.rewrite import MODES, Rewrite, RewriteConfig, make_rewriter  # noqa: E402
from assistant.schema import QueryUpdate  # noqa: E402
from assistant.session import Session  # noqa: E402
from retrieval.library import Library, LibraryConfig  # noqa: E402
from retrieval.query import Query  # noqa: E402

SHARED = Path(os.environ.get("IMGCHAT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATASET = SHARED / "datasets" / "gcompris-photos"
OUT = Path(__file__).resolve().parent / "out"
TOP = 10


# ---- dialogues ----------------------------------------------------------------------------------


def load_dialogues(path: Path, limit: int | None, ids: str | None = None) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if ids:
        rows = [r for r in rows if r["id"] in ids.split(",")]
    return rows[:limit] if limit else rows


def turn_parts(turn) -> tuple[str, str | None, str | None]:
    """(text, uploaded image id, picked result id) of one dialogue turn."""
    if isinstance(turn, str):
        return turn, None, None
    return turn.get("text", ""), turn.get("image"), turn.get("more_like")


# ---- phase 1: rewrites (no search needed) --------------------------------------------------------


def rewrite_dialogues(backend: str, mode: str, dialogues: list[dict]) -> list[list[dict]]:
    """Every turn's update, source and rewrite seconds; states advance with `apply` as in a session."""
    rewriter = make_rewriter(RewriteConfig(llm=backend, mode=mode, timeout_s=600))
    out = []
    for dialogue in dialogues:
        state, turns = QueryState(), []
        for turn in dialogue["turns"]:
            text = turn_parts(turn)[0]
            t = time.perf_counter()
            rewrite = rewriter.rewrite(state, text) if text.strip() else Rewrite(QueryUpdate(), "none")
            seconds = time.perf_counter() - t
            state = conversation.apply(state, rewrite.update)
            turns.append(
                {
                    "update": rewrite.update.model_dump(),
                    "source": rewrite.source,
                    "reason": rewrite.reason,
                    "raw": rewrite.raw,
                    "seconds": seconds,
                }
            )
        out.append(turns)
        print(f"  {backend} {dialogue['id']}: {[t['source'] for t in turns]}", file=sys.stderr)
    return out


def cached_rewrites(cache: Path, key: str, make) -> list[list[dict]]:
    """LLM rewrites are slow: keep them by backend/mode/dialogues (delete the file after changing prompts)."""
    if key.startswith("rules/"):
        return make()
    data = json.loads(cache.read_text()) if cache.exists() else {}
    if key not in data:
        data[key] = make()
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(data, ensure_ascii=False, indent=1))
    return data[key]


# ---- phase 2: search --------------------------------------------------------------------------


class Timer:
    """Wraps the embedder's calls on one library so that a search splits into embed and the rest."""

    def __init__(self, library: Library):
        self.embed = 0.0
        embedder = library.embedder
        for name in ("embed_texts", "embed_images"):
            setattr(embedder, name, self._timed(getattr(embedder, name)))

    def _timed(self, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.embed += time.perf_counter() - t

        return wrapper


class Evaluator:
    def __init__(self, library: Library, images: Path):
        self.library, self.images, self.timer = library, images, Timer(library)
        self.latency: dict[str, list[tuple[float, float, float]]] = {}

    def file_id(self, image_id: str) -> int:
        return self.library.id_for_path(self.images / f"{image_id}.jpg")

    def image(self, image_id: str) -> Image.Image:
        with Image.open(self.images / f"{image_id}.jpg") as im:
            return im.convert("RGB")

    def names(self, results) -> list[str]:
        return [Path(r.path).stem for r in results[:TOP]]

    def search(self, query: Query) -> list[str]:
        return self.names(self.library.search(query))

    def chat(self, name: str, dialogue: dict, rewrites: list[dict]) -> tuple[list[list[str]], list[str]]:
        """Replay a dialogue; return the top-10 names after the final turn and after two feedback rounds."""
        current: dict = {}
        session = Session(self.library, propose=lambda state, text: QueryUpdate(**current["update"]))
        state, shown = QueryState(), []
        for turn, recorded in zip(dialogue["turns"], rewrites, strict=True):
            text, image, picked = turn_parts(turn)
            current.update(recorded)
            before, t = self.timer.embed, time.perf_counter()
            result = session.turn(
                state,
                text,
                image=self.image(image) if image else None,
                more_like=self.file_id(picked) if picked else None,
            )
            total, embed = time.perf_counter() - t, self.timer.embed - before
            self.latency.setdefault(name, []).append((recorded["seconds"], embed, total - embed))
            state, shown = result.state, result.results
        rounds, target = [self.names(shown)], set(dialogue["target"])
        for _ in range(2):
            up = [r.id for r in shown[:TOP] if Path(r.path).stem in target]
            down = [r.id for r in shown[:TOP] if Path(r.path).stem not in target]
            result = session.turn(state, "", up=up, down=down)
            state, shown = result.state, result.results
            rounds.append(self.names(shown))
        return rounds, [Path(r.path).stem for r in shown]

    def baselines(self, dialogue: dict) -> dict[str, list[str]]:
        texts = [turn_parts(t)[0] for t in dialogue["turns"]]
        images = [turn_parts(t)[1] for t in dialogue["turns"] if turn_parts(t)[1]]
        picked = [turn_parts(t)[2] for t in dialogue["turns"] if turn_parts(t)[2]]
        last_text, last_image, last_pick = turn_parts(dialogue["turns"][-1])
        last = Query(
            positive=[(last_text, 1.0)] if last_text else [],
            k=12,
            images=[self.image(last_image)] if last_image else [],
            like_ids=[self.file_id(last_pick)] if last_pick else [],
        )
        joined = Query(
            positive=[(" ".join(t for t in texts if t), 1.0)],
            k=12,
            images=[self.image(i) for i in images],
            like_ids=[self.file_id(p) for p in picked],
        )
        return {"last message": self.search(last), "all messages": self.search(joined)}


def scores(names: list[str], target: list[str]) -> tuple[float, float]:
    found = len(set(names[:TOP]) & set(target))
    return float(found > 0), found / min(len(target), TOP)


# ---- tables -------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def quality_table(per_system: dict[str, list[list[tuple[float, float]]]]) -> str:
    """per_system[name][dialogue] = [(hits, recall) final, after 1 round, after 2 rounds] (baselines: 1)."""
    base = np.mean([d[0][0] for d in per_system["last message"]])
    rows = []
    for name, dialogues in per_system.items():
        cols = [name]
        for r in range(3):
            if r < len(dialogues[0]):
                hits, recall = np.mean([d[r][0] for d in dialogues]), np.mean([d[r][1] for d in dialogues])
                cols += [f"{hits:.2f}", f"{recall:.2f}"]
            else:
                cols += ["", ""]
        cols.append(f"{np.mean([d[0][0] for d in dialogues]) / max(base, 1e-9):.2f}x")
        rows.append(cols)
    header = [
        "system",
        "Hits@10",
        "Recall@10",
        "Hits +1 fb",
        "Recall +1 fb",
        "Hits +2 fb",
        "Recall +2 fb",
        "Hits vs last msg",
    ]
    return table(header, rows)


def latency_table(latency: dict[str, list[tuple[float, float, float]]]) -> str:
    rows, base = [], None
    for name, samples in latency.items():
        ms = np.array(samples) * 1000
        total = ms.sum(1)
        base = base or float(np.median(total))
        cells = [f"{np.percentile(ms[:, i], 50):.1f} / {np.percentile(ms[:, i], 95):.1f}" for i in range(3)]
        rows.append(
            [
                name,
                *cells,
                f"{np.median(total):.0f} / {np.percentile(total, 95):.0f}",
                f"{np.median(total) / base:.1f}x",
            ]
        )
    return table(
        ["backend", "rewrite ms p50/p95", "embed ms", "search ms", "turn ms", "turn p50 vs first"], rows
    )


def source_table(rewrites: dict[str, list[list[dict]]]) -> str:
    rows = []
    for name, dialogues in rewrites.items():
        counts = Counter(t["source"] for d in dialogues for t in d)
        rows.append([name, ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))])
    return table(["backend", "path taken per turn"], rows)


# ---- main ---------------------------------------------------------------------------------------


def open_library(args) -> Library:
    index = args.index or OUT / f"dialogues-index-{args.embedder.replace(':', '_').replace('/', '_')}"
    library = Library.open(index, LibraryConfig(embedder=args.embedder, show_progress=False))
    report = library.index(args.images)
    print(f"index {index}: {len(library)} images ({report.added} added now)", file=sys.stderr)
    return library


def evaluate(args, dialogues, rewrites) -> None:
    library = open_library(args)
    ev = Evaluator(library, args.images)
    per_system: dict[str, list] = {"last message": [], "all messages": []}
    for i, dialogue in enumerate(dialogues):
        for name, names in ev.baselines(dialogue).items():
            per_system[name].append([scores(names, dialogue["target"])])
        for backend, runs in rewrites.items():
            rounds, _ = ev.chat(backend, dialogue, runs[i])
            per_system.setdefault(backend, []).append([scores(r, dialogue["target"]) for r in rounds])
    print(
        f"\nQuality on {len(dialogues)} dialogues (final turn; fb = simulated thumbs rounds), "
        f"embedder {args.embedder}:\n"
    )
    print(quality_table(per_system))
    print("\nLatency of a chat turn (rewrite measured where the rewrite ran):\n")
    print(latency_table(ev.latency))
    library.close()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--backends", default="rules", help="comma-separated LLM specs (rules, smollm2, gemma3, ...)"
    )
    p.add_argument("--mode", default="translate", choices=list(MODES))
    p.add_argument("--dialogues", type=Path, default=DATASET / "dialogues.jsonl")
    p.add_argument("--images", type=Path, default=DATASET / "images")
    p.add_argument("--embedder", default="bundled")
    p.add_argument("--index", type=Path, help="index folder (default: bench/out/, reused between runs)")
    p.add_argument("--rewrites", type=Path, default=OUT / "dialogue-rewrites.json", help="rewrite cache")
    p.add_argument("--limit", type=int, help="only the first N dialogues")
    p.add_argument("--ids", help="only these dialogue ids, comma-separated")
    p.add_argument("--rewrite-only", action="store_true", help="run the LLM phase and stop")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if not args.dialogues.exists():
        raise SystemExit(f"no dialogues at {args.dialogues}: set IMGCHAT_SHARED or --dialogues")
    dialogues = load_dialogues(args.dialogues, args.limit, args.ids)
    rewrites = {}
    for backend in args.backends.split(","):
        key = f"{backend}/{args.mode}/" + ",".join(d["id"] for d in dialogues)
        rewrites[backend] = cached_rewrites(
            args.rewrites, key, lambda b=backend: rewrite_dialogues(b, args.mode, dialogues)
        )
    print("\n" + source_table(rewrites))
    if not args.rewrite_only:
        evaluate(args, dialogues, rewrites)


if __name__ == "__main__":
    main()
