"""The process-wide cache of the model in service is per store: a process that points at another
registry (a sandbox, a benchmark's chain, the next test) must not be served the model it loaded for the
first one (stop 34's CI: a champion registered in one test's sandbox answered another test's bench)."""

from __future__ import annotations

import os

from facegate.components.core.settings import load_settings
from facegate.components.lifecycle import model_loading


def test_the_loaded_model_is_kept_per_store_and_forgotten_on_request(tmp_path, monkeypatch):
    loads: list[str] = []

    def fake_service_model(settings):  # counts loads; the real loader reads the store named by the env
        loads.append(model_loading.mlflow_tracking_uri())
        return object(), None

    monkeypatch.setattr(model_loading, "service_model", fake_service_model)
    monkeypatch.setattr(model_loading, "FaceRecognizer", lambda model, settings, version: (model, version))
    model_loading.forget_service_recognizer()
    settings = load_settings()
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "a"))
    first = model_loading.service_recognizer(settings)
    assert model_loading.service_recognizer(settings) is first and len(loads) == 1
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "b"))
    other = model_loading.service_recognizer(settings)
    assert other is not first and len(loads) == 2 and str(tmp_path / "b") in loads[1]
    model_loading.forget_service_recognizer()
    model_loading.service_recognizer(settings)
    assert len(loads) == 3
    model_loading.forget_service_recognizer()


def test_pointing_mlflow_at_a_store_leaves_the_users_variable_as_it_was(tmp_path, monkeypatch):
    """MLflow's set_tracking_uri writes MLFLOW_TRACKING_URI, which facegate reads as the user's choice:
    after a sandbox's store, FACEGATE_HOME must decide again (and a user's own URI must stay)."""
    import mlflow

    from facegate.components.core.paths import mlflow_tracking_uri, use_mlflow_store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "a"))
    first = use_mlflow_store()
    assert mlflow.get_tracking_uri() == first and "MLFLOW_TRACKING_URI" not in os.environ
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "b"))
    assert mlflow_tracking_uri() != first and str(tmp_path / "b") in mlflow_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    use_mlflow_store("sqlite:///" + str(tmp_path / "other.db"))
    assert mlflow_tracking_uri() == "http://127.0.0.1:5999"
