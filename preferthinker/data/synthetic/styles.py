"""Art Styles of the synthetic renderer: each style draws a region map (uint8 ids, background ids below
``SHAPE_ID``, shapes from it, ``OUTLINE_ID`` for ink outlines) from the content's anchors, and the tone of
every id. ``render.render_array`` picks one by the style's geometry (``STYLES``); the value plane, media and
detail stay in ``render.py``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from preferthinker.data.synthetic.render import BASE, N_ANCHORS, OUTLINE_ID, SHAPE_ID, Content, _grid

# ------------------------------------------------------------------------------------------------
# styles: draw the region map (uint8 ids) and the tone of each id


def _poly(cx: float, cy: float, rad: float, n: int, rot: float, squash: float = 1.0) -> list[tuple[float, float]]:
    a = rot + np.arange(n) * 2 * np.pi / n
    px = np.cos(a) * rad
    py = np.sin(a) * rad * squash
    c, s = np.cos(rot * 0.37), np.sin(rot * 0.37)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in zip(px, py)]


def _star(cx: float, cy: float, rad: float, points: int, rot: float, inner: float = 0.5) -> list[tuple[float, float]]:
    a = rot + np.arange(2 * points) * np.pi / points
    rr = np.where(np.arange(2 * points) % 2 == 0, rad, rad * inner)
    return [(cx + np.cos(t) * q, cy + np.sin(t) * q) for t, q in zip(a, rr)]


def _oblique(points: list[tuple[float, float]], min_deg: float = 14.0) -> bool:
    """True when no edge of the polygon is within ``min_deg`` of horizontal or vertical."""
    for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]):
        ang = np.degrees(np.arctan2(y1 - y0, x1 - x0)) % 90.0
        if ang < min_deg or ang > 90.0 - min_deg:
            return False
    return True


def _tone_table(content: Content, rng: np.random.Generator) -> np.ndarray:
    """Tone of every possible region id: backgrounds near bg_tone, shapes from content.tones."""
    table = np.full(256, content.bg_tone, np.float32)
    n = len(content.tones)
    for i in range(SHAPE_ID, 255):
        table[i] = content.tones[(i - SHAPE_ID) % n]
    table[OUTLINE_ID] = 0.03
    return table


def _style_facets(c: Content, size: int, rng: np.random.Generator):
    x, y = _grid(size)
    ids = np.zeros((size, size), np.uint8)
    n_lines = 5
    for k in range(n_lines):
        ax, ay, _ = c.anchors[(k * 3) % N_ANCHORS]
        theta = np.radians(rng.uniform(25, 65) + (90 if rng.random() < 0.5 else 0))
        side = (x - ax) * np.sin(theta) - (y - ay) * np.cos(theta) > 0
        ids |= (side.astype(np.uint8) << k)
    ids += 1  # background facets 1..8
    table = _tone_table(c, rng)
    # facet tones alternate around the background tone
    b = c.bg_tone
    step = 0.2 if b < 0.6 else -0.2
    for code in range(1, 2**n_lines + 1):
        table[code] = np.clip(b + step * (bin(code - 1).count("1") % 3), 0.28, 0.92)
    img = Image.fromarray(ids, "L")
    draw = ImageDraw.Draw(img)
    n = 7 + int(round(c.n_shapes * 3))
    for k in range(n):
        cx, cy, r = c.anchors[k]
        nv = 3 if c.kinds[k] % 2 == 0 else 4
        rot = c.angles[k]
        for _ in range(12):
            pts = _poly(cx * size, cy * size, r * size * 1.25, nv, rot, squash=0.7 + 0.3 * (c.kinds[k] / 3))
            if _oblique(pts):
                break
            rot += 0.21
        draw.polygon(pts, fill=SHAPE_ID + k)
    return np.asarray(img).copy(), table


def _style_curves(c: Content, size: int, rng: np.random.Generator):
    x, y = _grid(size)
    amp = rng.uniform(0.05, 0.1)
    per = rng.uniform(0.45, 0.8)
    phase = rng.uniform(0, 2 * np.pi)
    ids = np.where(y > c.horizon + amp * np.sin(2 * np.pi * x / per + phase), 2, 1).astype(np.uint8)
    table = _tone_table(c, rng)
    b = c.bg_tone
    table[2] = np.clip(b + (0.2 if b < 0.6 else -0.2), 0.28, 0.92)
    img = Image.fromarray(ids, "L")
    draw = ImageDraw.Draw(img)
    # a thick whiplash band across the picture
    t = np.linspace(-0.1, 1.1, 40)
    y0 = c.anchors[1, 1]
    band = [(float(tt * size), float((y0 + 0.12 * np.sin(2 * np.pi * tt / per * 1.3 + phase)) * size)) for tt in t]
    draw.line(band, fill=SHAPE_ID + 11, width=max(2, int(round(3.5 * size / BASE))), joint="curve")
    n = 2 + int(round(c.n_shapes * 2))
    for k in range(n):
        cx, cy, r = c.anchors[k] * np.array([size, size, size])
        r = max(r * 1.3, 0.12 * size)
        kind = c.kinds[k]
        if kind == 0 or kind == 3:  # circle or ring
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=SHAPE_ID + k)
            if kind == 3:
                ri = r * 0.55
                draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=SHAPE_ID + k + 1)
        else:  # rotated ellipse / leaf
            pts = _poly(cx, cy, r, 28, c.angles[k], squash=0.55 if kind == 1 else 0.8)
            draw.polygon(pts, fill=SHAPE_ID + k)
    return np.asarray(img).copy(), table


def _style_outlined(c: Content, size: int, rng: np.random.Generator):
    ids = np.full((size, size), 1, np.uint8)
    img = Image.fromarray(ids, "L")
    draw = ImageDraw.Draw(img)
    w = max(2, int(round(3 * size / BASE)))
    n = 2 + int(round(c.n_shapes * 2))
    for k in range(n):
        cx, cy, r = c.anchors[k] * size
        r = r * 1.3 + w
        kind = c.kinds[k]
        if kind == 0:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=SHAPE_ID + k, outline=OUTLINE_ID, width=w)
        elif kind == 1:
            draw.polygon(_star(cx, cy, r * 1.15, 5, c.angles[k]), fill=SHAPE_ID + k, outline=OUTLINE_ID, width=w)
        elif kind == 2:
            draw.rounded_rectangle([cx - r, cy - r * 0.75, cx + r, cy + r * 0.75], radius=r * 0.35, fill=SHAPE_ID + k, outline=OUTLINE_ID, width=w)
        else:
            draw.polygon(_star(cx, cy, r * 1.1, 10, c.angles[k], inner=0.7), fill=SHAPE_ID + k, outline=OUTLINE_ID, width=w)
    return np.asarray(img).copy(), _tone_table(c, rng)


def _style_minimal(c: Content, size: int, rng: np.random.Generator):
    ids = np.full((size, size), 1, np.uint8)
    img = Image.fromarray(ids, "L")
    draw = ImageDraw.Draw(img)
    n = 1 if c.n_shapes < 0.55 else 2
    for k in range(n):
        cx, cy, r = c.anchors[k] * size
        r = min(max(r, 0.11 * size), 0.2 * size)
        kind = c.kinds[k]
        if kind in (0, 3):
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=SHAPE_ID + k)
        elif kind == 1:
            draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=SHAPE_ID + k)
        else:
            draw.rectangle([cx - r * 1.6, cy - r * 0.35, cx + r * 1.6, cy + r * 0.35], fill=SHAPE_ID + k)
    return np.asarray(img).copy(), _tone_table(c, rng)


def _style_grid(c: Content, size: int, rng: np.random.Generator):
    rects = [(0.0, 0.0, 1.0, 1.0)]
    n_split = 4 + int(round(c.n_shapes * 3))
    for k in range(n_split):
        areas = [(r[2] - r[0]) * (r[3] - r[1]) for r in rects]
        i = int(np.argmax(areas))
        x0, y0, x1, y1 = rects.pop(i)
        ax, ay, _ = c.anchors[k]
        if (x1 - x0) >= (y1 - y0):
            xs = x0 + (x1 - x0) * float(np.clip((ax - x0) / max(x1 - x0, 1e-6), 0.3, 0.7))
            rects += [(x0, y0, xs, y1), (xs, y0, x1, y1)]
        else:
            ys = y0 + (y1 - y0) * float(np.clip((ay - y0) / max(y1 - y0, 1e-6), 0.3, 0.7))
            rects += [(x0, y0, x1, ys), (x0, ys, x1, y1)]
    ids = np.zeros((size, size), np.uint8)
    areas = [(r[2] - r[0]) * (r[3] - r[1]) for r in rects]
    big = int(np.argmax(areas))
    table = _tone_table(c, rng)
    for k, (x0, y0, x1, y1) in enumerate(rects):
        rid = 1 if k == big else SHAPE_ID + k
        ids[int(round(y0 * size)) : int(round(y1 * size)), int(round(x0 * size)) : int(round(x1 * size))] = rid
    # neighbouring rectangles alternate between the contrasting tones and the background tone
    for k in range(len(rects)):
        if k != big and k % 3 == 2:
            table[SHAPE_ID + k] = c.bg_tone + (0.12 if c.bg_tone < 0.6 else -0.12)
    return ids, table


def _style_sunburst(c: Content, size: int, rng: np.random.Generator):
    x, y = _grid(size)
    oy = c.origin_y
    dx = np.abs(x - 0.5)  # mirror symmetry about the vertical centre line
    dy = y - oy
    n_rays = 12 + 2 * int(round(c.n_shapes * 3))
    phi = np.arctan2(dx, -dy if oy >= 0.5 else dy)  # 0..pi from the axis pointing into the picture
    ray = np.floor(phi / (np.pi / n_rays)).astype(np.int32)
    ids = np.where(ray % 2 == 0, 1, 2).astype(np.uint8)
    table = _tone_table(c, rng)
    b = c.bg_tone
    table[2] = np.clip(b + (0.24 if b < 0.6 else -0.24), 0.28, 0.92)
    rad = np.sqrt(dx**2 + dy**2)
    r0 = 0.22 + 0.12 * (c.anchors[0, 2] / 0.2)
    steps = 3
    for k in range(steps):  # stepped concentric arches around the origin
        rk = r0 * (1 - k / (steps + 0.5))
        ids = np.where(rad < rk, SHAPE_ID + k, ids).astype(np.uint8)
    # a pair of mirrored stepped pylons
    px = 0.12 + 0.18 * c.anchors[3, 0]
    pw = 0.07
    for k in range(3):
        top = 0.35 + 0.12 * k if oy >= 0.5 else 0.65 - 0.12 * k
        inside = (np.abs(dx - (0.5 - px)) < pw * (1 - 0.25 * k)) & ((y > top) if oy >= 0.5 else (y < top))
        ids = np.where(inside, SHAPE_ID + 5 + k, ids).astype(np.uint8)
    return ids, table


STYLES = {
    "facets": _style_facets,
    "curves": _style_curves,
    "outlined": _style_outlined,
    "minimal": _style_minimal,
    "grid": _style_grid,
    "sunburst": _style_sunburst,
}
