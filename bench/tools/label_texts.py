"""Texts that stand for each ImageNet class, and `retrieval/data/imagenet_label_vectors.npy` built from them.

The bundled embedder places an image at the mean of its likely classes' text vectors, so what a
class's text says decides which queries find it. Variants compared in bench/quality.py:

- `line`: the class line as given ("tench, Tinca tinca")
- `synonyms`: the synonyms without Latin binomials ("tench")
- `broader`: synonyms plus three broader WordNet terms ("tench (cyprinid, fish, animal)")
- `gloss`: synonyms plus the WordNet definition ("tench: freshwater dace-like game fish of ...")
- `broader+gloss` (shipped): the normalised mean of the `broader` and `gloss` vectors

    python bench/tools/label_texts.py        # rewrites the .npy (float16) with all-MiniLM-L6-v2
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
CLASSES = REPO / "retrieval" / "data" / "imagenet_classes.json"
OUT = REPO / "retrieval" / "data" / "imagenet_label_vectors.npy"
SHIPPED = "broader+gloss"

#: WordNet ancestors too abstract or too technical to help a query ("whole", "placental", "teleost fish")
ABSTRACT = {
    "abstraction", "anapsid", "aquatic vertebrate", "arthropod", "article", "artifact", "attribute",
    "bony fish", "carnivore", "causal agent", "chordate", "commodity", "container", "conveyance",
    "covering", "craft", "creation", "device", "diapsid", "entity", "equipment", "even-toed ungulate",
    "food", "geological formation", "group", "implement", "instrumentality", "invertebrate", "living thing",
    "material", "matter", "measure", "natural object", "object", "odd-toed ungulate", "organism", "part",
    "person", "physical entity", "placental", "psychological feature", "relation", "soft-finned fish",
    "solid", "spiny-finned fish", "structure", "substance", "system", "teleost fish", "ungulate",
    "vertebrate", "whole",
}  # fmt: skip


def read_classes(path: Path = CLASSES) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["classes"]


def synonyms(entry: dict) -> list[str]:
    """Names without Latin binomials ("Tinca tinca"), which a photo search never uses."""
    names = entry["names"]
    return [names[0]] + [n for n in names[1:] if not re.fullmatch(r"[A-Z][a-z]+ [a-z]+", n)]


def broader(entry: dict, count: int = 3) -> list[str]:
    return [a for a in entry["ancestors"] if a not in ABSTRACT][:count]


TEXTS: dict[str, Callable[[dict], str]] = {
    "line": lambda e: ", ".join(e["names"]),
    "synonyms": lambda e: ", ".join(synonyms(e)),
    "broader": lambda e: f"{', '.join(synonyms(e))} ({', '.join(broader(e))})",
    "gloss": lambda e: f"{', '.join(synonyms(e))}: {e['gloss']}",
}
MIXES = {"broader+gloss": ("broader", "gloss")}
VARIANTS = [*TEXTS, *MIXES]


def label_vectors(
    classes: list[dict], encode: Callable[[list[str]], np.ndarray], variant: str = SHIPPED
) -> np.ndarray:
    """(n_classes, dim) unit vectors of one variant; `encode` maps texts to unit vectors."""
    parts = MIXES.get(variant, (variant,))
    total = sum(encode([TEXTS[part](e) for e in classes]) for part in parts)
    return total / np.linalg.norm(total, axis=1, keepdims=True)


def minilm_encoder() -> Callable[[list[str]], np.ndarray]:
    from retrieval.embedders.bundled import load_text_model

    model = load_text_model("cpu")
    return lambda texts: model.encode(texts, batch_size=128, convert_to_numpy=True, normalize_embeddings=True)


def main() -> None:
    vectors = label_vectors(read_classes(), minilm_encoder())
    np.save(OUT, vectors.astype(np.float16))
    print(f"wrote {vectors.shape} float16 label vectors ({SHIPPED}) to {OUT}")


if __name__ == "__main__":
    main()
