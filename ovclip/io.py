"""Small file helpers: atomic writes, image reading with clear errors, and the image lists of the demo tools.

torch is imported only by the helpers that return or save tensors: image decoding (`rgb_array`) also
serves the torch-free runtime (`ovclip.deploy`)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import UserInputError

if TYPE_CHECKING:
    import torch


class ImageReadError(UserInputError, OSError):
    """An image file is missing or cannot be decoded."""


def atomic_write(path: "str | Path", write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` then rename onto `path`, so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; the result gets the mode open() would give
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    """The process's umask (reading it means setting it: set it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_torch_save(obj: Any, path: "str | Path") -> None:
    """torch.save, atomically."""
    import torch
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def json_ready(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None (JSON's null): a missing metric, such as the
    AP of a class group without ground truth, written as standard JSON."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


def atomic_json_dump(obj: Any, path: "str | Path", **kwargs) -> None:
    """json.dump, atomically; NaN and infinities are written as null (standard JSON has neither)."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            try:
                f.write(json.dumps(obj, allow_nan=False, **kwargs))
            except ValueError:  # only where a value is not finite: convert (results lists take the fast path)
                f.seek(0)
                f.truncate()
                json.dump(json_ready(obj), f, allow_nan=False, **kwargs)
    atomic_write(path, write)


def read_jsonl(path: "str | Path") -> list[dict]:
    """The rows of a JSON-lines progress file (one finished item per line) a resumable job appends to; a
    torn last line (the one being written when the job was killed) is left out. No file: no rows."""
    rows = []
    path = Path(path)
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def open_jsonl_for_append(path: "str | Path"):
    """Open a JSON-lines progress file to append to, first ending a torn last line (a killed job's) so that
    the next row starts on a line of its own."""
    path = Path(path)
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        if torn:
            with open(path, "a", encoding="utf-8") as f:
                f.write("\n")
    return open(path, "a", encoding="utf-8")


def read_image(path: "str | Path") -> "torch.Tensor":
    """An RGB image as a uint8 tensor (3, H, W); missing or corrupt files raise ImageReadError naming the path."""
    import torch
    return torch.from_numpy(read_rgb(path).copy()).permute(2, 0, 1).contiguous()


def read_rgb(path: "str | Path") -> np.ndarray:
    """An RGB image file as a uint8 array (H, W, 3); missing or corrupt files raise ImageReadError naming the
    path."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            return _rgb_array(im, path)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        if isinstance(e, ImageReadError):
            raise
        raise ImageReadError(f"cannot decode image {path}: {e}") from None


def _rgb_array(im: Image.Image, source: "str | Path") -> np.ndarray:
    """An (H, W, 3) uint8 array of a PIL image. 16-bit single-channel images (PIL modes I;16* and I, as
    16-bit PNGs and TIFFs open) are scaled to 8 bits (v / 257: 65535 -> 255), not clipped as PIL's
    convert("RGB") does (which turns most of such an image white); 32-bit and floating-point images have no
    agreed range and are refused. 16-bit colour PNGs open as 8-bit RGB already."""
    if im.mode.startswith("I;16") or im.mode == "I":
        gray = np.asarray(im).astype(np.int64)
        if gray.size and (gray.min() < 0 or gray.max() > 65535):
            raise ImageReadError(f"{source}: 32-bit image with values in [{gray.min()}, {gray.max()}]; "
                                 f"convert it to 8- or 16-bit first")
        gray = ((gray * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "F":
        raise ImageReadError(f"{source}: floating-point image (PIL mode F) has no agreed value range; "
                             f"convert it to 8- or 16-bit first")
    return np.asarray(im.convert("RGB"))


def rgb_array(image: Any) -> np.ndarray:
    """A path, PIL image or HxWx3 array -> an (H, W, 3) array (uint8 from files and PIL images; an array keeps
    its dtype)."""
    if isinstance(image, (str, Path)):
        return read_rgb(image)
    if isinstance(image, Image.Image):
        return _rgb_array(image, "PIL image")
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 image array, got shape {image.shape}")
        return np.ascontiguousarray(image)
    raise TypeError(f"cannot use {type(image).__name__} as an image")


def as_image_tensor(image: Any) -> "torch.Tensor":
    """Accept a path, PIL image, HWC uint8 array or CHW tensor and return a CHW uint8/float tensor."""
    import torch
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a 3xHxW image tensor, got shape {tuple(image.shape)}")
        return image
    array = rgb_array(image)
    # permute + contiguous copies anyway; a read-only array (PIL's) is copied first, as torch asks
    return torch.from_numpy(array if array.flags.writeable else array.copy()).permute(2, 0, 1).contiguous()


def to_unit_float(image: "torch.Tensor") -> "torch.Tensor":
    """uint8 [0, 255] or float [0, 1] image -> float32 in [0, 1]."""
    import torch
    return image.float().div_(255.0) if image.dtype == torch.uint8 else image.float()


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def list_images(paths: "Sequence[str | Path]") -> list[str]:
    """The image files the paths name, in order: a folder stands for the files directly in it (not in its
    subfolders) whose suffix is in IMAGE_SUFFIXES (any case), sorted by name; any other path is kept as
    given, so that a missing or unreadable file is reported by the reader. A folder with no image raises
    ImageReadError naming it and the suffixes looked for."""
    images = []
    for path in paths:
        if not Path(path).is_dir():
            images.append(str(path))
            continue
        found = sorted(str(f) for f in Path(path).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise ImageReadError(f"folder {path} holds no image file ({', '.join(IMAGE_SUFFIXES)}; subfolders are "
                                 f"not searched): name the images or their folder")
        images.extend(found)
    return images


def output_names(paths: "Sequence[str | Path]") -> list[str]:
    """A distinct output name per path: its stem, with `_1`, `_2`, ... added to the second, third, ... path
    of the same stem (compared case-insensitively, as some file systems do), so that `a/x.png` and
    `b/x.png` give `x` and `x_1` and never overwrite each other's outputs."""
    taken = {Path(p).stem.lower() for p in paths}
    seen: set[str] = set()
    names = []
    for path in paths:
        name = stem = Path(path).stem
        n = 0
        while name.lower() in seen or (n and name.lower() in taken):
            n += 1
            name = f"{stem}_{n}"
        seen.add(name.lower())
        names.append(name)
    return names


def for_each_image(paths: "Sequence[str | Path]", handle: Callable[[str, "torch.Tensor", str], str],
                   out_dir: "str | Path") -> list[str]:
    """Read each image (folders stand for the images in them, see `list_images`) and call
    `handle(path, image, name)`, `name` being its distinct output name (`output_names`), printing the line
    it returns; an unreadable image or an empty folder is reported and skipped, the others still run.
    Prints a json summary; returns the paths that failed."""
    images, failed = [], []
    for path in paths:
        try:
            images.extend(list_images([path]))
        except ImageReadError as e:
            print(f"error: {e}")
            failed.append(str(path))
    for path, name in zip(images, output_names(images)):
        try:
            image = read_image(path)
        except ImageReadError as e:
            print(f"error: {e}")
            failed.append(path)
            continue
        print(handle(path, image, name))
    print(json.dumps({"images": len(images), "failed": len(failed), "out_dir": str(out_dir)}))
    return failed
