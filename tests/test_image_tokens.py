"""Image sizing and image-token counting agree with what Qwen2.5-VL's own code computes.

``prompting.smart_resize_dims`` must give qwen-vl-utils' ``smart_resize`` pixels, and
``data.loading.image_token_counts`` / ``_prompt_tokens`` the token counts the processor really
expands to, for the default 14x2 patch build and the fine 7x4 one.
"""

from __future__ import annotations

import pytest
from PIL import Image

from preferthinker.data.loading import _prompt_tokens, image_token_counts
from preferthinker.modeling import build_tiny_model
from preferthinker.prompting import ImageLoadError, build_messages, load_image, smart_resize_dims

CORPUS = ["Images the user likes. Image A or Image B?", "<answer>Image A</answer> Color: warm, Detail: fine."] * 4
SMALL = dict(text_layers=1, hidden_size=32, intermediate_size=64, vision_depth=1, vision_hidden_size=32,
             vision_intermediate_size=32, vocab_size=400)
# (height, width) before resizing: square, odd, very wide, very tall, tiny, large
SIZES = [(56, 56), (100, 80), (37, 121), (28, 560), (900, 40), (10, 10), (640, 480)]


@pytest.fixture(scope="module", params=[(14, 2), (7, 4)], ids=["14x2", "7x4"])
def processor(request, tmp_path_factory):
    from transformers import AutoProcessor

    patch, merge = request.param
    path = build_tiny_model(tmp_path_factory.mktemp(f"p{patch}") / "m", CORPUS, vision_patch_size=patch,
                            vision_merge_size=merge, min_pixels=28 * 28, max_pixels=112 * 112, **SMALL)
    return AutoProcessor.from_pretrained(path)


@pytest.mark.parametrize("lo, hi", [(3136, 12544), (28 * 28, 56 * 56), (4 * 784, 16384 * 784)])
@pytest.mark.parametrize("h, w", SIZES + [(5600, 28), (2000, 3000)])
def test_smart_resize_is_qwen_vl_utils(h, w, lo, hi):
    from qwen_vl_utils import smart_resize

    expected = smart_resize(h, w, factor=28, min_pixels=lo, max_pixels=hi)
    got = smart_resize_dims(h, w, lo, hi)
    # qwen-vl-utils floors a very thin side to 0 when shrinking; the processor (and we) keep one 28-pixel row
    assert got == (max(28, expected[0]), max(28, expected[1]))
    assert got[0] % 28 == 0 and got[1] % 28 == 0


def test_smart_resize_rejects_bad_sizes():
    with pytest.raises(ImageLoadError, match="empty side"):
        smart_resize_dims(0, 10, 784, 3136)
    with pytest.raises(ImageLoadError, match="aspect ratio"):
        smart_resize_dims(10, 2100, 784, 3136)
    with pytest.raises(ValueError, match="max_pixels"):
        smart_resize_dims(56, 56, 3136, 784)


def _expanded(processor, images: list[Image.Image]) -> tuple[list[int], list[list[int]]]:
    """Per image: the <|image_pad|> tokens the processor really emits, and its image_grid_thw row."""
    content = [{"type": "image", "image": im} for im in images] + [{"type": "text", "text": "Which?"}]
    inputs = processor.apply_chat_template([{"role": "user", "content": content}], tokenize=True, return_dict=True,
                                           return_tensors="pt", add_generation_prompt=True)
    ids = inputs["input_ids"][0].tolist()
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    start = processor.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    counts, run = [], None
    for t in ids:  # count the pads between each <|vision_start|> and the next non-pad token
        if t == start:
            run = 0
        elif t == pad and run is not None:
            run += 1
        elif run is not None:
            counts.append(run)
            run = None
    return counts, inputs["image_grid_thw"].tolist()


def test_token_counts_match_the_processor_grid(processor):
    patch, merge = processor.image_processor.patch_size, processor.image_processor.merge_size
    images = [load_image(Image.new("RGB", (w, h), (90, 20, 200)), 28 * 28, 112 * 112) for h, w in SIZES]
    counts = image_token_counts(processor, images)
    expanded, grid = _expanded(processor, images)
    assert counts == expanded
    assert counts == [t * gh * gw // (merge * merge) for t, gh, gw in grid]
    # One LM token per 28x28 pixels whatever the build: the patch grid is (side / patch) per side. A side
    # kept at 28 pixels can leave a thin image over max_pixels (e.g. 28x560 -> 28x476); the processor shrinks it
    # once more, and the count above follows the processor, not the image.
    within = [(im, g, n) for im, g, n in zip(images, grid, counts) if im.height * im.width <= 112 * 112]
    assert len(within) == len(images) - 2  # 28x560 and 900x40 are the thin ones
    for im, (t, gh, gw), n in within:
        assert (t, gh, gw) == (1, im.height // patch, im.width // patch)
        assert n == (im.height // 28) * (im.width // 28)


def test_fine_patch_build_counts_four_tokens_for_56_pixels(processor):
    """The 7x4 build's 56x56 image is an 8x8 patch grid merged 4x4: 4 tokens (not 1, as 14*merge sides gave)."""
    im = Image.new("RGB", (56, 56), (10, 200, 30))
    assert image_token_counts(processor, [im]) == [4]
    assert image_token_counts(processor, []) == []


def test_prompt_tokens_is_the_exact_sequence_length(processor):
    liked = [Image.new("RGB", (56, 56), (200, 30, 30)), Image.new("RGB", (84, 56), (190, 40, 20))]
    disliked = [Image.new("RGB", (56, 112), (20, 30, 200))]
    a, b = Image.new("RGB", (56, 56), (210, 20, 20)), Image.new("RGB", (112, 112), (20, 20, 220))
    messages, images = build_messages(liked, disliked, a, b, style="compact", system="compact", embed_images=False)
    # the template text, then the processor on text + images: what TRL's collators do
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=images, return_tensors="pt")
    assert _prompt_tokens(processor, messages, images, None) == inputs["input_ids"].shape[1]
    completion = "<answer>Image A</answer>"
    full = processor(text=[text + completion + "<|im_end|>\n"], images=images, return_tensors="pt")
    assert _prompt_tokens(processor, messages, images, completion) == full["input_ids"].shape[1]
