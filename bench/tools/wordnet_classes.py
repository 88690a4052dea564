"""Build `retrieval/data/imagenet_classes.json` from OpenCV's ImageNet class list and WordNet 3.0.

Users have neither WordNet nor nltk, so the synonyms, glosses and broader terms the bundled
embedder needs are extracted once here and shipped. Run on a machine with Debian's `wordnet` and
`opencv-doc` packages:

    python bench/tools/wordnet_classes.py [--classes FILE] [--wordnet DIR] [--out FILE]

ImageNet ids are WordNet 3.0 noun offsets, each class line lists exactly the lemmas of its synset,
and the model's classes are in increasing id order. So a class is the synset with the same lemma set
and, where several share it ("hen", "crane"), the first one after the previous class's id.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLASSES = Path("/usr/share/doc/opencv-doc/examples/data/dnn/classification_classes_ILSVRC2012.txt")
WORDNET = Path("/usr/share/wordnet")
OUT = REPO / "retrieval" / "data" / "imagenet_classes.json"


@dataclass
class Synset:
    offset: str
    names: list[str]
    hypernyms: list[str]
    gloss: str


def parse_line(line: str) -> Synset:
    """One line of WordNet's data.noun: offset, lexfile, pos, lemmas (hex count), pointers, gloss."""
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    count = int(fields[3], 16)
    names = [fields[4 + 2 * i].replace("_", " ") for i in range(count)]
    rest = fields[4 + 2 * count :]
    pointers = [rest[1 + 4 * i : 5 + 4 * i] for i in range(int(rest[0]))]
    hypernyms = [p[1] for p in pointers if p[0] in ("@", "@i") and p[2] == "n"]
    return Synset(fields[0], names, hypernyms, gloss.strip())


def read_wordnet(folder: Path) -> dict[str, Synset]:
    lines = (folder / "data.noun").read_text(encoding="utf-8").splitlines()
    synsets = (parse_line(line) for line in lines if line and not line.startswith(" "))
    return {s.offset: s for s in synsets}


def _key(names: list[str]) -> frozenset[str]:
    return frozenset(n.strip().lower() for n in names)


def match_classes(class_lines: list[str], synsets: dict[str, Synset]) -> list[Synset]:
    """The synset of each class, found by its exact lemma set."""
    by_names: dict[frozenset[str], list[Synset]] = {}
    for synset in synsets.values():
        by_names.setdefault(_key(synset.names), []).append(synset)
    matched, previous = [], ""
    for line in class_lines:
        found = sorted(s.offset for s in by_names.get(_key(line.split(",")), []) if s.offset > previous)
        if not found:
            raise LookupError(f"class {line!r} matches no WordNet synset after {previous}")
        previous = found[0]
        matched.append(synsets[previous])
    return matched


def ancestors(synset: Synset, synsets: dict[str, Synset]) -> list[str]:
    """First lemma of every hypernym, nearest first (breadth-first over all hypernym paths)."""
    seen, order, frontier = set(), [], list(synset.hypernyms)
    while frontier:
        offset = frontier.pop(0)
        if offset in seen:
            continue
        seen.add(offset)
        order.append(synsets[offset].names[0])
        frontier.extend(synsets[offset].hypernyms)
    return order


def build(class_lines: list[str], synsets: dict[str, Synset]) -> dict:
    classes = [
        {
            "wnid": f"n{s.offset}",
            "names": [n.strip() for n in line.split(",")],
            "gloss": s.gloss,
            "ancestors": ancestors(s, synsets),
        }
        for line, s in zip(class_lines, match_classes(class_lines, synsets), strict=True)
    ]
    return {
        "about": "ImageNet-1k classes in model output order; names from OpenCV's "
        "classification_classes_ILSVRC2012.txt; gloss and ancestors from WordNet 3.0 "
        "(Princeton University, WordNet licence); built by bench/tools/wordnet_classes.py",
        "classes": classes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=Path, default=CLASSES)
    parser.add_argument("--wordnet", type=Path, default=WORDNET)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    lines = [line for line in args.classes.read_text(encoding="utf-8").splitlines() if line.strip()]
    data = build(lines, read_wordnet(args.wordnet))
    args.out.write_text(json.dumps(data, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {len(data['classes'])} classes to {args.out}")


if __name__ == "__main__":
    main()
