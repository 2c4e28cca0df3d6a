"""lit_hpcm.data.images: mode/bit-depth conversion, 8-bit output, file errors, atomic writes, folder search."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageFile

from lit_hpcm.data.images import (
    IMAGE_SUFFIXES,
    describe_image,
    find_images,
    image_to_tensor,
    open_image,
    quantize_to_8bit,
    save_image,
    tensor_to_image,
)


@pytest.fixture
def rgb_image():
    """A 5x4 RGB image with distinct, irregular pixel values."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8))


def rgb_values(img):
    return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).float() / 255


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"])
def test_every_8bit_mode_becomes_rgb_in_unit_range(rgb_image, mode):
    img = rgb_image.convert(mode)
    x = image_to_tensor(img)
    assert x.shape == (3, 4, 5) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    torch.testing.assert_close(x, rgb_values(img))


@pytest.mark.parametrize("mode", ["1", "L", "LA"])
def test_grayscale_is_replicated(rgb_image, mode):
    x = image_to_tensor(rgb_image.convert(mode))
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_alpha_is_dropped_not_composited(rgb_image):
    rgba = rgb_image.convert("RGBA")
    rgba.putalpha(0)
    assert torch.equal(image_to_tensor(rgba), image_to_tensor(rgb_image))


def test_palette_goes_through_its_palette():
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, 255, 128, 0] + [0] * 762)
    img.putpixel((1, 0), 1)
    x = image_to_tensor(img)
    torch.testing.assert_close(x[:, 0, 1], torch.tensor([1.0, 128 / 255, 0.0]))


def test_16bit_png_scales_by_65535(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)).save(path)
    img = open_image(path)
    assert img.mode.startswith("I;16")
    assert describe_image(img) == {"mode": img.mode, "bits": 16, "size": (3, 1)}
    x = image_to_tensor(img)
    assert x.shape == (3, 1, 3)
    torch.testing.assert_close(x[:, 0], torch.tensor([0.0, 32768 / 65535, 1.0]).expand(3, 3))


@pytest.mark.parametrize("mode", ["I;16B", "I;16L"])
def test_16bit_byte_orders(mode):
    values = np.array([[0, 65535]], dtype=">u2" if mode == "I;16B" else "<u2")
    img = Image.frombytes(mode, (2, 1), values.tobytes())
    torch.testing.assert_close(image_to_tensor(img)[0, 0], torch.tensor([0.0, 1.0]))


def test_mode_I_holding_16bit_pgm_data(tmp_path):
    path = tmp_path / "g16.pgm"
    Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)).save(path)
    img = open_image(path)
    assert img.mode == "I" and describe_image(img)["bits"] == 16
    torch.testing.assert_close(image_to_tensor(img)[0, 0], torch.tensor([0.0, 1.0]))


def test_mode_I_with_32bit_values_uses_the_int32_range():
    info = np.iinfo(np.int32)
    img = Image.fromarray(np.array([[info.min, 0, info.max]], dtype=np.int32))
    assert describe_image(img)["bits"] == 32
    torch.testing.assert_close(image_to_tensor(img)[0, 0], torch.tensor([0.0, 0.5, 1.0]))


def test_float_mode_is_clipped():
    img = Image.fromarray(np.array([[-0.5, 0.25, 2.0, np.nan]], dtype=np.float32))
    assert describe_image(img)["bits"] == 32
    torch.testing.assert_close(image_to_tensor(img)[1, 0], torch.tensor([0.0, 0.25, 1.0, 0.0]))


def test_tensor_to_image_rounds_half_to_even_and_clamps():
    values = torch.tensor([-0.2, 0.5 / 255, 1.5 / 255, 100.4 / 255, 1.3])
    x = values.view(1, 1, 5).expand(3, 1, 5)
    img = tensor_to_image(x)
    assert img.mode == "RGB" and img.size == (5, 1)
    assert np.array(img)[0, :, 0].tolist() == [0, 0, 2, 100, 255]
    assert quantize_to_8bit(x).dtype == torch.uint8


def test_tensor_to_image_gray_is_pil_luma(rgb_image):
    x = image_to_tensor(rgb_image).unsqueeze(0)
    gray = tensor_to_image(x, mode="L")
    assert gray.mode == "L"
    assert np.array_equal(np.array(gray), np.array(rgb_image.convert("L")))


