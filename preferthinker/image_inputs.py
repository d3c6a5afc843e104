"""What the caller hands the Assessor as images, expanded into a flat list: files, folders (their image
files, sorted by name), PIL images and arrays. Nothing is decoded here (``prompting.load_image`` does that);
a missing path or a folder with no image is an error at once, naming the argument."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from preferthinker.prompting import ImageLoadError


class AssessInputError(ValueError):
    """Inputs the Assessor cannot work with (no references on a side, too few/many candidates, ...)."""


def _image_extensions() -> frozenset[str]:
    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


@dataclass
class ImageInput:
    """One image as given by the caller: the object to load and a label for messages and output."""

    source: Any
    label: str


def _label(obj: Any, what: str, index: int) -> str:
    if isinstance(obj, (str, os.PathLike)):
        return os.fspath(obj)
    if isinstance(obj, Image.Image):
        return f"{what}[{index}] (PIL image {obj.width}x{obj.height})"
    if isinstance(obj, np.ndarray):
        return f"{what}[{index}] (array {'x'.join(map(str, obj.shape))})"
    return f"{what}[{index}] ({type(obj).__name__})"


def collect_images(images: Any, *, what: str) -> tuple[list[ImageInput], list[str]]:
    """Expand what the caller passed into a flat list of images, plus notes about what was skipped.

    ``images`` is one item or a sequence of items; an item is a file path, a folder (its image files,
    sorted by name; other files are skipped and noted; subfolders are not entered), a PIL image, an
    HxW(xC) array, or an NxHxWxC array (N images). Nothing is opened here (``load_image`` does that),
    but a path that does not exist is an ``ImageLoadError`` at once, and so is a folder with no image.
    """
    if images is None:
        return [], []
    if isinstance(images, (str, os.PathLike, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
        items: list[Any] = [images]
    elif isinstance(images, np.ndarray) and images.ndim == 4:
        items = list(images)
    elif isinstance(images, np.ndarray):
        raise ImageLoadError(f"{what}: array must be HxW, HxWxC or NxHxWxC, got shape {images.shape}")
    elif isinstance(images, Iterable):
        items = list(images)
    else:
        raise AssessInputError(f"{what}: expected paths, folders, PIL images or arrays, got {type(images).__name__}")

    exts = _image_extensions()
    out: list[ImageInput] = []
    notes: list[str] = []
    for obj in items:
        if isinstance(obj, (str, os.PathLike)):
            path = Path(obj).expanduser()
            if path.is_dir():
                files = sorted((p for p in path.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
                found = [p for p in files if p.is_file() and p.suffix.lower() in exts]
                skipped = [p.name + ("/" if p.is_dir() else "") for p in files if p not in found]
                if not found:
                    raise ImageLoadError(f"{what}: folder {path} contains no image files"
                                         + (f" (only {', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''})" if skipped else " (it is empty)"))
                if skipped:
                    shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
                    notes.append(f"{what} folder {path}: skipped {len(skipped)} non-image entr{'y' if len(skipped) == 1 else 'ies'} ({shown})")
                out += [ImageInput(str(p), str(p)) for p in found]
                continue
            if not path.exists():
                raise ImageLoadError(f"{what}: file does not exist: {path}")
            out.append(ImageInput(str(path), str(path)))
        elif isinstance(obj, (Image.Image, np.ndarray)):
            out.append(ImageInput(obj, _label(obj, what, len(out))))
        else:
            raise AssessInputError(f"{what}[{len(out)}]: expected a path, folder, PIL image or array, got {type(obj).__name__}")
    return out, notes
