"""The one image loader every path uses (ingest, training, enrolment, the API).

Whatever arrives — EXIF-rotated, greyscale, palette, RGBA, 16-bit, CMYK — comes out as an 8-bit RGB
array in display orientation, or as a typed error that names the file. Size is checked from the header
before any pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from facegate.components.core.errors import ImageTooLarge, UnreadableImage

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey half-image
Image.MAX_IMAGE_PIXELS = None  # replaced by the explicit, configurable header check in decode_image
DEFAULT_MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class DecodedImage:
    """Pixels plus the facts the manifest records about the file they came from."""

    pixels: np.ndarray  # H x W x 3, uint8, RGB
    sha256: str
    format: str
    source_mode: str

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def decode_image(data: bytes, name: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode bytes into 8-bit RGB; ``name`` is only used in error messages."""
    if not data:
        raise UnreadableImage(name, "empty file (0 bytes)")
    digest = hashlib.sha256(data).hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img: Image.Image = Image.open(io.BytesIO(data))  # exif_transpose below returns a plain Image
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(name, f"{exc} (limit {max_pixels} pixels)") from None
        except UnidentifiedImageError:
            raise UnreadableImage(name, "not a recognised image format") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise UnreadableImage(name, f"cannot open: {exc}") from None
        width, height = img.size
        if width * height > max_pixels:
            raise ImageTooLarge(name, f"{width}x{height} = {width * height} pixels exceeds limit {max_pixels}")
        if width == 0 or height == 0:
            raise UnreadableImage(name, f"zero-sized image {width}x{height}")
        fmt = img.format or "unknown"
        mode = img.mode
        try:
            img.load()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise UnreadableImage(name, f"cannot decode ({fmt}): {exc}") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose an otherwise good image
        pass
    pixels = _to_rgb8(img)
    return DecodedImage(pixels=pixels, sha256=digest, format=fmt, source_mode=mode)


def load_image(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a file into an H x W x 3 uint8 RGB array."""
    return read_image(path, max_pixels).pixels


def read_image(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UnreadableImage(path, "file not found") from None
    except IsADirectoryError:
        raise UnreadableImage(path, "is a directory") from None
    except OSError as exc:
        raise UnreadableImage(path, f"cannot read: {exc.strerror}") from None
    return decode_image(data, path, max_pixels)


def _to_rgb8(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        grey = np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
