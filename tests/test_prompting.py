"""Prompt construction and image loading (Qwen2.5-VL pixel conventions, bad images)."""

import numpy as np
import pytest
from PIL import Image

from preferthinker import prompting
from preferthinker.prompting import ImageLoadError, build_messages, load_image, smart_resize_dims


def _img(w=64, h=48, color=(200, 10, 10)):
    return Image.new("RGB", (w, h), color)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_official_order_for_1_to_5_references(k):
    liked = [f"L{i}" for i in range(k)]
    disliked = [f"D{i}" for i in range(k)]
    msgs, images = build_messages(liked, disliked, "A", "B", style="official", system="official")
    assert [m["role"] for m in msgs] == ["system", "user"]
    content = msgs[1]["content"]
    kinds = [(c["type"], c.get("text", c.get("image"))) for c in content]
    expected = [("text", prompting.PREF_INTRO)] + [("image", x) for x in liked]
    expected += [("text", prompting.NONPREF_INTRO)] + [("image", x) for x in disliked]
    expected += [("text", prompting.CANDIDATES_INTRO), ("text", "Image A"), ("image", "A"), ("text", "Image B"), ("image", "B")]
    expected += [("text", prompting.FINAL_INSTRUCTION)]
    assert kinds == expected
    assert images == liked + disliked + ["A", "B"]
    assert "ArtisticMedium" in msgs[0]["content"][0]["text"]


def test_only_first_five_references_and_placeholders():
    msgs, images = build_messages(list(range(8)), list(range(10, 17)), "A", "B", style="compact", system="none", embed_images=False)
    assert [m["role"] for m in msgs] == ["user"]
    assert images == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14, "A", "B"]
    blocks = [c for c in msgs[0]["content"] if c["type"] == "image"]
    assert len(blocks) == 12 and all(set(b) == {"type"} for b in blocks)


def test_needs_references_on_both_sides():
    with pytest.raises(ValueError, match="at least one"):
        build_messages([], ["x"], "A", "B")
    with pytest.raises(ValueError, match="style"):
        build_messages(["x"], ["y"], "A", "B", style="fancy")


def test_chat_template_accepts_messages():
    """The stock Qwen2.5-VL template renders our messages with 12 vision blocks in order."""
    from transformers import Qwen2_5_VLProcessor  # noqa: F401  (template lives on the processor)
    from preferthinker.modeling import QWEN2_5_VL_CHAT_TEMPLATE as STOCK_CHAT_TEMPLATE
    import jinja2

    msgs, _ = build_messages(["l"] * 5, ["d"] * 5, "a", "b", style="official", system="compact")
    text = jinja2.Environment().from_string(STOCK_CHAT_TEMPLATE).render(messages=msgs, add_generation_prompt=True)
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 12
    assert text.index("Image A") < text.rindex("<|image_pad|>")
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    "h, w, lo, hi, expected",
    [(56, 56, 56 * 56, 56 * 56, (56, 56)), (100, 80, 3136, 12544, (112, 84)), (1000, 1000, 3136, 12544, (112, 112)), (10, 10, 3136, 12544, (56, 56))],
)
def test_smart_resize(h, w, lo, hi, expected):
    rh, rw = smart_resize_dims(h, w, lo, hi)
    assert (rh, rw) == expected and rh % 28 == 0 and rw % 28 == 0 and lo <= rh * rw <= hi


def test_load_image_inputs(tmp_path):
    p = tmp_path / "x.png"
    _img(300, 200).save(p)
    a = load_image(p, 3136, 12544)
    b = load_image(_img(300, 200), 3136, 12544)
    c = load_image(np.asarray(_img(300, 200)), 3136, 12544)
    assert a.size == b.size == c.size and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(np.asarray(b), np.asarray(c))
    assert load_image(np.zeros((30, 30), np.float32)).size == (56, 56)  # grey float array, upscaled to min


def test_load_image_errors(tmp_path):
    with pytest.raises(ImageLoadError, match="does not exist"):
        load_image(tmp_path / "missing.png", what="record 3 field imageA")
    (tmp_path / "notimg.png").write_text("hello")
    with pytest.raises(ImageLoadError, match="cannot read"):
        load_image(tmp_path / "notimg.png")
    good = tmp_path / "good.png"
    _img(200, 200).save(good)
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:60])
    with pytest.raises(ImageLoadError):
        load_image(tmp_path / "trunc.png")
    with pytest.raises(ImageLoadError, match="shape"):
        load_image(np.zeros((4, 4, 7)))
    with pytest.raises(ImageLoadError, match="aspect"):
        load_image(Image.new("RGB", (5000, 10)))


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(prompting, "MAX_DECODE_PIXELS", 100 * 100)
    p = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(p)
    with pytest.raises(ImageLoadError, match="decode limit|bomb"):
        load_image(p)
