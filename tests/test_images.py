"""Every kind of bad or odd file a photo folder holds, decoded for real by Pillow."""

import io

import numpy as np
import pytest
from PIL import Image

from retrieval.images import ImageError, decode, load_image, read_bytes
from tests.conftest import make_image


def _bytes(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        read_bytes(tmp_path / "empty.jpg")


def test_text_file_named_jpg(tmp_path):
    with pytest.raises(ImageError, match="not an image"):
        decode(b"hello, this is not a picture\n" * 10)


def test_truncated_jpeg():
    data = _bytes(Image.new("RGB", (400, 300), (200, 10, 10)), "JPEG", quality=95)
    with pytest.raises(ImageError, match="truncated|corrupt"):
        decode(data[: len(data) // 2], draft_size=None)


def test_corrupt_png_body():
    noise = np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)
    data = bytearray(_bytes(Image.fromarray(noise), "PNG"))
    middle = len(data) // 2
    data[middle : middle + 200] = b"\xff" * 200
    with pytest.raises(ImageError):
        decode(bytes(data))


def test_decompression_bomb_limit_names_the_flag():
    data = _bytes(Image.new("L", (2000, 1000)), "PNG")
    with pytest.raises(ImageError, match=r"too large.*2 MP.*--max-megapixels"):
        decode(data, max_megapixels=1)
    assert decode(data, max_megapixels=3).image.size == (2000, 1000)


def test_cmyk_jpeg_becomes_rgb():
    data = _bytes(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG")
    image = decode(data).image
    assert image.mode == "RGB"
    r, g, b = np.asarray(image).reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60  # pure red in CMYK


def test_16bit_png_is_scaled_not_clipped():
    array = np.full((16, 16), 32768, dtype=np.uint16)
    data = _bytes(Image.fromarray(array), "PNG")
    image = decode(data).image
    assert image.mode == "RGB"
    assert 120 <= np.asarray(image).mean() <= 135


def test_palette_with_transparency_is_flattened_on_white():
    image = Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    data = _bytes(image, "PNG", transparency=0)
    assert np.asarray(decode(data).image).min() == 255


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (20, 20), c) for c in [(250, 0, 0), (0, 0, 250)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    r, g, b = np.asarray(decode(buf.getvalue()).image).reshape(-1, 3).mean(0)
    assert r > 200 and b < 50


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (60, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 30, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS 5D"
    exif.get_ifd(0x8769)[0x9003] = "2019:07:14 10:30:00"
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    decoded = decode(path.read_bytes())
    assert decoded.image.size == (20, 60)
    assert (decoded.width, decoded.height) == (20, 60)
    top = np.asarray(decoded.image)[:10].mean()
    assert top > 200  # the white left half is on top once rotated clockwise
    assert decoded.date == "2019-07-14 10:30:00"
    assert decoded.camera == "Canon EOS 5D"


def test_load_image_reads_a_real_file(tmp_path):
    path = make_image(tmp_path / "a.png", (10, 200, 10))
    assert load_image(path).mode == "RGB"
