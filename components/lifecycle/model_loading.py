"""Which embedding model is in service, and loading it: the registry's champion, or the pretrained
model from params while there is none; a registered version from its local copy when one is kept.

Lifecycle, not the service facade: the retraining chain asks for the incumbent too, and the facade
only answers requests with whatever model this module hands it.
"""

from __future__ import annotations

import os
from functools import lru_cache

from facegate.components.core.errors import FacegateError
from facegate.components.core.paths import mlflow_tracking_uri, state_dir, use_mlflow_store
from facegate.components.core.settings import Settings
from facegate.components.embedding.backbones import make_backbone
from facegate.components.embedding.model import EmbeddingModel, upgrade_sface_heads
from facegate.components.gallery import MANIFEST_FILE, GalleryManifest, current_version
from facegate.components.gallery.enrolment import EnrolmentStore
from facegate.components.lifecycle import registry
from facegate.components.lifecycle.model_copies import load_copy, save_copy
from facegate.components.recognition.recognizer import FaceRecognizer


def embedder_version_label(name: str, version: str) -> str:
    """How a registered version is named in gallery manifests (``facegate-embedder/3``)."""
    return f"{name}/{version}"


def load_registered_model(name: str, version: str) -> EmbeddingModel:
    """Version ``version`` of ``name``: the local copy when one is kept (lifecycle/model_copies.py),
    else from MLflow, keeping a copy for the next process."""
    model = load_copy(name, version)
    if model is not None:
        return model
    import mlflow  # heavy: MLflow takes seconds to import; only the paths that track or load models need it

    use_mlflow_store()
    model = mlflow.pytorch.load_model(f"models:/{name}/{version}")
    if isinstance(model, EmbeddingModel):  # the copy rebuilds this structure from the backbone's name
        model = upgrade_sface_heads(model)
        try:
            save_copy(model, name, version)
        except OSError:  # a read-only state folder: serve anyway, MLflow again next time
            pass
    return model


def tracking_store_exists() -> bool:
    """False on a fresh clone (the default local MLflow store not created yet): no registry, so no
    champion, and the first enrolment does not wait for MLflow to create its database."""
    return bool(os.environ.get("MLFLOW_TRACKING_URI")) or (state_dir() / "mlflow.db").is_file()


def incumbent_model(settings: Settings, backbone: str | None = None) -> tuple[EmbeddingModel, str | None]:
    """The model in service and its registered version: the champion, or the pretrained ``backbone``
    (default: params) with its own head and version None while the registry has no champion."""
    name = settings.registry.embedder_model
    champ = registry.champion(name) if tracking_store_exists() else None
    if champ is not None:
        return load_registered_model(name, champ.version), champ.version
    return EmbeddingModel(make_backbone(backbone or settings.embedding.backbone)), None


def service_configuration(settings: Settings) -> dict:
    """Backbone and training mode of the model in service: the champion's (its registration tags), else
    params' (the pretrained model the service falls back to)."""
    champ = registry.champion(settings.registry.embedder_model)
    if champ is not None and champ.tags.get("backbone"):
        return {
            "backbone": champ.tags["backbone"],
            "mode": champ.tags.get("mode", settings.embedding.mode),
            "source": f"champion v{champ.version}",
        }
    return {"backbone": settings.embedding.backbone, "mode": "pretrained", "source": "pretrained (no champion)"}


def service_model(settings: Settings) -> tuple[EmbeddingModel, str | None]:
    """The model in service and its gallery label (None for the unregistered pretrained model)."""
    model, version = incumbent_model(settings)
    return model, embedder_version_label(settings.registry.embedder_model, version) if version else None


def service_recognizer(settings: Settings) -> FaceRecognizer:
    """Loaded once per process, settings and state: weights and fingerprint cost seconds. The registry
    (tracking URI) and the state folder are part of the key: a process that points at another store (a
    sandbox, a test, a benchmark's chain) gets that store's champion, never the one it loaded before."""
    return _service_recognizer(settings, mlflow_tracking_uri(), str(state_dir()))


def forget_service_recognizer() -> None:
    """Drop the loaded models: the champion moved (a promotion, a rollback, a rebuilt gallery)."""
    _service_recognizer.cache_clear()


@lru_cache(maxsize=2)
def _service_recognizer(settings: Settings, tracking_uri: str, state: str) -> FaceRecognizer:
    model, version = service_model(settings)
    return FaceRecognizer(model, settings, version)


def gallery_recognizer(settings: Settings, store: EnrolmentStore) -> FaceRecognizer | None:
    """The model that made the current gallery, without asking the registry: the pretrained one, or a
    registered version whose local copy is kept (facegate.components.lifecycle.model_copies); None when the gallery is
    missing, its model's copy is not kept, or the weights no longer match its fingerprint.

    A promotion moves the champion and switches the gallery together (under the gallery lock), so the
    gallery's model is the one in service. A one-item CLI command then skips MLflow entirely (importing
    it and opening its store cost more than the command's own work)."""
    try:
        vdir = store.index_dir / current_version(store.index_dir)
        manifest = GalleryManifest.from_json((vdir / MANIFEST_FILE).read_text(encoding="utf-8"), vdir / MANIFEST_FILE)
    except (FacegateError, OSError, UnicodeDecodeError):
        return None
    if not manifest.embedder_version.startswith("sha256:"):
        name, _, version = manifest.embedder_version.rpartition("/")
        if name != settings.registry.embedder_model or not version:
            return None
        model = load_copy(name, version)
        if model is None or model.backbone.name != manifest.embedder_name:
            return None
        return FaceRecognizer(model, settings, manifest.embedder_version)
    try:
        recognizer = FaceRecognizer(EmbeddingModel(make_backbone(manifest.embedder_name)), settings)
    except (KeyError, ValueError, FacegateError):  # a backbone this code does not have
        return None
    return recognizer if recognizer.embedder_version == manifest.embedder_version else None
