"""A fresh checkout without a trained face-mask detector (an empty MLflow store): `bench detect` and
`detect` answer with the one-line error before Prefect starts a flow run (whose failure log would print
the traceback), and identify reports the mask state as null."""

from __future__ import annotations

import json

import pytest

from tests.conftest import shared_dataset
from tests.integration.test_cli_errors import crop, facegate, seeded  # noqa: F401 - the fixture, shared

pytestmark = pytest.mark.integration
NO_CHAMPION = (
    "error [registry_error]: registry: model 'facegate-detector' has no champion; train one with "
    "`facegate train-detector`"
)


def test_bench_detect_and_detect_are_one_line_without_a_detector(sandbox):
    # PREFECT_API_URL points where nothing listens: a flow run would fail differently, not with this line
    for args in (["bench", "detect"], ["detect", shared_dataset("faceapi-examples") / "bbt2.jpg"]):
        r = facegate(*args)
        assert r.returncode == 2, r.stderr
        assert r.stderr.splitlines() == [NO_CHAMPION], r.stderr
        assert r.stdout == ""


@pytest.mark.slow
def test_identify_mask_state_is_null_without_a_detector(seeded):  # noqa: F811 - the imported fixture
    r = facegate("identify", crop("amy", 2))
    assert r.returncode == 0, r.stderr
    faces = json.loads(r.stdout)["faces"]
    assert faces and all(f["mask"] is None for f in faces)
    assert "Traceback" not in r.stderr
