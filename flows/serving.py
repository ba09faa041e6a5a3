"""The model in service and the gallery it feeds: wiring shared by the CLI, the flows and the API."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from components.calibration import Calibration, calibrate_tau
from components.embedding.backbones import make_backbone
from components.embedding.model import EmbeddingModel, embed_chips
from components.enrolment import EnrolmentStore
from components.faces.chips import cached_chips
from components.gallery import Gallery
from components.ingest import read_manifest
from components.paths import data_dir, repo_root, state_dir
from components.recognition import FaceRecognizer
from components.settings import Settings


def gallery_store() -> EnrolmentStore:
    return EnrolmentStore(repo_root() / "gallery")


def embedder_version_label(name: str, version: str) -> str:
    """How a registered version is named in gallery manifests (``facegate-embedder/3``)."""
    return f"{name}/{version}"


def load_registered_model(name: str, version: str) -> EmbeddingModel:
    import mlflow

    from components.paths import mlflow_tracking_uri

    mlflow.set_tracking_uri(mlflow_tracking_uri())
    return mlflow.pytorch.load_model(f"models:/{name}/{version}")


def service_model(settings: Settings) -> tuple[EmbeddingModel, str | None]:
    """The registry's champion if there is one, else the pretrained backbone with its own head."""
    from components import registry

    name = settings.registry.embedder_model
    champ = registry.champion(name)
    if champ is not None:
        return load_registered_model(name, champ.version), embedder_version_label(name, champ.version)
    return EmbeddingModel(make_backbone(settings.embedding.backbone)), None


@lru_cache(maxsize=2)
def service_recognizer(settings: Settings) -> FaceRecognizer:
    """Loaded once per process and settings: weights and fingerprint cost seconds."""
    model, version = service_model(settings)
    return FaceRecognizer(model, settings, version)


def calibrate(recognizer: FaceRecognizer, settings: Settings,
              heldout: tuple[np.ndarray, np.ndarray] | None = None) -> Calibration:
    """tau for ``gallery.target_far`` from the held-out identities of the calibration dataset.

    ``heldout`` (embeddings by this very model, identities) skips re-embedding when the caller (the
    retraining chain) already has them for that dataset's held-out split.
    """
    if heldout is not None:
        return calibrate_tau(heldout[0], heldout[1], settings.gallery.target_far)
    name = settings.gallery.calibration_dataset
    manifest = read_manifest(data_dir(), name)
    # chips of the whole manifest: the same cache entry the training chain reads, then the held-out rows
    chips = cached_chips(state_dir() / "cache", [data_dir() / p for p in manifest["path"]],
                         manifest["sha256"].tolist(), detector=settings.faces.detector,
                         upsample=settings.faces.upsample)
    held = np.flatnonzero(manifest["split"].to_numpy() != "train")
    emb = embed_chips(recognizer.model, np.asarray(chips.chips[held]), settings.embedding.flip_tta)
    return calibrate_tau(emb, manifest["identity"].to_numpy()[held], settings.gallery.target_far)


def calibrated_gallery(recognizer: FaceRecognizer, settings: Settings, data_version: str | None,
                       heldout: tuple[np.ndarray, np.ndarray] | None = None) -> Gallery:
    """An empty gallery for the recognizer's model with a fresh calibration (its impostor tail stored)."""
    cal = calibrate(recognizer, settings, heldout)
    gallery_store().save_calibration(recognizer.embedder_version, cal)
    return Gallery.new(128, recognizer.embedder_name, recognizer.embedder_version, settings.gallery.index_kind,
                       tau=cal.tau, target_far=cal.target_far, achieved_far=cal.achieved_far,
                       achieved_tar=cal.achieved_tar, data_version=data_version)


def new_gallery_factory(recognizer: FaceRecognizer, settings: Settings, data_version: str | None):
    """A callable making a calibrated empty gallery, called only on the first enrolment."""
    return lambda: calibrated_gallery(recognizer, settings, data_version)


