"""Rebuild the built-in example: four 128x128 images of coloured shapes with COCO boxes.

    python examples/shapes/make.py
"""
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).parent
CATEGORIES = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "triangle"}]


def draw(d: ImageDraw.ImageDraw, kind: str, box: list, colour: tuple) -> None:
    """Draw one filled shape inside box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    if kind == "circle":
        d.ellipse(box, fill=colour)
    elif kind == "square":
        d.rectangle(box, fill=colour)
    else:
        d.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)


def main() -> None:
    """Write images/ and annotations.json next to this file."""
    rng = random.Random(0)
    images, annotations = [], []
    for i in range(4):
        im = Image.new("RGB", (128, 128), tuple(rng.randrange(40, 90) for _ in range(3)))
        d = ImageDraw.Draw(im)
        for _ in range(rng.randint(1, 3)):
            cat = rng.choice(CATEGORIES)
            size = rng.randint(24, 48)
            x, y = rng.randint(0, 128 - size), rng.randint(0, 128 - size)
            draw(d, cat["name"], [x, y, x + size, y + size], tuple(rng.randrange(120, 256) for _ in range(3)))
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cat["id"],
                                "bbox": [x, y, size, size], "area": size * size, "iscrowd": 0})
        name = f"shapes_{i:02d}.png"
        im.save(HERE / "images" / name)
        images.append({"id": i + 1, "file_name": name, "width": 128, "height": 128})
    (HERE / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": CATEGORIES}, indent=1))


if __name__ == "__main__":
    main()
