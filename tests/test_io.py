"""File helpers: high bit-depth images read at their real brightness, atomic writes with the umask's mode."""
import os
import stat

import numpy as np
import pytest
from PIL import Image

from ovclip.io import (ImageReadError, as_image_tensor, atomic_json_dump, atomic_torch_save, for_each_image,
                       list_images, output_names, read_image)


def test_16bit_png_scaled_to_8_bits_not_clipped(tmp_path):
    values = np.array([[0, 257, 257 * 100], [257 * 200, 65535, 128]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I;16")  # what PIL gives a 16-bit grayscale PNG
    image = read_image(tmp_path / "g16.png")
    assert image.dtype.is_floating_point is False and image.shape == (3, 2, 3)
    expected = np.array([[0, 1, 100], [200, 255, 0]], dtype=np.uint8)  # v / 257, rounded; PIL would give 255s
    for channel in image.numpy():
        np.testing.assert_array_equal(channel, expected)
    np.testing.assert_array_equal(as_image_tensor(Image.open(tmp_path / "g16.png")).numpy(), image.numpy())


def test_32bit_and_float_images_refused_naming_the_file(tmp_path):
    Image.fromarray(np.full((4, 4), 70000, dtype=np.int32)).save(tmp_path / "i32.tif")
    with pytest.raises(ImageReadError, match=r"i32\.tif: 32-bit image"):
        read_image(tmp_path / "i32.tif")
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ImageReadError, match=r"f\.tif: floating-point image"):
        read_image(tmp_path / "f.tif")


def test_8bit_images_unchanged(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png").permute(1, 2, 0).numpy(), rgb)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png")[1].numpy(), rgb[..., 0])


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_json_dump({"a": 1}, tmp_path / "metrics.json")
        atomic_torch_save({"w": 1}, tmp_path / "ckpt.pth")
        with open(tmp_path / "plain.txt", "w") as f:  # what open() gives under this umask
            f.write("x")
    finally:
        os.umask(old)
    expected = stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode)
    assert expected == 0o666 & ~umask
    for name in ("metrics.json", "ckpt.pth"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == expected, name


def _png(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 5, 3), value, np.uint8)).save(path)
    return str(path)


def test_folders_stand_for_their_images_sorted_and_not_recursive(tmp_path):
    b, a = _png(tmp_path / "d" / "b.PNG"), _png(tmp_path / "d" / "a.jpg")
    _png(tmp_path / "d" / "sub" / "c.png")
    (tmp_path / "d" / "notes.txt").write_text("not an image")
    assert list_images([str(tmp_path / "d"), "missing.png"]) == [a, b, "missing.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match=r"folder .*empty holds no image file \(.png, .jpg"):
        list_images([tmp_path / "empty"])


def test_output_names_are_distinct_and_deterministic():
    assert output_names(["a/x.png", "b/x.png", "c/X.jpg", "d/x_1.png", "y.png"]) == ["x", "x_2", "X_3", "x_1", "y"]
    assert output_names(["a/x.png", "b/y.png"]) == ["x", "y"]


def test_for_each_image_reads_folders_and_names_each_image_once(tmp_path, capsys):
    _png(tmp_path / "a" / "x.png", 10)
    _png(tmp_path / "b" / "x.png", 20)
    (tmp_path / "empty").mkdir()
    seen = []

    def handle(path, image, name):
        seen.append((path, int(image[0, 0, 0]), name))
        return f"{path} -> {name}"
    failed = for_each_image([str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "empty"), "gone.png"],
                            handle, tmp_path)
    assert seen == [(str(tmp_path / "a" / "x.png"), 10, "x"), (str(tmp_path / "b" / "x.png"), 20, "x_1")]
    assert failed == [str(tmp_path / "empty"), "gone.png"]
    out = capsys.readouterr().out
    assert "holds no image file" in out and "image file not found: gone.png" in out
    assert '{"images": 3, "failed": 2' in out
