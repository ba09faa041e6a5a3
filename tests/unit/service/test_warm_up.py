"""Warming up is best effort: a part that cannot load is reported and the server still starts (the
first request that needs it answers the error itself)."""

from __future__ import annotations

from types import SimpleNamespace

from facegate.components.core.errors import RegistryError
from facegate.components.service.warm_up import warm_up


class _Unreachable:
    settings = None
    liveness = SimpleNamespace(mode="enforce", check=lambda frame, boxes: (_ for _ in ()).throw(OSError("no weights")))

    @property
    def recognizer(self):  # noqa: ANN201 - the registry behind it is down
        raise RegistryError("the MLflow tracking server does not answer")


def test_warm_up_reports_what_could_not_load_and_returns():
    out = warm_up(_Unreachable())  # type: ignore[arg-type]
    assert str(out["recognizer"]).startswith("not warmed:") and "does not answer" in str(out["recognizer"])
    assert str(out["pad"]).startswith("not warmed:") and "no weights" in str(out["pad"])
    assert "full_embedding" not in out and "cheap_pass" not in out
