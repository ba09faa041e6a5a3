import numpy as np
import pytest

from facegate.components.core.errors import ImageTooLarge, UnreadableImage
from facegate.components.core.images import decode_image, load_image, read_image
from tests import images_factory as f


def test_plain_jpeg_is_rgb_uint8(tmp_path):
    img = load_image(f.write_jpeg(tmp_path / "a.jpg", 64, 48))
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8


@pytest.mark.parametrize("name", sorted(f.BAD_FILES))
def test_bad_files_raise_typed_error_naming_the_file(tmp_path, name):
    writer, code = f.BAD_FILES[name]
    path = writer(tmp_path / name)
    with pytest.raises((UnreadableImage, ImageTooLarge)) as exc:
        load_image(path)
    assert exc.value.code == code
    assert str(path) in str(exc.value)


def test_huge_image_refused_before_decoding(tmp_path):
    path = f.huge_png(tmp_path / "huge.png")
    assert path.stat().st_size < 2_000_000
    with pytest.raises(ImageTooLarge, match="30000x30000"):
        load_image(path, max_pixels=50_000_000)


def test_missing_file(tmp_path):
    with pytest.raises(UnreadableImage, match="file not found"):
        load_image(tmp_path / "nope.jpg")


def test_png_alpha_composited_on_white(tmp_path):
    img = load_image(f.png_with_alpha(tmp_path / "a.png"))
    assert img.shape == (40, 40, 3)
    assert tuple(img[0, 0]) == (255, 255, 255)  # transparent -> white background
    assert tuple(img[0, 30]) == (200, 0, 0)  # opaque red stays red


def test_16bit_png_scaled_to_8bit(tmp_path):
    img = load_image(f.png_16bit(tmp_path / "s.png"))
    assert img.dtype == np.uint8 and img.shape == (40, 40, 3)
    assert tuple(img[0, 0]) == (128, 128, 128) and tuple(img[0, 30]) == (255, 255, 255)


def test_cmyk_jpeg_converted_to_rgb(tmp_path):
    img = read_image(f.cmyk_jpeg(tmp_path / "c.jpg"))
    assert img.source_mode == "CMYK" and img.pixels.shape == (40, 40, 3)
    r, g, b = img.pixels[20, 20].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_applied(tmp_path):
    img = load_image(f.exif_rotated_jpeg(tmp_path / "r.jpg"))
    assert img.shape == (60, 40, 3)  # stored 60 wide x 40 high, displayed rotated


def test_greyscale_and_palette(tmp_path):
    from PIL import Image

    Image.new("L", (10, 12), 77).save(tmp_path / "g.png")
    Image.new("P", (10, 12), 3).save(tmp_path / "p.png")
    assert load_image(tmp_path / "g.png").shape == (12, 10, 3)
    assert load_image(tmp_path / "p.png").shape == (12, 10, 3)


def test_decode_bytes_names_the_upload():
    with pytest.raises(UnreadableImage, match="upload.jpg"):
        decode_image(b"garbage", "upload.jpg")


def test_sha256_recorded(tmp_path):
    import hashlib

    path = f.write_jpeg(tmp_path / "a.jpg")
    assert read_image(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
