"""CLIP / SigLIP embedders, loaded through the real transformers path from tiny random checkpoints.

No hub here: each test builds a tiny model, a word-level tokenizer and a PIL image processor, saves
them with `save_pretrained(tmp_path)` and loads them with `get_embedder("clip:" + folder)`, exactly
as a user's downloaded folder would load. Reference vectors come from the full model and
transformers' own PIL processor, so our separate towers and our preprocessing are checked against it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

os.environ.setdefault("HF_HUB_OFFLINE", "1")

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, models, pre_tokenizers, processors  # noqa: E402
from transformers import (  # noqa: E402
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
)

from retrieval.embedders import get_embedder  # noqa: E402
from retrieval.embedders.clip import ImagePrep, ModelUnavailable  # noqa: E402

WORDS = "a photo of cat dog red car beach mountain at night snow tree".split()
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def save_clip(folder) -> CLIPModel:
    torch.manual_seed(0)
    text = dict(TOWER, vocab_size=len(SPECIALS) + len(WORDS), max_position_embeddings=16)
    text.update(bos_token_id=2, eos_token_id=3, pad_token_id=0)
    vision = dict(TOWER, image_size=32, patch_size=8)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)).eval()
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    return model


def save_siglip(folder) -> SiglipModel:
    torch.manual_seed(0)
    text = dict(TOWER, vocab_size=len(SPECIALS) + len(WORDS), max_position_embeddings=12)
    text.update(pad_token_id=0, eos_token_id=3)
    vision = dict(TOWER, image_size=32, patch_size=8)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).eval()
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    return folder, save_clip(folder)


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("siglip")
    return folder, save_siglip(folder)


def photo(width=61, height=47, seed=0) -> Image.Image:
    """A real RGB Pillow image, not square, so resize and crop matter."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    ImageDraw.Draw(image).ellipse((5, 5, width // 2, height // 2), fill=(200, 30, 30))
    return image


def reference_image_vectors(model, processor_cls, folder, images) -> np.ndarray:
    processor = processor_cls.from_pretrained(folder)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        out = model.get_image_features(pixel_values=pixels)
    out = out.pooler_output if hasattr(out, "pooler_output") else out
    return torch.nn.functional.normalize(out, dim=-1).numpy()


def test_clip_loads_from_folder_with_dim_from_config_only(clip_dir):
    folder, _ = clip_dir
    embedder = get_embedder(f"clip:{folder}", device="cpu")
    assert embedder.name == "clip"
    assert embedder.id == f"clip:{folder.resolve()}"
    assert embedder.dim == 24
    assert embedder.loaded_towers() == set()


def test_text_only_search_never_loads_the_vision_tower(clip_dir, monkeypatch):
    folder, _ = clip_dir

    def refuse(*args, **kwargs):
        raise AssertionError("the vision tower was loaded for a text query")

    monkeypatch.setattr(transformers.CLIPVisionModelWithProjection, "from_pretrained", refuse)
    embedder = get_embedder(f"clip:{folder}", device="cpu")
    vectors = embedder.embed_texts(["a photo of a cat", "red car at night"])
    assert vectors.shape == (2, 24) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert embedder.loaded_towers() == {"text"}


def test_clip_image_vectors_equal_the_full_models_features(clip_dir):
    folder, model = clip_dir
    images = [photo(seed=1), photo(80, 30, seed=2), photo(20, 20, seed=3).convert("L")]
    embedder = get_embedder(f"clip:{folder}", device="cpu")
    got = embedder.embed_images([embedder.preprocess(im) for im in images]).vectors
    want = reference_image_vectors(model, CLIPImageProcessorPil, folder, [im.convert("RGB") for im in images])
    assert got.shape == (3, 24) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert embedder.loaded_towers() == {"vision"}


