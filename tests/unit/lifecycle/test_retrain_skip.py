"""When a retraining chain is skipped: data, ingest sources, params and code all as at the champion's chain."""

from __future__ import annotations

import os

from facegate.components.core.settings_sections import DatasetSource
from facegate.components.lifecycle.retrain_skip import (
    Fingerprints,
    code_fingerprint,
    params_fingerprint,
    skip_reason,
    sources_fingerprint,
)

NOW = Fingerprints(data_version="d1", sources="s1", params="p1", code="c1")


def champion_tags(fp: Fingerprints, trained_on: str = "d1") -> dict[str, str]:
    return {**fp.tags(), "data_version": trained_on, "git_commit": "abc"}


def test_unchanged_inputs_skip_with_a_reason():
    reason = skip_reason(NOW, champion_tags(NOW), "champion v3")
    assert reason and "champion v3" in reason and "--force" in reason


def test_any_change_runs():
    for changed in (
        Fingerprints("d2", "s1", "p1", "c1"),
        Fingerprints("d1", "s2", "p1", "c1"),
        Fingerprints("d1", "s1", "p2", "c1"),
        Fingerprints("d1", "s1", "p1", "c2"),
    ):
        assert skip_reason(changed, champion_tags(NOW), "champion v3") is None


def test_the_champion_trained_on_the_post_ingest_version():
    # the chain's skip.data_version is the version before its ingest; its data_version tag the one after
    assert skip_reason(NOW, champion_tags(Fingerprints("d0", "s1", "p1", "c1"), trained_on="d1"), "v") is not None
    assert skip_reason(NOW, champion_tags(NOW, trained_on="d2"), "v") is None


def test_no_champion_or_an_untagged_one_never_skips():
    assert skip_reason(NOW, None, "no champion") is None
    assert skip_reason(NOW, {"data_version": "d1", "git_commit": "abc"}, "champion v1") is None


def test_fingerprints_round_trip_through_tags():
    assert Fingerprints.from_tags(NOW.tags()) == NOW


def test_params_fingerprint_is_order_free_and_value_sensitive():
    assert params_fingerprint({"a": 1, "b": 2}) == params_fingerprint({"b": 2, "a": 1})
    assert params_fingerprint({"a": 1}) != params_fingerprint({"a": 2})


def test_code_fingerprint_follows_python_sources_only(tmp_path):
    (tmp_path / "components").mkdir()
    (tmp_path / "flows").mkdir()
    (tmp_path / "components" / "m.py").write_text("x = 1\n")
    first = code_fingerprint(tmp_path)
    (tmp_path / "components" / "notes.md").write_text("docs do not retrain\n")
    assert code_fingerprint(tmp_path) == first
    (tmp_path / "flows" / "f.py").write_text("y = 2\n")
    assert code_fingerprint(tmp_path) != first


def test_sources_fingerprint_sees_a_new_or_touched_file(tmp_path):
    src = DatasetSource(name="lfw", kind="lfw", path="lfw")
    (tmp_path / "lfw" / "a").mkdir(parents=True)
    img = tmp_path / "lfw" / "a" / "a_0001.jpg"
    img.write_bytes(b"x")
    first = sources_fingerprint([src], tmp_path)
    assert sources_fingerprint([src], tmp_path) == first
    (tmp_path / "lfw" / "a" / "a_0002.jpg").write_bytes(b"y")
    second = sources_fingerprint([src], tmp_path)
    assert second != first
    os.utime(img, ns=(1, 1))
    assert sources_fingerprint([src], tmp_path) != second
