"""Contact sheets a person can look at: one row per user (liked | disliked | A | B)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from preferthinker.profile import ELEMENTS

_GOOD, _BAD = (30, 160, 60), (200, 40, 40)


def _short(profile: Mapping[str, str]) -> str:
    return " | ".join(str(profile[e]) for e in ELEMENTS)


def contact_sheet(records: Sequence[Mapping], image_root: str | Path, *, title: str = "", cell: int = 112) -> Image.Image:
    """Rows of ``records`` (the engine's record dicts, or official-schema dicts): 5 liked images, 5
    disliked images, then Image A and Image B; the preferred candidate is framed green, the other red.
    Above each row: user id, label, true scores, preference and non-preference profiles."""
    root = Path(image_root)
    font = ImageFont.load_default()
    pad, gap, text_h = 4, 14, 40
    n_like = max(len(r.get("preferred", r.get("prefered_images", []))) for r in records)
    n_dis = max(len(r.get("non_preferred", r.get("non_prefered_images", []))) for r in records)
    width = pad + (n_like + n_dis + 2) * (cell + pad) + 2 * gap
    row_h = text_h + cell + 2 * pad
    sheet = Image.new("RGB", (width, 24 + len(records) * row_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 6), f"{title}   columns: liked references | disliked references | Image A | Image B (green = preferred)", fill=(0, 0, 0), font=font)
    for i, r in enumerate(records):
        y = 24 + i * row_h
        liked = r.get("preferred", r.get("prefered_images", []))
        disliked = r.get("non_preferred", r.get("non_prefered_images", []))
        a, b = r.get("image_a", r.get("imageA")), r.get("image_b", r.get("imageB"))
        label = r.get("label") or r.get("conversations", [{}])[0].get("value")
        extra = r.get("extra", r)
        sa, sb = extra.get("true_scores_a"), extra.get("true_scores_b")
        head = f"{r.get('user_id', i)}  {extra.get('user_type', '')}  label={label}"
        if sa and sb:
            head += f"  A={'+'.join(map(str, sa))}={sum(sa)}  B={'+'.join(map(str, sb))}={sum(sb)}"
        draw.text((pad, y + 2), head, fill=(0, 0, 0), font=font)
        if r.get("prefer_attributes"):
            draw.text((pad, y + 14), "likes:    " + _short(r["prefer_attributes"]), fill=(0, 90, 0), font=font)
        if r.get("non_prefer_attributes"):
            draw.text((pad, y + 26), "dislikes: " + _short(r["non_prefer_attributes"]), fill=(150, 0, 0), font=font)
        x = pad
        cells = [(p, None) for p in liked] + [(None, "gap")] + [(p, None) for p in disliked] + [(None, "gap"), (a, "A"), (b, "B")]
        for path, kind in cells:
            if kind == "gap":
                x += gap
                continue
            with Image.open(root / path) as im:
                thumb = im.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(thumb, (x, y + text_h))
            if kind in ("A", "B"):
                win = label == f"Image {kind}"
                draw.rectangle([x - 2, y + text_h - 2, x + cell + 1, y + text_h + cell + 1], outline=_GOOD if win else _BAD, width=3)
                draw.text((x + 3, y + text_h + 3), kind, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
            x += cell + pad
    return sheet
