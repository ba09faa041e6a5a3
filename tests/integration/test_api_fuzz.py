"""Fuzzing the API from its own OpenAPI schema (schemathesis, in-process ASGI, bounded): no 5xx, every
answer matches the schema (status codes declared, JSON bodies valid against their models), for valid
and invalid inputs, with the key and without it.

Every default check runs but ``positive_data_acceptance``: a schema-valid upload is any bytes, and bytes
that are not an image are rightly refused (415 / 422), which no OpenAPI schema can say.
Bounded: ``MAX_EXAMPLES`` per operation and generation mode, no shrinking; the figures (cases run,
statuses seen, failures) are printed (`pytest -s`).
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from facegate.components.core.settings import load_settings
from facegate.components.gallery import Gallery
from facegate.components.gallery.enrolment import EnrolmentStore, Photo
from facegate.components.service.facade import FaceGate
from facegate.components.web.api.app import create_app
from tests.integration.test_api import KEY, TAU, photo, recognizer  # noqa: F401 - the module-scoped fixture

pytestmark = pytest.mark.integration
MAX_EXAMPLES = 25


def test_api_answers_every_generated_request_within_its_schema(tmp_path, recognizer):
    from hypothesis import Phase, given
    from hypothesis.errors import Unsatisfiable

    store = EnrolmentStore(tmp_path / "gallery")
    gate = FaceGate(
        load_settings(),
        store=store,
        recognizer=recognizer,
        new_gallery=lambda: Gallery.new(
            128, recognizer.embedder_name, recognizer.embedder_version, tau=TAU, target_far=1e-3
        ),
    )
    gate.enrol("amy", "Amy", [Photo(*photo("amy")[:2])])  # a gallery, so the readers get past "no gallery"
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(gate, key=KEY))
    schema.config.generation.update(with_security_parameters=False)  # the key is ours to send, or not
    seen: Counter = Counter()
    failures = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "GET /health",
        "GET /status",
        "POST /identify",
        "POST /verify",
        "GET /employees",
        "POST /employees",
        "DELETE /employees/{employee_id}",
    }
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def run(case):
                n = seen["case", op.method.upper(), op.path] = seen["case", op.method.upper(), op.path] + 1
                with_key = n % 4 != 0  # every fourth case goes without the key
                try:
                    response = case.call_and_validate(
                        headers={"X-API-Key": KEY} if with_key else {}, excluded_checks=[positive_data_acceptance]
                    )
                except (Exception, BaseExceptionGroup) as exc:  # a failed check: collected, the figures are reported
                    failures.append(f"{op.method.upper()} {op.path} [{mode.value}]: {type(exc).__name__}: {exc}"[:2000])
                    return
                seen["status", response.status_code] += 1
                if response.status_code >= 500 or (
                    not with_key and op.path != "/health" and response.status_code != 401
                ):
                    failures.append(f"{op.method.upper()} {op.path}: {response.status_code} {response.text[:300]}")

            try:
                run()
            except Unsatisfiable:  # nothing to negate (/health, /status, /employees take no input)
                assert mode is GenerationMode.NEGATIVE
    cases = sum(v for k, v in seen.items() if k[0] == "case")
    statuses = dict(sorted((k[1], v) for k, v in seen.items() if k[0] == "status"))
    print(
        f"\nschemathesis: {cases} cases over {len(operations)} operations (positive and negative, "
        f"max {MAX_EXAMPLES} each); statuses {statuses}; {len(failures)} failures"
    )
    assert not failures, "\n\n".join(failures[:5])
    assert cases >= len(operations) * 2 and not any(s >= 500 for s in statuses)
