"""Third-party telemetry off where no environment variable turns it off (those are in paths.QUIET_ENV).

OpenVINO: ``import openvino`` reports a usage event to Google Analytics whenever no consent file exists
under ``~/intel`` (its tools pass ``enable_opt_in_dialog=False``, so a missing file counts as consent),
and ``openvino_telemetry`` reads no environment variable. :func:`import_openvino` imports it with
``openvino_telemetry`` hidden, so OpenVINO binds its own no-op stub (``openvino.tools.ovc.telemetry_stub``,
what it uses where the package is not installed): nothing is sent, nothing prompts, nothing is written
under ``~/intel``. Every facegate import of openvino goes through it.
"""

from __future__ import annotations

import sys
from types import ModuleType

HIDDEN = "openvino_telemetry"


def import_openvino() -> ModuleType:
    """openvino, imported with its telemetry replaced by OpenVINO's own no-op stub (ImportError: not installed).

    Only the import is guarded: OpenVINO binds the stub then, and ``openvino_telemetry`` stays importable
    for anything else. An openvino imported earlier without this function keeps its real telemetry."""
    if "openvino" not in sys.modules:
        before = sys.modules.get(HIDDEN)
        sys.modules[HIDDEN] = None  # type: ignore[assignment]  # an import of it now raises ImportError
        try:
            import openvino  # optional: the OpenVINO backends only; a missing one means their fallback
        finally:
            if before is None:
                sys.modules.pop(HIDDEN, None)
            else:
                sys.modules[HIDDEN] = before
    import openvino  # optional: imported above, with its telemetry stubbed

    return openvino
