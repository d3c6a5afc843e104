"""Inputs as users give them (issue #27): phone photos with EXIF rotation, 4k renders, PNG with alpha,
greyscale, palette, CMYK, 16-bit, arrays and extreme aspect ratios all reach the processor as upright 8-bit
RGB at a size the Qwen2.5-VL rule allows (sides multiples of 28, area within [min_pixels, max_pixels])."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from preferthinker.prompting import ImageLoadError, load_image

BOUNDS = (4 * 28 * 28, 256 * 28 * 28)  # a small max so every test resizes


def assert_processor_ready(img: Image.Image, lo: int = BOUNDS[0], hi: int = BOUNDS[1]) -> None:
    assert img.mode == "RGB"
    w, h = img.size
    assert w % 28 == 0 and h % 28 == 0
    assert lo <= w * h <= hi


def test_exif_rotation_is_applied(tmp_path):
    """A phone stores a portrait photo as landscape pixels + Orientation=6 (rotate 90 deg clockwise to view):
    the red pixel stored in the top-left corner must end up in the top-right corner, the image portrait."""
    arr = np.zeros((300, 400, 3), np.uint8)  # stored landscape: 400 wide, 300 high
    arr[:60, :60] = (255, 0, 0)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW
    path = tmp_path / "phone.jpg"
    img.save(path, exif=exif, quality=95)

    out = load_image(path, *BOUNDS)
    assert_processor_ready(out)
    assert out.height > out.width  # upright: portrait
    px = np.asarray(out)
    top_right, top_left = px[4, -5], px[4, 4]
    assert top_right[0] > 200 and top_right[1] < 60  # the red corner moved to the top right
    assert top_left.max() < 60
    # the same orientation on an image handed over already opened (the Assessor's PIL path)
    with Image.open(path) as opened:
        assert load_image(opened, *BOUNDS).size == out.size


def test_4k_render_is_resized_within_max_pixels(tmp_path):
    path = tmp_path / "render.png"
    Image.new("RGB", (3840, 2160), (10, 120, 200)).save(path)
    out = load_image(path, *BOUNDS)
    assert_processor_ready(out)
    assert abs(out.width / out.height - 16 / 9) < 0.15  # aspect kept as closely as multiples of 28 allow
    # the released model's bounds too (Qwen2.5-VL default max 12.8M pixels: 4k fits, so only rounded to 28)
    big = load_image(path)
    assert_processor_ready(big, lo=4 * 784, hi=16384 * 784)
    assert abs(big.width - 3840) <= 14 and abs(big.height - 2160) <= 14


def test_png_with_alpha_is_composited_on_white(tmp_path):
    arr = np.zeros((112, 112, 4), np.uint8)
    arr[..., :3] = (0, 0, 0)  # hidden colour under transparency: black
    arr[:, 56:, 3] = 255  # right half opaque black, left half fully transparent
    path = tmp_path / "sticker.png"
    Image.fromarray(arr, "RGBA").save(path)
    out = np.asarray(load_image(path, *BOUNDS))
    assert out.shape[-1] == 3
    assert out[:, :20].min() > 240  # transparent -> white, not the hidden black
    assert out[:, -20:].max() < 15  # opaque stays black
    # greyscale with alpha (LA) and a palette image with a transparent index
    la = Image.fromarray(arr[..., [0, 3]], "LA")
    assert np.asarray(load_image(la, *BOUNDS))[:, :20].min() > 240
    pal = Image.new("P", (112, 112), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.info["transparency"] = 1  # index 1 (red) is transparent
    assert np.asarray(load_image(pal, *BOUNDS)).min() > 240


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "YCbCr"])
def test_greyscale_palette_and_print_modes_become_rgb(tmp_path, mode):
    img = Image.new("RGB", (200, 150), (90, 90, 90)).convert(mode)
    suffix = "jpg" if mode in ("CMYK", "YCbCr") else "png"
    path = tmp_path / f"x.{suffix}"
    img.save(path)
    out = load_image(path, *BOUNDS)
    assert_processor_ready(out)
    assert out.size == load_image(Image.new("RGB", (200, 150)), *BOUNDS).size


def test_16bit_greyscale_is_scaled_not_clipped(tmp_path):
    arr = np.full((100, 100), 32768, np.uint16)  # mid grey in 16 bits
    path = tmp_path / "scan16.png"
    Image.fromarray(arr).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")  # PIL reads it as I;16 (or I): the wide path is taken
    out = np.asarray(load_image(path, *BOUNDS))
    assert 120 <= out.mean() <= 135  # ~128, not 255 (clipped)
    assert 120 <= np.asarray(load_image(arr, *BOUNDS)).mean() <= 135  # the same as an array
    flt = Image.fromarray(np.full((100, 100), 0.5, np.float32), "F")
    assert 120 <= np.asarray(load_image(flt, *BOUNDS)).mean() <= 135


def test_arrays_of_every_shape(tmp_path):
    for arr in (np.zeros((80, 90), np.uint8), np.zeros((80, 90, 1), np.uint8), np.ones((80, 90, 3), np.float32),
                np.zeros((80, 90, 4), np.uint8)):
        assert_processor_ready(load_image(arr, *BOUNDS))
    with pytest.raises(ImageLoadError, match="x.png.*HxW"):
        load_image(np.zeros((2, 80, 90, 3), np.uint8), what="x.png")
    with pytest.raises(ImageLoadError, match="NaN"):
        load_image(np.full((80, 90, 3), np.nan), what="x")


def test_thin_images_up_to_200_to_1_pass_and_beyond_is_a_clear_error(tmp_path):
    ok = tmp_path / "banner.png"
    Image.new("RGB", (4000, 40), (200, 10, 10)).save(ok)  # 100:1
    out = load_image(ok, *BOUNDS)
    assert_processor_ready(out, lo=BOUNDS[0], hi=BOUNDS[1])
    assert out.width > out.height
    thin = tmp_path / "line.png"
    Image.new("RGB", (3000, 10), (0, 0, 0)).save(thin)  # 300:1
    with pytest.raises(ImageLoadError, match=r"record 2 field imageA.*aspect ratio 300:1.*200:1"):
        load_image(thin, *BOUNDS, what="record 2 field imageA")
