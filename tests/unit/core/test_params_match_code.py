"""params.yaml, the settings classes and the code's registries agree: each test fails when two of them drift.

core/settings.py is the lowest layer and cannot import the registries its choices name, so its Literal
lists are copies; these tests are what keeps the copies true. params.yaml is the one source of values:
no settings field and no run config (TrainConfig, ...) carries a default of its own for a key params holds.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import typing

import pytest
from pydantic import BaseModel

from facegate.components.core.errors import SettingsError
from facegate.components.core.settings import (
    EmbeddingSettings,
    FaceSettings,
    GallerySettings,
    MaskSettings,
    Settings,
    TrainSettings,
    load_settings,
    read_params,
)
from facegate.components.core.settings_sections import BACKBONE_NAMES
from facegate.components.detection.augment import BoxAugmentSettings
from facegate.components.detection.loss import LossWeights
from facegate.components.detection.train import DetectTrainConfig
from facegate.components.detection.two_stage import TwoStageConfig
from facegate.components.embedding.backbones import BACKBONES, FUSION_SEPARATOR, chip_geometry
from facegate.components.embedding.openvino_runtime import BACKENDS
from facegate.components.embedding.precision import PRECISIONS
from facegate.components.embedding.train import TrainConfig
from facegate.components.embedding.triplets import MINERS
from facegate.components.faces.detectors import DETECTORS, FACE_KNOBS
from facegate.components.faces.masks import PALETTES
from facegate.components.gallery.index_kinds import FAISS_DEVICES, INDEX_KINDS
from facegate.components.lifecycle import detector_models
from facegate.components.style.transfer import StyleConfig


def choices(model: type[BaseModel], field: str) -> set:
    """The values a Literal field (or a tuple of Literals) accepts."""
    annotation = model.model_fields[field].annotation
    if typing.get_origin(annotation) is tuple:
        annotation = typing.get_args(annotation)[0]
    return set(typing.get_args(annotation))


# ------------------------------------------------------------------ settings' choices against registries


def test_face_detector_choices_are_the_detector_registry():
    assert detector_models.YoloFaceMaskDetector.name in DETECTORS  # registered from the lifecycle layer
    assert choices(FaceSettings, "detector") == set(DETECTORS)


def test_every_face_detector_takes_its_knobs_from_params():
    """A detector's constructor has no default for a ``faces`` key: the product builds every detector
    through detector_from_settings, which passes params' values."""
    for name, cls in DETECTORS.items():
        defaults = {
            k
            for k, p in inspect.signature(cls).parameters.items()
            if k in FACE_KNOBS and p.default is not inspect.Parameter.empty
        }
        assert not defaults, f"face detector {name!r} has code defaults for params' faces.{sorted(defaults)}"


def test_backbone_choices_are_the_backbone_registry_and_fusions_of_it():
    assert set(BACKBONE_NAMES) == set(BACKBONES)
    assert FUSION_SEPARATOR == "+"  # the settings' pattern joins members with '+'
    base = load_settings()
    for n in range(1, len(BACKBONES) + 1):
        for members in itertools.permutations(sorted(BACKBONES), n):
            name = FUSION_SEPARATOR.join(members)
            assert base.replace({"embedding": {"backbone": name}}).embedding.backbone == name
            chip_geometry(name)  # the registry takes what the settings take (no weights are loaded)
    for bad in ("resnet50", "dlib_resnet+", "dlib_resnet+resnet50"):
        with pytest.raises(SettingsError, match="embedding.backbone"):
            base.replace({"embedding": {"backbone": bad}})
        with pytest.raises(ValueError):
            chip_geometry(bad)


def test_miner_choices_are_the_miner_registry():
    assert choices(TrainSettings, "miner") == set(MINERS)


def test_index_kind_and_faiss_device_choices_are_the_gallery_index_kinds():
    assert choices(GallerySettings, "index_kind") == set(INDEX_KINDS)
    assert choices(GallerySettings, "device") == set(FAISS_DEVICES)


def test_precision_and_mask_style_choices_are_the_code_tables():
    assert choices(EmbeddingSettings, "precision") == set(PRECISIONS)
    assert choices(EmbeddingSettings, "backend") == set(BACKENDS)
    assert choices(MaskSettings, "styles") == set(PALETTES)


# ------------------------------------------------------------------ params.yaml against the settings' fields


def sections(model: type[BaseModel], prefix: str = ""):
    """(dotted name, model) for ``model`` and every settings section under it."""
    yield prefix, model
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from sections(field.annotation, f"{prefix}{field.alias or name}.")


def test_no_settings_field_has_a_default_of_its_own():
    defaulted = [
        f"{prefix}{field.alias or name}"
        for prefix, model in sections(Settings)
        for name, field in model.model_fields.items()
        if not field.is_required()
    ]
    assert not defaulted, f"settings fields with a code default (params.yaml is the one source): {defaulted}"


def test_params_yaml_and_the_settings_fields_name_the_same_keys():
    raw = read_params()
    for prefix, model in sections(Settings):
        section = raw
        for part in filter(None, prefix.rstrip(".").split(".")):
            section = section[part]
        fields = {field.alias or name for name, field in model.model_fields.items()}
        assert set(section) - fields == set(), f"params.yaml keys without a settings field under {prefix!r}"
        assert fields - set(section) == set(), f"settings fields missing from params.yaml under {prefix!r}"


def test_the_committed_params_load():
    load_settings()  # every key present and valid (a missing key fails by name: test_settings)


# ------------------------------------------------------------------ run configs built from params


RUN_CONFIGS = [  # (config, the params sections it is built from)
    (TrainConfig, ("train",)),
    (DetectTrainConfig, ("detection",)),
    (TwoStageConfig, ("detection", "detection.two_stage")),
    (LossWeights, ("detection",)),
    (BoxAugmentSettings, ("detection",)),
    (StyleConfig, ("style",)),
]


@pytest.mark.parametrize(("config", "keys_from"), RUN_CONFIGS, ids=[c.__name__ for c, _ in RUN_CONFIGS])
def test_run_configs_have_no_default_for_a_params_key(config, keys_from):
    raw = read_params()
    keys = {"seed"}
    for dotted in keys_from:
        section = raw
        for part in dotted.split("."):
            section = section[part]
        keys |= set(section)
    defaulted = {
        f.name
        for f in dataclasses.fields(config)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    assert not defaulted & keys, f"{config.__name__} repeats params' values as code defaults: {defaulted & keys}"
