"""What the units of a served or registered model learn: the version to look inside, and the grids in MLflow.

``explain_model`` backs ``facegate explain units``: the model (a registered version, the one in service,
or the pretrained / ImageNet network it starts from), its backbone networks
(facegate.components.explain.networks), a seeded sample of the public training set it learnt from, and
the grids. ``log_embedder_grids`` and ``log_detector_grids`` let the retraining chain and
``train-detector`` put each registered version's grids into the run its model was logged in, under
``explain/`` (params ``explain.log_to_mlflow``; a small run: ``explain.mlflow_images`` images,
``explain.mlflow_units_per_layer`` units), so MLflow's run page shows what a challenger's units answer to.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from torch import nn

from facegate.components.core.errors import DatasetError, RegistryError, SettingsError
from facegate.components.core.paths import datasets_root, state_dir
from facegate.components.core.settings import Settings
from facegate.components.detection.data import DetectionSample
from facegate.components.embedding.backbones import chip_geometry, make_backbone
from facegate.components.embedding.model import EmbeddingModel
from facegate.components.explain.images import (
    ImageSet,
    chip_images,
    detection_images,
    facemask_training_images,
    lfw_training_chips,
    lfw_training_crops,
)
from facegate.components.explain.networks import (
    Network,
    detector_input,
    detector_network,
    embedder_networks,
    pad_networks,
    resolve_layers,
)
from facegate.components.explain.pipeline import ExplainOptions, compare_units, explain_units
from facegate.components.lifecycle import registry
from facegate.components.lifecycle.detector_models import load_model_uri
from facegate.components.lifecycle.model_loading import load_registered_model, tracking_store_exists
from facegate.components.lifecycle.pad_models import FINETUNED, load_pad_version
from facegate.components.lifecycle.training_data import TrainingData
from facegate.components.networks.mobilenet_v2 import load_mobilenet_v2_imagenet
from facegate.components.pad.minifasnet import MiniFASNet, PadNet, load_pad_net
from facegate.components.pad.models import PAD_MODELS

__all__ = ["KINDS", "PRETRAINED", "Subject", "explain_model", "log_detector_grids", "log_embedder_grids"]

KINDS = ("embedder", "detector", "pad")
PRETRAINED = "pretrained"  # --version pretrained: the network the model starts from (ImageNet for the detector)
ARTIFACT_PATH = "explain"
Log = Callable[[str], None]


@dataclass
class Subject:
    """One version of a model to look inside: its backbone networks and what they see."""

    kind: str
    label: str  # facegate-embedder/3, pretrained dlib_resnet+sface, imagenet mobilenet_v2
    networks: list[Network]
    model: nn.Module | None  # the detector (its input depends on its variant); None: ImageNet's network
    note: str = ""


def options(settings: Settings, *, small: bool = False, progress: bool = True) -> ExplainOptions:
    """Params' explain options; ``small``: the MLflow logging's fewer units."""
    e = settings.explain
    return ExplainOptions(
        e.mlflow_units_per_layer if small else e.units_per_layer,
        settings.seed,
        e.top_k,
        e.batch_size,
        e.patch_px,
        progress,
    )


def _embedder(settings: Settings, version: str | None) -> Subject:
    name = settings.registry.embedder_model
    if version == PRETRAINED:
        backbone = settings.embedding.backbone
        model, label = EmbeddingModel(make_backbone(backbone)), f"pretrained {backbone}"
    elif version is not None:
        registry.get_version(name, version)  # RegistryError naming the version when there is none
        model, label = load_registered_model(name, version), f"{name}/{version}"
    else:
        champ = registry.champion(name) if tracking_store_exists() else None
        if champ is None:
            return _embedder(settings, PRETRAINED)
        model, label = load_registered_model(name, champ.version), f"{name}/{champ.version} (champion)"
    return Subject("embedder", label, embedder_networks(model.eval()), model)


def _detector(settings: Settings, version: str | None) -> Subject:
    name = settings.detection.registered_model
    if version is None:
        champ = registry.champion(name) if tracking_store_exists() else None
        if champ is None:
            subject = _detector(settings, PRETRAINED)
            subject.note = "no trained detector in the registry: the ImageNet MobileNetV2 it starts from"
            return subject
        version = champ.version
    if version == PRETRAINED:
        return Subject("detector", "imagenet mobilenet_v2", [detector_network(None, load_mobilenet_v2_imagenet)], None)
    registry.get_version(name, version)  # RegistryError naming the version when there is none
    model = load_model_uri(f"models:/{name}/{version}")
    return Subject("detector", f"{name}/{version}", [detector_network(model, load_mobilenet_v2_imagenet)], model)


def _pad(settings: Settings, version: str | None) -> Subject:
    """The PAD network: a registered fine-tuned version, the one in service (``pad.model``), or the shipped
    pair (``pretrained``)."""
    pad = settings.pad
    if version is None and pad.model == FINETUNED:
        champ = registry.champion(pad.registered_model) if tracking_store_exists() else None
        if champ is None:
            raise RegistryError(
                f"registry: PAD model {pad.registered_model!r} has no champion (pad.model is "
                f"{FINETUNED}); --version pretrained shows the shipped pair"
            )
        version = champ.version
    if version is None or version == PRETRAINED:
        shipped = pad.model if version is None else "minifasnet_pair"
        net, label = load_pad_net(getattr(PAD_MODELS[shipped], "specs")), f"shipped {shipped}"  # noqa: B009
    else:
        net, label = load_pad_version(pad.registered_model, version)[0], f"{pad.registered_model}/{version}"
    return Subject("pad", label, pad_networks(net), net)


def load_subject(settings: Settings, kind: str, version: str | None) -> Subject:
    if kind == "embedder":
        return _embedder(settings, version)
    if kind == "detector":
        return _detector(settings, version)
    if kind == "pad":
        return _pad(settings, version)
    raise SettingsError(f"--model: {kind!r} is not one of {', '.join(KINDS)}")


def _source(settings: Settings, name: str, kind: str) -> Path:
    for src in settings.ingest.datasets:
        if src.name == name:
            if src.kind != kind:
                raise DatasetError(f"ingest.datasets: {name!r} is a {src.kind} source; explain reads a {kind} one")
            return datasets_root() / src.path
    raise DatasetError(f"ingest.datasets: no source named {name!r}")


def training_images(settings: Settings, subject: Subject, n: int, log: Log = lambda m: None) -> ImageSet:
    """A seeded sample of the public training set of ``subject`` (read from the source folder)."""
    if subject.kind == "embedder":
        backbone = cast(EmbeddingModel, subject.model).backbone.name
        return lfw_training_chips(
            _source(settings, settings.retrain.dataset, "lfw"),
            n,
            settings.seed,
            val_fraction=settings.ingest.val_fraction,
            min_train_images=settings.validate_.min_images_per_train_identity,
            detector=settings.faces.detector,
            upsample=settings.faces.upsample,
            geometry=chip_geometry(backbone),
            cache_dir=state_dir() / "cache",
            progress=log,
        )
    if subject.kind == "pad":
        members = cast("list[MiniFASNet]", list(cast(PadNet, subject.model).members))
        return lfw_training_crops(
            _source(settings, settings.retrain.dataset, "lfw"),
            n,
            settings.seed,
            [m.spec for m in members],
            val_fraction=settings.ingest.val_fraction,
            min_train_images=settings.validate_.min_images_per_train_identity,
            detector=settings.faces.detector,
            upsample=settings.faces.upsample,
            cache_dir=state_dir() / "cache",
            max_pixels=settings.images.max_pixels,
            progress=log,
        )
    two = settings.detection.two_stage
    return facemask_training_images(
        _source(settings, settings.detection.dataset, "voc"),
        n,
        settings.seed,
        val_fraction=settings.ingest.val_fraction,
        inp=detector_input(subject.model, two.crop_size, two.crop_context),
        max_pixels=settings.images.max_pixels,
    )


def explain_model(
    settings: Settings,
    kind: str,
    out_dir: Path,
    *,
    version: str | None = None,
    layers: Sequence[str] | None = None,
    n_images: int | None = None,
    compare: tuple[str, str] | None = None,
    progress: bool = True,
    log: Log = lambda m: None,
) -> dict:
    """``facegate explain units``: grids and ``units.json`` of one version (default: the one in service),
    or with ``compare``, the same units of two versions side by side (``compare.json``)."""
    t0 = time.perf_counter()
    first = load_subject(settings, kind, compare[0] if compare else version)
    chosen = resolve_layers(first.networks, layers, settings.explain.layers)
    n = n_images or settings.explain.images
    images = training_images(settings, first, n, log)
    meta = {"model": kind, "version": first.label, **({"note": first.note} if first.note else {})}
    log(f"{first.label}: {len(images)} images ({images.description})")
    if compare is None:
        doc = explain_units(first.networks, chosen, images, out_dir, options(settings, progress=progress), meta)
    else:
        second = load_subject(settings, kind, compare[1])
        if kind == "detector" and detector_input(first.model, 0, 0) != detector_input(second.model, 0, 0):
            raise RegistryError(f"{first.label} and {second.label} see different inputs (variants): not comparable")
        doc = compare_units(
            first.networks,
            second.networks,
            (first.label, second.label),
            chosen,
            images,
            out_dir,
            options(settings, progress=progress),
            {**meta, "versions": [first.label, second.label]},
        )
    doc["total_seconds"] = round(time.perf_counter() - t0, 2)
    return doc


def _log_grids(
    run_id: str, label: str, make: Callable[[], tuple[Subject, ImageSet]], settings: Settings, warn: Log
) -> float | None:
    """Explain what ``make()`` returns (params' small MLflow run) into ``run_id``'s ``explain/``: the seconds
    it took, also logged as the run's ``explain_seconds``. The grids are a diagnostic of a model already
    registered: any failure is reported through ``warn`` and never fails the caller."""
    if not settings.explain.log_to_mlflow:
        return None
    t0 = time.perf_counter()
    try:
        subject, images = make()
        chosen = resolve_layers(subject.networks, None, settings.explain.layers)
        with tempfile.TemporaryDirectory() as tmp:
            explain_units(
                subject.networks,
                chosen,
                images,
                tmp,
                options(settings, small=True, progress=False),
                {"model": subject.kind, "version": subject.label},
            )
            client = registry.mlflow_client()
            client.log_artifacts(run_id, tmp, ARTIFACT_PATH)
            seconds = time.perf_counter() - t0
            client.log_metric(run_id, "explain_seconds", seconds)
    except Exception as exc:  # noqa: BLE001 - a diagnostic must not undo a registration
        warn(f"explain: the grids of {label} were not logged: {type(exc).__name__}: {exc}")
        return None
    return seconds


def log_embedder_grids(
    model: EmbeddingModel, label: str, data: TrainingData, run_id: str, settings: Settings, warn: Log = lambda m: None
) -> float | None:
    """The chain's registered embedder: grids over its own training chips into ``run_id``; None when off."""

    def make() -> tuple[Subject, ImageSet]:
        images = chip_images(
            data.chips.chips,
            data.chips.table["path"].tolist(),
            data.train_rows,
            settings.explain.mlflow_images,
            settings.seed,
            f"{data.dataset} training identities' chips",
        )
        return Subject("embedder", label, embedder_networks(model), model), images

    return _log_grids(run_id, label, make, settings, warn)


def log_detector_grids(
    model: nn.Module,
    label: str,
    train: list[DetectionSample],
    run_id: str,
    settings: Settings,
    warn: Log = lambda m: None,
) -> float | None:
    """``train-detector``'s registered detector: grids over its training images into ``run_id``; None when off."""

    def make() -> tuple[Subject, ImageSet]:
        two = settings.detection.two_stage
        images = detection_images(
            lambda j: train[j].image,
            [s.path for s in train],
            [s.boxes for s in train],
            detector_input(model, two.crop_size, two.crop_context),
            settings.explain.mlflow_images,
            settings.seed,
            "face-mask training images",
        )
        return Subject("detector", label, [detector_network(model, load_mobilenet_v2_imagenet)], model), images

    return _log_grids(run_id, label, make, settings, warn)
