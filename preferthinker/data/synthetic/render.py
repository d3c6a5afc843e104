"""The procedural renderer: ``image = render_image(content_seed, profile, size)``.

An image is built on three planes and converted from HSV to RGB at the very end:

* **content** (from the seed alone, independent of taste): a layout family, anchor points with sizes
  and angles, a background tone and shape tones, a horizon, a sunburst origin;
* **value plane** (brightness): the *Art Style* draws the geometry of the shapes on a region map using
  the content; the *Artistic Medium* turns the region tones into a global rendering signature
  (tiles, dots, washes, pencil lines, flat fills, two-tone ink); the *Detail* multiplies a
  high-frequency texture onto it;
* **hue plane** = the *Color* term's hue (plus a small per-region jitter) and **saturation plane** =
  the *Saturation* term's level (plus a small per-region jitter).

Because style, medium and detail only touch the value plane, they never move a pixel's hue or
saturation: each element stays separately measurable in the pixels (see ``features.py``).

All lengths are written for a 56-pixel image and scale with ``size / 56``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from preferthinker.profile import ELEMENTS
from preferthinker.data.synthetic.vocabulary import Vocabulary, load_vocabulary

BASE = 56  # the reference image side all lengths are written for
LAYOUTS: tuple[str, ...] = ("scatter", "centered", "horizon", "grid", "diagonal", "ring")
N_ANCHORS = 12
SHAPE_ID = 32  # region ids >= SHAPE_ID are foreground shapes, below are background
OUTLINE_ID = 255  # thick ink outlines (Pop Art)
INK = 0.05  # value of the ink outlines
MAX_SIZE = 1024

# sub-stream tags for np.random.default_rng([content_seed, TAG, ...])
_T_CONTENT, _T_STYLE, _T_JITTER, _T_MEDIUM, _T_DETAIL = 11, 12, 13, 14, 15


# ------------------------------------------------------------------------------------------------
# content


@dataclass(frozen=True)
class Content:
    """Everything about an image that does not depend on taste; a pure function of the seed."""

    seed: int
    layout: str
    anchors: np.ndarray  # (N_ANCHORS, 3): x, y, radius, in units of the image side
    angles: np.ndarray  # (N_ANCHORS,) radians
    kinds: np.ndarray  # (N_ANCHORS,) ints 0..3 picking a shape variant
    bg_tone: float
    tones: np.ndarray  # (N_ANCHORS,) shape tones in [0.28, 0.92], contrasting with the background
    horizon: float  # y of the horizon (used by the horizon layout and the wavy/sunburst grounds)
    origin_y: float  # y of the sunburst origin
    n_shapes: float  # 0..1: how busy the composition is (each style maps it to its own range)


def make_content(content_seed: int, layouts: Sequence[str] = LAYOUTS) -> Content:
    """Draw the content of one image from its seed. ``layouts`` is the pool the layout is drawn from."""
    return _make_content(int(content_seed), tuple(layouts))


@lru_cache(maxsize=256)
def _make_content(content_seed: int, layouts: tuple[str, ...]) -> Content:
    if not layouts or any(l not in LAYOUTS for l in layouts):
        raise ValueError(f"layouts must be a non-empty subset of {LAYOUTS}, got {layouts}")
    rng = np.random.default_rng([int(content_seed), _T_CONTENT])
    layout = layouts[int(rng.integers(len(layouts)))]
    n = N_ANCHORS
    xy = rng.uniform(0.15, 0.85, size=(n, 2))
    r = rng.uniform(0.08, 0.2, size=n)
    horizon = float(rng.uniform(0.5, 0.7))
    if layout == "centered":
        xy[0] = 0.5 + rng.uniform(-0.05, 0.05, 2)
        r[0] = rng.uniform(0.22, 0.28)
        ang = rng.uniform(0, 2 * np.pi, n - 1)
        dist = rng.uniform(0.3, 0.4, n - 1)
        xy[1:] = 0.5 + np.stack([np.cos(ang), np.sin(ang)], 1) * dist[:, None]
        r[1:] = rng.uniform(0.06, 0.12, n - 1)
    elif layout == "horizon":
        r = rng.uniform(0.07, 0.18, n)
        xy[:, 0] = rng.uniform(0.12, 0.88, n)
        on_ground = rng.random(n) < 0.6
        xy[:, 1] = np.where(on_ground, horizon - r * 0.8, rng.uniform(0.12, horizon - 0.15, n))
    elif layout == "grid":
        cells = np.array([(x, y) for y in (0.2, 0.5, 0.8) for x in (0.2, 0.5, 0.8)])
        order = rng.permutation(len(cells))
        for k in range(n):
            xy[k] = cells[order[k % len(cells)]] + rng.uniform(-0.04, 0.04, 2)
        r = rng.uniform(0.09, 0.14, n)
    elif layout == "diagonal":
        t = np.sort(rng.uniform(0.1, 0.9, n))
        anti = rng.random() < 0.5
        xy[:, 0] = t
        xy[:, 1] = (1 - t) if anti else t
        xy += rng.normal(0, 0.04, (n, 2))
        r = np.linspace(0.2, 0.07, n) * rng.uniform(0.85, 1.15, n)
    elif layout == "ring":
        ang = np.linspace(0, 2 * np.pi, n - 1, endpoint=False) + rng.uniform(0, 2 * np.pi)
        xy[0] = (0.5, 0.5)
        xy[1:] = 0.5 + 0.32 * np.stack([np.cos(ang), np.sin(ang)], 1) + rng.normal(0, 0.02, (n - 1, 2))
        r = rng.uniform(0.08, 0.12, n)
        r[0] = rng.uniform(0.1, 0.16)
    anchors = np.concatenate([np.clip(xy, 0.05, 0.95), r[:, None]], 1)
    bg = float(rng.uniform(0.3, 0.9))
    delta = rng.uniform(0.3, 0.5, n)
    up = np.where(bg + delta <= 0.92, 1.0, -1.0)
    up = np.where((bg - delta >= 0.28) & (rng.random(n) < 0.5), -1.0, up)
    tones = np.clip(bg + up * delta, 0.28, 0.92)
    if layout in ("centered", "ring", "horizon"):
        origin_y = 0.5 if layout != "horizon" else horizon
    else:
        origin_y = 1.0 if rng.random() < 0.7 else 0.0
    return Content(
        seed=int(content_seed),
        layout=layout,
        anchors=anchors,
        angles=rng.uniform(0, 2 * np.pi, n),
        kinds=rng.integers(0, 4, n),
        bg_tone=bg,
        tones=tones,
        horizon=horizon,
        origin_y=origin_y,
        n_shapes=float(rng.random()),
    )


# ------------------------------------------------------------------------------------------------
# small numeric helpers


@lru_cache(maxsize=64)
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """Row-stochastic (n, n) Gaussian blur matrix with reflected borders: blur(X) = G @ X @ G.T."""
    radius = max(1, int(np.ceil(3 * sigma)))
    offs = np.arange(-radius, radius + 1)
    w = np.exp(-0.5 * (offs / sigma) ** 2)
    w /= w.sum()
    g = np.zeros((n, n), np.float64)
    for i in range(n):
        for o, wk in zip(offs, w):
            j = i + o
            if j < 0:
                j = -j - 1
            if j >= n:
                j = 2 * n - j - 1
            j = min(max(j, 0), n - 1)
            g[i, j] += wk
    g.flags.writeable = False
    return g.astype(np.float32)


def blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a square 2-D array (sigma in pixels)."""
    if sigma <= 0:
        return x
    g = _blur_matrix(x.shape[0], float(sigma))
    return g @ x.astype(np.float32) @ g.T


@lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    y, x = np.meshgrid(c, c, indexing="ij")
    y.flags.writeable = False
    x.flags.writeable = False
    return x, y


def boundaries(ids: np.ndarray) -> np.ndarray:
    """Pixels whose region id differs from the right or lower neighbour (1-pixel lines)."""
    b = np.zeros(ids.shape, bool)
    b[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    b[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return b


def _dilate(mask: np.ndarray, k: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(k):
        m = out.copy()
        m[1:] |= out[:-1]
        m[:-1] |= out[1:]
        m[:, 1:] |= out[:, :-1]
        m[:, :-1] |= out[:, 1:]
        out = m
    return out


def single_thread_blas():
    """Limit BLAS to one thread (returns the limiter, or None without threadpoolctl). The blur's small
    matrix products are slower with threads, and several workers each starting one thread per core
    oversubscribe the machine."""
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return None




# ------------------------------------------------------------------------------------------------
# media: region tones -> value plane


def _medium(technique: str, ids: np.ndarray, tone: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    s = size / BASE
    if technique == "flat":
        return tone
    if technique == "mosaic":
        tile = size // 8
        ty = np.arange(size) // tile
        jit = rng.uniform(-0.05, 0.05, (8 + 1, 8 + 1)).astype(np.float32)
        v = tone * (1 + jit[ty[:, None], ty[None, :]])
        gw = max(1, int(round(s)))
        pos = np.arange(size) % tile
        grout = (pos < gw)[:, None] | (pos < gw)[None, :]
        return np.where(grout, v * 0.55, v)
    if technique == "halftone":
        pitch = size / 10.0
        c = (np.arange(size, dtype=np.float32) + 0.5) % pitch - pitch / 2
        d = np.sqrt(c[:, None] ** 2 + c[None, :] ** 2)
        r = pitch * (0.17 + 0.2 * (1 - tone))
        dot = np.clip(r - d + 0.5, 0, 1)  # 1-pixel antialiased disc
        ground = 0.3 + 0.7 * tone
        return ground * (1 - 0.5 * dot)
    if technique == "watercolor":
        # light transparent washes, pigment pooling at the rims, blotchy low-frequency mottling,
        # everything soft-edged
        wash = 0.4 + 0.58 * tone
        rim = np.abs(tone - blur(tone, 1.3 * s))
        blot = blur(rng.standard_normal((size, size)).astype(np.float32), 4.0 * s)
        blot /= blot.std() + 1e-6
        v = wash * (1 - 0.9 * rim) * np.exp(0.09 * blot)
        return blur(v, 1.5 * s)
    if technique == "pencil":
        # pale paper, soft graphite shading of the darker regions, thin dark contour lines
        lines = _dilate(boundaries(ids), max(0, int(round(s / 2)) - 1))
        v = 0.66 + 0.3 * tone
        return np.where(lines, 0.28, v)
    if technique == "woodcut":
        # two tones: the darker regions become ink (at least a quarter of the picture: otherwise the
        # lighter ones do), and thin light lines are carved into the ink along every contour
        body = ids != OUTLINE_ID
        lo, hi = float(tone[body].min()), float(tone[body].max())
        ink = tone < 0.5 * (lo + hi)
        if ink[body].mean() < 0.25:
            ink = ~ink & body
        v = np.where(ink, 0.26, 0.9)
        carve = _dilate(boundaries(ids), max(0, int(round(s / 2)) - 1))
        return np.where(carve & ink, 0.9, v)
    raise ValueError(f"unknown medium technique {technique!r}")


# ------------------------------------------------------------------------------------------------
# detail: high-frequency texture on the value plane


def _detail(texture: str, amplitude: float, size: int, rng: np.random.Generator) -> np.ndarray | None:
    if texture == "none" or amplitude <= 0:
        return None
    s = size / BASE
    grain_sigma = 0.5 * s if s > 1.5 else 0.0
    if texture == "soft":
        p = blur(rng.standard_normal((size, size)).astype(np.float32), 1.0 * s)
    elif texture == "grain":
        p = blur(rng.standard_normal((size, size)).astype(np.float32), grain_sigma)
    elif texture == "crosshatch":
        per = 3.0 * s
        i = np.arange(size, dtype=np.float32)
        a = i[None, :] + i[:, None]
        b = i[None, :] - i[:, None]
        p = np.cos(2 * np.pi * a / per) + np.cos(2 * np.pi * b / per)
        p = p + 0.6 * blur(rng.standard_normal((size, size)).astype(np.float32), grain_sigma)
    elif texture == "speckle":
        p = blur(rng.standard_normal((size, size)).astype(np.float32), grain_sigma)
        specks = rng.random((size, size)) < 0.06
        p = p + specks * rng.choice(np.array([-2.5, 2.5], np.float32), size=(size, size))
    else:
        raise ValueError(f"unknown detail texture {texture!r}")
    p = p - p.mean()
    p /= p.std() + 1e-6
    return amplitude * p


# ------------------------------------------------------------------------------------------------
# public API


def _resolve_profile(profile: Mapping[str, str], vocab: Vocabulary) -> dict[str, object]:
    try:
        return {e: vocab.term(e, profile[e]) for e in ELEMENTS}
    except KeyError as e:
        raise ValueError(f"profile {dict(profile)} is not in the vocabulary: {e}") from None


def render_array(
    content_seed: int,
    profile: Mapping[str, str],
    size: int = BASE,
    *,
    vocab: Vocabulary | None = None,
    layouts: Sequence[str] = LAYOUTS,
) -> np.ndarray:
    """Render one image as a (size, size, 3) uint8 array. Deterministic in its arguments."""
    if not isinstance(size, (int, np.integer)) or size < 28 or size > MAX_SIZE:
        raise ValueError(f"size must be an int in [28, {MAX_SIZE}], got {size!r}")
    vocab = vocab or load_vocabulary()
    terms = _resolve_profile(profile, vocab)
    content = make_content(content_seed, layouts)
    seed = content.seed
    style = terms["Art Styles"]
    geometry = style["geometry"]
    from preferthinker.data.synthetic.styles import STYLES  # styles.py builds on this module's helpers

    ids, table = STYLES[geometry](content, size, np.random.default_rng([seed, _T_STYLE, style.index]))
    tone = table[ids]
    v = _medium(terms["Artistic Medium"]["technique"], ids, tone, size, np.random.default_rng([seed, _T_MEDIUM]))
    v = np.where(ids == OUTLINE_ID, INK, v)  # ink outlines sit on top of every medium
    det = terms["Detail"]
    tex = _detail(det["texture"], float(det["amplitude"]), size, np.random.default_rng([seed, _T_DETAIL]))
    if tex is not None:
        if det["coverage"] == "shapes":
            tex = np.where(ids >= SHAPE_ID, tex, 0.0)
        # multiplicative on light tones, partly additive so that dark tones show the texture too
        v = v * np.exp(tex) + 0.3 * tex * (1.0 - v)
    v = np.clip(v, 0.0, 1.0).astype(np.float32)
    # hue and saturation are constant per region, so each channel is V times a per-region factor
    # (exactly HSV -> RGB): one colour table of 256 entries instead of a per-pixel conversion
    jr = np.random.default_rng([seed, _T_JITTER])
    hue_j = jr.uniform(-1, 1, 256).astype(np.float32) * float(vocab.option("Color", "hue_jitter", 6))
    sat_j = jr.uniform(-1, 1, 256).astype(np.float32) * float(vocab.option("Saturation", "saturation_jitter", 0.025))
    h = float(terms["Color"]["hue"]) + hue_j
    sat = np.clip(float(terms["Saturation"]["saturation"]) + sat_j, 0.0, 1.0)
    factors = _hsv_factors(h, sat)  # (256, 3)
    rgb = v[..., None] * factors[ids]
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _hsv_factors(h: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Per-entry RGB factors k such that RGB = V * k for hue h (degrees) and saturation s."""
    h6 = np.mod(h, 360.0) / 60.0
    i = np.floor(h6).astype(np.int64) % 6
    f = h6 - np.floor(h6)
    one = np.ones_like(s)
    p, q, t = 1 - s, 1 - s * f, 1 - s * (1 - f)
    r = np.choose(i, [one, q, p, p, t, one])
    g = np.choose(i, [t, one, one, q, p, p])
    b = np.choose(i, [p, p, t, one, one, q])
    return np.stack([r, g, b], -1).astype(np.float32)


def render_image(content_seed: int, profile: Mapping[str, str], size: int = BASE, **kw) -> Image.Image:
    """``render_array`` as a PIL RGB image."""
    return Image.fromarray(render_array(content_seed, profile, size, **kw), "RGB")


def png_bytes(arr: np.ndarray) -> bytes:
    """Lossless, deterministic PNG encoding (no metadata, fixed compression)."""
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG", compress_level=1, optimize=False)
    return buf.getvalue()


def describe(content_seed: int, profile: Mapping[str, str], layouts: Sequence[str] = LAYOUTS) -> str:
    """A text prompt for the image (the ``reference_prompt_list`` entry)."""
    c = make_content(content_seed, layouts)
    p = dict(profile)
    return (
        f"a {c.layout} composition in {p['Art Styles']} style, {p['Color']} hue, "
        f"{p['Artistic Medium']}, {p['Saturation']} saturation, {p['Detail']} detail"
    )


def random_profile(rng: np.random.Generator, vocab: Vocabulary | None = None) -> dict[str, str]:
    vocab = vocab or load_vocabulary()
    return {e: vocab.names(e)[int(rng.integers(vocab.size(e)))] for e in ELEMENTS}


def vocabulary_sheet(size: int = BASE, columns: int = 6, seed: int = 0, scale: int = 1, vocab: Vocabulary | None = None) -> Image.Image:
    """One block per element, one row per term: in each column only that element changes (the content
    and the other four terms are fixed per column), so a row shows what the term looks like."""
    from PIL import ImageFont

    vocab = vocab or load_vocabulary()
    font = ImageFont.load_default()
    cell = size * scale
    label_w = 150
    pad = 4
    rows = sum(vocab.size(e) + 1 for e in ELEMENTS)
    sheet = Image.new("RGB", (label_w + columns * (cell + pad), rows * (cell + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    rng = np.random.default_rng([seed, 5])
    bases = [random_profile(rng, vocab) for _ in range(columns)]
    seeds = [int(rng.integers(1 << 30)) for _ in range(columns)]
    row = 0
    for e in ELEMENTS:
        draw.text((4, row * (cell + pad) + cell // 2), e.upper(), fill=(0, 0, 0), font=font)
        row += 1
        for name in vocab.names(e):
            draw.text((4, row * (cell + pad) + cell // 2 - 5), name, fill=(0, 0, 0), font=font)
            for j in range(columns):
                prof = dict(bases[j], **{e: name})
                im = render_image(seeds[j], prof, size, vocab=vocab)
                if scale != 1:
                    im = im.resize((cell, cell), Image.Resampling.NEAREST)
                sheet.paste(im, (label_w + j * (cell + pad), row * (cell + pad)))
            row += 1
    return sheet
