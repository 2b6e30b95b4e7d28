import pytest
import torch
import torch.nn.functional as F

from ovclip.io import to_unit_float
from ovclip.regions import region_embeddings

from .conftest import random_image


def _direct(teacher, image, x0, y0, x1, y1):
    """Encode one crop by hand: slice, resize, normalise pixels, encode, unit length."""
    crop = to_unit_float(image)[:, y0:y1, x0:x1][None]
    crop = F.interpolate(crop, size=(teacher.image_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
    return F.normalize(teacher.encode_images(teacher.normalize_pixels(crop))[0], dim=0)


def test_single_scale_equals_encoding_the_crop(tiny_vit):
    image = random_image()
    boxes = torch.tensor([[10.0, 5.0, 40.0, 45.0], [0.0, 0.0, 80.0, 60.0], [33.0, 20.0, 41.0, 29.0]])
    r = region_embeddings(tiny_vit, image, boxes, scales=(1.0,), batch_size=2)
    for b, e in zip(boxes.long().tolist(), r.embeddings):
        assert torch.allclose(e, _direct(tiny_vit, image, *b), atol=1e-5)


def test_two_scales_sum_and_normalise(tiny_rn):
    image = random_image(64, 96, seed=1)
    r = region_embeddings(tiny_rn, image, [[20.0, 20.0, 40.0, 30.0]], scales=(1.0, 1.5))
    # 1.5x about the centre (30, 25): 30x15 -> [15, 17.5, 45, 32.5] -> pixels [15, 17, 45, 33].
    expected = F.normalize(_direct(tiny_rn, image, 20, 20, 40, 30) + _direct(tiny_rn, image, 15, 17, 45, 33), dim=0)
    assert torch.allclose(r.embeddings[0], expected, atol=1e-5)


def test_batch_size_does_not_change_results(tiny_vit):
    image = random_image(seed=2)
    boxes = torch.tensor([[i, i, i + 20.0, i + 25.0] for i in range(0, 30, 3)])
    a = region_embeddings(tiny_vit, image, boxes, batch_size=1).embeddings
    b = region_embeddings(tiny_vit, image, boxes, batch_size=64).embeddings
    assert torch.allclose(a, b, atol=1e-5)


def test_bad_boxes_are_clipped_or_reported(tiny_vit, caplog):
    image = random_image()
    boxes = torch.tensor([
        [-20.0, -10.0, 30.0, 30.0],       # partly outside: clipped
        [10.0, 10.0, 10.0, 30.0],         # zero width
        [50.0, 50.0, 20.0, 20.0],         # inverted
        [100.0, 100.0, 200.0, 200.0],     # fully outside the 80x60 image
        [float("nan"), 0.0, 5.0, 5.0],    # not finite
        [70.0, 55.0, 80.5, 60.0],         # touches the border
    ])
    r = region_embeddings(tiny_vit, image, boxes)
    assert r.valid.tolist() == [True, False, False, False, False, True]
    assert r.boxes[0].tolist() == [0.0, 0.0, 30.0, 30.0]
    assert torch.allclose(r.embeddings[r.valid].norm(dim=1), torch.ones(2))
    assert torch.all(r.embeddings[~r.valid] == 0)
    assert "4 of 6 boxes" in caplog.text
    assert region_embeddings(tiny_vit, image, torch.zeros(0, 4)).embeddings.shape == (0, 32)


def test_centre_crop_is_clips_preprocess(tiny_vit):
    """crop="centre": the shorter side to the input, then the centre square (OV-DETR's class bank crops with
    CLIP's `preprocess`), where "resize" stretches the whole window (ViLD)."""
    from ovclip.regions import resize_crop
    size = tiny_vit.image_size
    # a 4:1 window whose middle half is white: the centre square is the middle quarter, all white
    image = torch.zeros(3, 60, 100)
    image[:, 10:30, 30:70] = 1.0
    window = (10, 10, 90, 30)
    centre = resize_crop(image, window, size, "centre")
    assert centre.shape == (3, size, size) and torch.allclose(centre, torch.ones_like(centre), atol=1e-5)
    stretched = resize_crop(image, window, size, "resize")
    assert stretched[:, :, 0].max() < 1e-6 and torch.allclose(stretched[:, :, size // 2], torch.ones(3, size))
    tall = resize_crop(image.transpose(1, 2), (10, 10, 30, 90), size, "centre")  # the same, transposed
    assert torch.allclose(tall, torch.ones_like(tall), atol=1e-5)
    # against the reference's own pipeline on an 8-bit crop: PIL's crop, Resize(size, bicubic), CenterCrop(size)
    from PIL import Image
    from torchvision import transforms as T
    rgb = random_image(seed=3)
    x0, y0, x1, y1 = 7, 12, 71, 39
    pil = Image.fromarray(rgb.permute(1, 2, 0).numpy()).crop((x0, y0, x1, y1))
    preprocess = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                            T.ToTensor()])
    ours = resize_crop(to_unit_float(rgb), (x0, y0, x1, y1), size, "centre")
    reference = preprocess(pil)
    assert (ours - reference).abs().mean() < 0.01  # 8-bit rounding and PIL's fixed-point kernels
    whole = resize_crop(to_unit_float(rgb), (x0, y0, x1, y1), size, "resize")
    assert (whole - reference).abs().mean() > 0.1  # the comparison tells the two apart
    r = region_embeddings(tiny_vit, rgb, [[x0, y0, x1, y1]], scales=(1.0,), crop="centre")
    direct = tiny_vit.encode_images(tiny_vit.normalize_pixels(ours[None]))[0]
    assert torch.allclose(r.embeddings[0], F.normalize(direct, dim=0), atol=1e-5)
    with pytest.raises(ValueError, match="crop must be one of"):
        region_embeddings(tiny_vit, rgb, [[x0, y0, x1, y1]], crop="center-ish")
    bilinear = region_embeddings(tiny_vit, rgb, [[x0, y0, x1, y1]], scales=(1.0,), crop="centre",
                                 interpolation="bilinear")
    assert (bilinear.embeddings - r.embeddings).abs().max() > 1e-4
    with pytest.raises(ValueError, match="interpolation must be one of"):
        region_embeddings(tiny_vit, rgb, [[x0, y0, x1, y1]], crop="centre", interpolation="lanczos")
    # a window whose shorter side is the input size already: its pixels are clamped in the result only
    bright = torch.full((3, size, 2 * size), 2.0)
    assert torch.equal(resize_crop(bright, (0, 0, 2 * size, size), size, "centre"), torch.ones(3, size, size))
    assert torch.all(bright == 2.0)
