"""The one settings loader: params.yaml becomes a typed, frozen Settings object.

params.yaml is the one source of values: no field here has a default, so a key missing from the file,
an unknown key or a bad value fails at start with the dotted key name, and no code path (a test's
``Settings()`` included) can run a configuration the product never runs. A variation is params plus
explicit overrides: ``load_settings(overrides={...})`` or ``settings.replace({...})``.

Choices that name a registry entry (face detectors, backbones, miners, index kinds) are spelled out in
settings_sections.py for an early, typed error; this lowest layer cannot import those registries, so
tests/unit/core/test_params_match_code.py fails when the two drift.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from facegate.components.core.errors import SettingsError
from facegate.components.core.paths import params_path
from facegate.components.core.settings_sections import (
    AccessLogSettings,
    ApiSettings,
    AugmentSettings,
    CaptureSettings,
    ConsoleSettings,
    DetectionSettings,
    DistributedSettings,
    EmbeddingSettings,
    ExplainSettings,
    FaceSettings,
    GallerySettings,
    ImageSettings,
    IngestSettings,
    MaskSettings,
    PadSettings,
    RecognitionSettings,
    RegistrySettings,
    RetrainSettings,
    StyleSettings,
    TrackingSettings,
    TrainSettings,
    ValidateSettings,
    _Strict,
)


class Settings(_Strict):
    seed: int
    images: ImageSettings
    ingest: IngestSettings
    validate_: ValidateSettings = Field(alias="validate")
    faces: FaceSettings
    embedding: EmbeddingSettings
    recognition: RecognitionSettings
    augment: AugmentSettings
    masks: MaskSettings
    gallery: GallerySettings
    api: ApiSettings
    access_log: AccessLogSettings
    capture: CaptureSettings
    console: ConsoleSettings
    train: TrainSettings
    tracking: TrackingSettings
    registry: RegistrySettings
    retrain: RetrainSettings
    detection: DetectionSettings
    distributed: DistributedSettings
    style: StyleSettings
    pad: PadSettings
    explain: ExplainSettings

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def flat(self) -> dict[str, Any]:
        """Dotted-key view (``ingest.val_fraction``) for MLflow params, so runs line up in the UI."""
        return flatten(self.model_dump(by_alias=True, mode="json"))

    def replace(self, overrides: Mapping[str, Any]) -> Settings:
        """These settings with a nested mapping laid over them (``{"gallery": {"keep_versions": 1}}``),
        validated again: unlike ``model_copy(update=...)``, a bad value or an unknown key fails by name."""
        raw = merge_params(Settings, self.model_dump(by_alias=True), overrides)
        return parse_settings(raw, "settings + overrides")


T = TypeVar("T")


def build_config(cls: type[T], values: Mapping[str, Any], **overrides: Any) -> T:
    """A run config (a dataclass) from a settings section, so params.yaml stays the one source of defaults.

    Each field takes the same-named entry of ``values`` (a section's ``model_dump()``), or of
    ``overrides`` when not None; a field typed as another dataclass is built the same way from the same
    values. Fields a section lacks keep their own default if they have one, else fail here by name.
    """
    fields = [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - {f.name for f in fields})
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {unknown}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in fields:
        if overrides.get(f.name) is not None:
            kwargs[f.name] = overrides[f.name]
        elif f.name in values:
            kwargs[f.name] = values[f.name]
        elif dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = build_config(hints[f.name], values)
    missing = [
        f.name
        for f in fields
        if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise TypeError(f"{cls.__name__}: no setting for field(s) {missing}")
    return cls(**kwargs)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def parse_settings(raw: Mapping[str, Any], source: str = "params.yaml") -> Settings:
    """Validate a whole params mapping; the error names every bad or missing key in dotted form."""
    try:
        return Settings.model_validate(dict(raw or {}))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "<root>"
            problems.append(f"{key}: {err['msg']}")
        raise SettingsError(f"{source}: " + "; ".join(problems)) from None


def read_params(path: Path | str | None = None) -> dict[str, Any]:
    """params.yaml as a raw mapping (default: the repository's, or $FACEGATE_PARAMS)."""
    path = Path(path) if path else params_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SettingsError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML ({exc})") from None
    if raw is not None and not isinstance(raw, dict):
        raise SettingsError(f"{path}: top level must be a mapping")
    return raw or {}


def load_settings(path: Path | str | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """params.yaml (default: the repository's, or $FACEGATE_PARAMS) as Settings.

    ``overrides`` is a nested mapping laid over the file before validation (``{"api": {"max_files": 2}}``):
    the way a test or a benchmark runs a variation, checked exactly as the file is.
    """
    path = Path(path) if path else params_path()
    raw = read_params(path)
    source = str(path)
    if overrides:
        raw, source = merge_params(Settings, raw, overrides), f"{path} + overrides"
    return parse_settings(raw, source)


def merge_params(model: type[BaseModel], base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` laid over it: a settings section merges key by key, any other value
    (a list, ``style.style_layers``) is replaced whole. Unknown keys are kept, for validation to name."""
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    fields.update(model.model_fields)
    out = dict(base)
    for key, value in overrides.items():
        field = fields.get(key)
        section = field.annotation if field is not None else None
        name = (field.alias or key) if field is not None else key
        if (
            isinstance(section, type)
            and issubclass(section, BaseModel)
            and isinstance(value, Mapping)
            and isinstance(out.get(name), Mapping)
        ):
            out[name] = merge_params(section, out[name], value)
        else:
            out[name] = value
    return out
