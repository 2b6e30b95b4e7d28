"""Image geometry shared by the torch models and the onnxruntime runtime (`ovclip.deploy`), in plain
Python: the size an image is resized to and the sliding windows that cover it. Imports no torch."""
from __future__ import annotations


def short_side_size(height: int, width: int, short_side: float, multiple: int = 1) -> tuple[int, int]:
    """(H, W) scaled so that the short side becomes `short_side`, each side rounded (half to even) to a
    multiple of `multiple` and at least `multiple`. `ovclip.resize.traced_short_side_size` is the same
    arithmetic on traced sizes."""
    scale = short_side / min(height, width)
    return (max(multiple, round(height * scale / multiple) * multiple),
            max(multiple, round(width * scale / multiple) * multiple))


def windows(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """(y0, x0, y1, x1) crops of side `crop` every `stride` pixels that cover the whole image."""
    def starts(size: int) -> list[int]:
        if size <= crop:
            return [0]
        last = size - crop
        return sorted({*range(0, last, stride), last})
    return [(y, x, min(y + crop, height), min(x + crop, width)) for y in starts(height) for x in starts(width)]
