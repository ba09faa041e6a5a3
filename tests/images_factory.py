"""Generators of tiny real image files, good and bad, for tests (no fixtures on disk)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def gradient(w: int = 64, h: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


def write_jpeg(path: Path, w: int = 64, h: int = 48, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    gradient(w, h, seed).save(path, "JPEG", quality=90)
    return path


def truncated_jpeg(path: Path) -> Path:
    buf = io.BytesIO()
    gradient(128, 96).save(buf, "JPEG", quality=95)
    data = buf.getvalue()
    path.write_bytes(data[: len(data) // 2])
    return path


def zero_byte(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def text_as_jpg(path: Path) -> Path:
    path.write_text("this is not an image\n")
    return path


def png_with_alpha(path: Path) -> Path:
    arr = np.zeros((40, 40, 4), dtype=np.uint8)
    arr[..., 0] = 200  # red, fully transparent on the left half
    arr[:, 20:, 3] = 255
    Image.fromarray(arr, "RGBA").save(path)
    return path


def png_16bit(path: Path) -> Path:
    arr = np.full((40, 40), 65535, dtype=np.uint16)
    arr[:, :20] = 32896  # 128 * 257
    Image.fromarray(arr).save(path)
    return path


def cmyk_jpeg(path: Path) -> Path:
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(path, "JPEG", quality=95)  # red in CMYK
    return path


def exif_rotated_jpeg(path: Path) -> Path:
    """Stored 60x40 with orientation 6 (rotate 90 CW on display) -> displayed 40x60."""
    img = gradient(60, 40)
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, "JPEG", exif=exif.tobytes())
    return path


def huge_png(path: Path, side: int = 30000) -> Path:
    """A real, valid 1-bit PNG of side x side pixels, written row by row (a few hundred KB)."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


BAD_FILES = {  # name -> (writer, expected error code)
    "truncated.jpg": (truncated_jpeg, "unreadable_image"),
    "empty.jpg": (zero_byte, "unreadable_image"),
    "text.jpg": (text_as_jpg, "unreadable_image"),
    "huge.png": (huge_png, "image_too_large"),
}
ODD_BUT_GOOD = {  # name -> writer; normalised to 8-bit RGB
    "alpha.png": png_with_alpha,
    "sixteen.png": png_16bit,
    "cmyk.jpg": cmyk_jpeg,
    "rotated.jpg": exif_rotated_jpeg,
}
