"""File helpers: high bit-depth images read at their real brightness, atomic writes with the umask's mode."""
import os
import stat

import numpy as np
import pytest
from PIL import Image

from ovclip.io import ImageReadError, as_image_tensor, atomic_json_dump, atomic_torch_save, read_image


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
