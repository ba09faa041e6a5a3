"""Local copies of registered embedding models: a one-item CLI command serves a registered champion
without MLflow.

Why: a fresh ``facegate enroll`` against a gallery made by a registered champion spent about 6 of its
15 s importing MLflow and opening its store, only to load the model the gallery's manifest already
names (a promotion moves the champion and the gallery together, under the gallery lock, so the
gallery's model is the champion). Registered versions never change: the first load from MLflow (any
process) keeps the weights here, keyed by tracking URI, model name and version, with their content
fingerprint; a load checks the fingerprint and anything that does not match is ignored (the caller
asks MLflow). Weights only (``weights_only`` loading, no pickled code); the structure is rebuilt from
the backbone's name.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from facegate.components.calibration.store import safe_name
from facegate.components.core.paths import mlflow_tracking_uri, state_dir
from facegate.components.embedding.backbones import make_backbone
from facegate.components.embedding.model import EmbeddingModel
from facegate.components.recognition.recognizer import model_fingerprint

FORMAT = 1


def copy_path(name: str, version: str) -> Path:
    """Where version ``version`` of registered model ``name`` is kept for this tracking store."""
    store = hashlib.sha256(mlflow_tracking_uri().encode()).hexdigest()[:12]
    return state_dir() / "models" / f"{store}-{safe_name(name)}-v{version}.pt"


def save_copy(model: EmbeddingModel, name: str, version: str) -> Path:
    """Keep ``model`` (registered as ``name`` version ``version``); atomic: a reader sees all or nothing."""
    path = copy_path(name, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(
        {
            "format": FORMAT,
            "name": name,
            "version": str(version),
            "backbone": model.backbone.name,
            "fingerprint": model_fingerprint(model),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        },
        tmp,
    )
    tmp.replace(path)
    return path


def load_copy(name: str, version: str) -> EmbeddingModel | None:
    """The kept model, or None when there is none or it is not exactly what was kept (any doubt: None)."""
    path = copy_path(name, version)
    if not path.is_file():
        return None
    try:
        kept = torch.load(path, map_location="cpu", weights_only=True)
        if kept.get("format") != FORMAT or kept.get("name") != name or kept.get("version") != str(version):
            return None
        model = EmbeddingModel(make_backbone(kept["backbone"], pretrained=False))
        model.load_state_dict(kept["state_dict"])
    except Exception:  # noqa: BLE001 - a damaged or foreign file is only a cache miss
        return None
    return model.eval() if model_fingerprint(model) == kept["fingerprint"] else None