def test_clip_text_vectors_equal_the_full_models_features(clip_dir):
    folder, model = clip_dir
    texts = ["a photo of a cat", "dog", "snow mountain at night beach tree"]
    tokens = tiny_tokenizer()(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    want = torch.nn.functional.normalize(out.pooler_output, dim=-1).numpy()
    got = get_embedder(f"clip:{folder}", device="cpu").embed_texts(texts)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_batches_give_the_same_vectors_as_one_by_one(clip_dir):
    folder, _ = clip_dir
    embedder = get_embedder(f"clip:{folder}", device="cpu", batch_size=2)
    images = [photo(40 + i, 50, seed=i) for i in range(5)]
    batched = embedder.embed_images(images).vectors  # unprepared images are prepared on the way
    single = np.concatenate([embedder.embed_images([im]).vectors for im in images])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    texts = ["cat", "a red car", "beach at night"]
    one_by_one = np.concatenate([embedder.embed_texts([t]) for t in texts])
    np.testing.assert_allclose(embedder.embed_texts(texts), one_by_one, atol=1e-5)


def test_siglip_matches_the_full_model_with_max_length_padding(siglip_dir):
    folder, model = siglip_dir
    embedder = get_embedder(f"siglip:{folder}", device="cpu")
    assert embedder.dim == 32
    images = [photo(seed=4), photo(33, 70, seed=5)]
    got = embedder.embed_images([embedder.preprocess(im) for im in images]).vectors
    want = reference_image_vectors(model, SiglipImageProcessorPil, folder, images)
    np.testing.assert_allclose(got, want, atol=1e-5)

    texts = ["a photo of a dog", "tree"]
    tokens = tiny_tokenizer()(texts, padding="max_length", max_length=12, return_tensors="pt")
    with torch.inference_mode():
        out = model.get_text_features(input_ids=tokens["input_ids"])
    want_text = torch.nn.functional.normalize(out.pooler_output, dim=-1).numpy()
    np.testing.assert_allclose(embedder.embed_texts(texts), want_text, atol=1e-5)
    # padding to max_length is what SigLIP needs: the same text alone gives the same vector
    np.testing.assert_allclose(embedder.embed_texts(["tree"])[0], want_text[1], atol=1e-5)


def test_a_siglip_folder_named_as_clip_is_refused_with_the_right_prefix(siglip_dir):
    folder, _ = siglip_dir
    with pytest.raises(ModelUnavailable, match="is a 'siglip' model.*use 'siglip:"):
        get_embedder(f"clip:{folder}", device="cpu").embed_texts(["cat"])


def test_hub_id_not_cached_offline_gives_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    embedder = get_embedder("clip:someone/not-cached-clip", device="cpu")
    with pytest.raises(ModelUnavailable) as error:
        embedder.embed_texts(["cat"])
    message = str(error.value)
    assert message.startswith("cannot load the config of 'someone/not-cached-clip' offline:")
    assert "download it once with network" in message and "\n" not in message


def test_missing_local_folder_is_refused():
    with pytest.raises(ModelUnavailable, match="no model folder at './nowhere/clip'"):
        get_embedder("clip:./nowhere/clip")


@pytest.mark.parametrize(
    ("config", "size", "want"),
    [
        (
            {"size": {"shortest_edge": 32}, "do_center_crop": True, "crop_size": {"height": 32, "width": 32}},
            (64, 48),
            (32, 32),
        ),
        ({"size": {"shortest_edge": 32}, "do_center_crop": False}, (64, 48), (42, 32)),
        ({"size": {"height": 20, "width": 30}}, (64, 48), (30, 20)),
        ({"size": 16, "do_center_crop": True, "crop_size": 24}, (10, 40), (24, 24)),
    ],
)
def test_image_prep_sizes(config, size, want):
    prepared = ImagePrep.from_config(config).apply(Image.new("L", size, 128))
    assert prepared.size == want and prepared.mode == "RGB"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (bench/gpu.sh runs it there)")
def test_cuda_fp16_vectors_match_cpu_fp32(clip_dir):
    folder, _ = clip_dir
    cpu = get_embedder(f"clip:{folder}", device="cpu")
    gpu = get_embedder(f"clip:{folder}")
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float16
    assert gpu.id == cpu.id  # one vector space whatever the device
    images = [photo(50 + i, 40, seed=i) for i in range(5)]
    on_gpu = gpu.embed_images(images).vectors
    assert on_gpu.dtype == np.float32 and np.allclose(np.linalg.norm(on_gpu, axis=1), 1, atol=1e-4)
    assert (cpu.embed_images(images).vectors * on_gpu).sum(1).min() > 0.99
    texts = ["a photo of a cat", "red car at night"]
    assert (cpu.embed_texts(texts) * gpu.embed_texts(texts)).sum(1).min() > 0.99