@pytest.mark.parametrize("shape", [(1, 4, 4), (2, 3, 4, 4), (3, 4)])
def test_tensor_to_image_rejects_other_shapes(shape):
    with pytest.raises(ValueError, match="shape"):
        tensor_to_image(torch.zeros(shape))


def test_tensor_to_image_rejects_other_modes():
    with pytest.raises(ValueError, match="mode"):
        tensor_to_image(torch.zeros(3, 2, 2), mode="RGBA")


@settings(max_examples=25, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 6), st.just(3))))
def test_8bit_rgb_round_trip_is_exact(pixels):
    img = Image.fromarray(pixels)
    assert np.array_equal(np.array(tensor_to_image(image_to_tensor(img))), pixels)


def _truncated_copy(path, fraction=0.5):
    data = path.read_bytes()
    broken = path.with_name("truncated_" + path.name)
    broken.write_bytes(data[: int(len(data) * fraction)])
    return broken


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_open_image_rejects_truncated_files(tmp_path, suffix):
    rng = np.random.default_rng(1)
    good = tmp_path / f"noise{suffix}"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    broken = _truncated_copy(good)
    with pytest.raises(ValueError, match=str(broken)) as info:
        open_image(broken)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def _bad_path(path, kind):
    """``path`` turned into one kind of non-image: missing, a directory, text, or an empty file."""
    if kind == "directory":
        path.mkdir()
    elif kind == "text":
        path.write_text("not an image")
    elif kind == "empty":
        path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    "kind, reason",
    [("missing", "no such file"), ("directory", "directory"), ("text", "cannot read"), ("empty", "cannot read")],
)
def test_open_image_errors_name_the_file(tmp_path, kind, reason):
    path = _bad_path(tmp_path / "photo.png", kind)
    with pytest.raises(ValueError, match=reason) as info:
        open_image(path)
    assert str(info.value).startswith(str(path))


def test_save_image_round_trip_and_no_temp_left(tmp_path, rgb_image):
    out = save_image(image_to_tensor(rgb_image), tmp_path / "sub" / "out.png")
    assert out == tmp_path / "sub" / "out.png"
    assert np.array_equal(np.array(open_image(out)), np.array(rgb_image))
    assert [p.name for p in out.parent.iterdir()] == ["out.png"]


def test_save_image_format_follows_suffix(tmp_path, rgb_image):
    assert open_image(save_image(rgb_image, tmp_path / "a.JPG")).format == "JPEG"
    assert open_image(save_image(rgb_image, tmp_path / "noext")).format == "PNG"


def test_save_image_replaces_existing_file(tmp_path, rgb_image):
    path = tmp_path / "x.png"
    save_image(torch.zeros(3, 2, 2), path)
    save_image(rgb_image, path)
    assert open_image(path).size == rgb_image.size


@pytest.mark.parametrize("name", ["blocker/out.png", "out.unknownsuffix"])
def test_save_image_unwritable_path_is_value_error(tmp_path, rgb_image, name):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(ValueError, match="out"):
        save_image(rgb_image, tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_save_image_mode_the_format_cannot_store(tmp_path, rgb_image):
    with pytest.raises(ValueError, match="cannot write"):
        save_image(rgb_image.convert("RGBA"), tmp_path / "x.jpg")
    assert list(tmp_path.iterdir()) == []


def test_find_images_sorted_recursive_case_insensitive(tmp_path):
    for name in ["b.png", "a.JPG", "sub/c.tiff", "notes.txt", "sub/deeper/d.webp"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.png").mkdir()
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a.JPG", "b.png", "sub/c.tiff", "sub/deeper/d.webp"]
    assert [p.name for p in find_images(tmp_path, recursive=False)] == ["a.JPG", "b.png"]


def test_find_images_missing_and_empty_folders(tmp_path):
    with pytest.raises(ValueError, match="does not exist") as info:
        find_images(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no image files") as info:
        find_images(tmp_path)
    assert str(tmp_path) in str(info.value) and all(s in str(info.value) for s in IMAGE_SUFFIXES)
