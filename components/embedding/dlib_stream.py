"""dlib's serialisation primitives (dlib/serialize.h, dlib/float_details.h): a cursor that decodes
integers, floats, bools, strings and tensors from a ``.dat`` stream, naming the source and byte offset
in every error. The layer records built from them are in dlib_dat.py.
"""

from __future__ import annotations

import math
from typing import NoReturn

import numpy as np

from facegate.components.core.errors import DlibFormatError

# float_details special exponents (dlib/float_details.h)
_IS_INF, _IS_NINF, _IS_NAN = 32000, 32001, 32002


class DlibStream:
    """A cursor over dlib-serialised bytes; every decode error names the source and offset."""

    def __init__(self, data: bytes, source: str = "<bytes>") -> None:
        self.data = memoryview(data).cast("B")
        self.source = source
        self.pos = 0

    # -- helpers -----------------------------------------------------------------------------------
    def fail(self, reason: str, offset: int | None = None) -> NoReturn:
        raise DlibFormatError(self.source, self.pos if offset is None else offset, reason)

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            self.fail(f"unexpected end of data reading {what} ({n} bytes wanted, {len(self.data) - self.pos} left)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    # -- scalars -----------------------------------------------------------------------------------
    def read_int(self, *, signed: bool = True, size: int = 8, what: str = "integer") -> int:
        """dlib's variable-length integer for a C++ type of ``size`` bytes (``signed`` or not)."""
        start = self.pos
        ctrl = self.take(1, what)[0]
        if ctrl & 0x70:  # reserved bits: never written by pack_int
            self.fail(f"bad control byte 0x{ctrl:02x} for {what} (reserved bits set)", start)
        negative = bool(ctrl & 0x80)
        nbytes = ctrl & 0x0F
        if negative and not signed:
            self.fail(f"negative value for unsigned {what}", start)
        if nbytes > size:
            self.fail(f"{what} uses {nbytes} bytes, more than its {size}-byte type", start)
        value = int.from_bytes(self.take(nbytes, what), "little")
        return -value if negative else value

    def read_float(self, what: str = "float") -> float:
        """A ``float_details`` pair: int64 mantissa, then int16 exponent (value = m * 2**e)."""
        start = self.pos
        mantissa = self.read_int(signed=True, size=8, what=f"{what} mantissa")
        exponent = self.read_int(signed=True, size=2, what=f"{what} exponent")
        if exponent < _IS_INF:
            try:
                return math.ldexp(float(mantissa), exponent)
            except OverflowError:
                self.fail(f"{what} overflows a double ({mantissa}*2^{exponent})", start)
        if exponent == _IS_INF:
            return math.inf
        if exponent == _IS_NINF:
            return -math.inf
        return math.nan

    def read_float32(self, what: str = "float") -> float:
        """A float member (C++ ``float``): decoded, then rounded to float32 like dlib does."""
        return float(np.float32(self.read_float(what)))

    def read_bool(self, what: str = "bool") -> bool:
        start = self.pos
        ch = self.take(1, what)[0]
        if ch == ord("1"):
            return True
        if ch == ord("0"):
            return False
        self.fail(f"bad {what} byte 0x{ch:02x} (dlib writes '1' or '0')", start)

    def read_string(self, what: str = "string", max_len: int = 1 << 16) -> str:
        start = self.pos
        n = self.read_int(signed=False, size=8, what=f"{what} length")
        if n > max_len:
            self.fail(f"{what} length {n} is implausible", start)
        raw = bytes(self.take(n, what))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            self.fail(f"{what} is not ASCII: {raw[:40]!r}", start)

    def peek_string(self) -> str | None:
        """The string at the cursor if one plausibly starts there, without consuming it."""
        saved = self.pos
        try:
            n = self.read_int(signed=False, size=8)
            if not 1 <= n <= 64 or self.pos + n > len(self.data):
                return None
            raw = bytes(self.data[self.pos : self.pos + n])
            return raw.decode("ascii") if all(32 <= b < 127 for b in raw) else None
        except DlibFormatError:
            return None
        finally:
            self.pos = saved

    # -- tensors -----------------------------------------------------------------------------------
    def read_tensor(self, what: str = "tensor") -> np.ndarray:
        """``resizable_tensor``: (n, k, nr, nc) float32, C order (dlib's layout is NCHW)."""
        start = self.pos
        version = self.read_int(what=f"{what} version", size=4)
        dims = tuple(self.read_int(what=f"{what} dim", size=8) for _ in range(4))
        if any(d < 0 for d in dims):
            self.fail(f"{what} has negative dimension {dims}", start)
        count = math.prod(dims)
        if version == 2:
            raw = self.take(4 * count, f"{what} data ({dims})")
            return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)
        if version == 1:  # pre-2017 dlib: one float_details per element
            out = np.empty(count, dtype=np.float32)
            for i in range(count):
                out[i] = self.read_float(f"{what}[{i}]")
            return out.reshape(dims)
        self.fail(f"unsupported {what} version {version} (expected 1 or 2)", start)

    def read_alias_tensor(self, what: str = "alias_tensor") -> tuple[int, int, int, int]:
        start = self.pos
        version = self.read_int(what=f"{what} version", size=4)
        if version != 1:
            self.fail(f"unsupported {what} version {version} (expected 1)", start)
        dims = tuple(self.read_int(what=f"{what} dim", size=8) for _ in range(4))
        if any(d < 0 for d in dims):
            self.fail(f"{what} has negative dimension {dims}", start)
        return dims  # type: ignore[return-value]
