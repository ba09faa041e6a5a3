"""The one settings loader: params.yaml becomes a typed, frozen Settings object.

Unknown keys and bad values fail at start with the dotted key name, so a typo never silently falls
back to a default.
"""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from components.devices import TORCH_DEVICE_PATTERN
from components.errors import SettingsError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __hash__(self) -> int:  # a section may hold a dict (style layers): hash the values, not the objects
        return hash(self.model_dump_json())


class ImageSettings(_Strict):
    max_pixels: int = Field(50_000_000, gt=0)
    min_side: int = Field(32, ge=1)


class DatasetSource(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    kind: Literal["lfw", "image_folder", "voc"]
    path: str


class IngestSettings(_Strict):
    datasets: tuple[DatasetSource, ...] = ()
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    link_mode: Literal["hardlink", "copy"] = "hardlink"
    box_clip_tolerance_px: float = Field(1.0, ge=0.0)


class ValidateSettings(_Strict):
    """The suites' own knobs; image sizes come from ``images.min_side``, box labels from ``detection.classes``."""

    min_images_per_train_identity: int = Field(2, ge=1)
    max_listed_rows: int = Field(20, ge=1)


class FaceSettings(_Strict):
    detector: Literal["dlib_hog", "dlib_mmod", "hog_then_mmod", "yolo_facemask", "yunet",
                      "yunet_then_hog"] = "hog_then_mmod"
    upsample: int = Field(0, ge=0, le=2)  # 0 finds LFW-sized faces (~100 px); 1 finds faces down to ~40 px
    score_threshold: float = Field(0.6, gt=0.0, lt=1.0)  # YuNet: minimum face score
    max_side: int = Field(1280, ge=64, le=8192)  # YuNet: larger frames are shrunk to this long side first
    mask_state: Literal["auto", "off"] = "auto"  # identify: mask on/off per face from the face-mask detector


class EmbeddingSettings(_Strict):
    # one registered backbone, or several joined by '+' (score fusion, components/embedding/fusion.py)
    backbone: str = Field("dlib_resnet", pattern=r"^(dlib_resnet|mobilenet_v2|sface)(\+(dlib_resnet|mobilenet_v2|sface))*$")
    mode: Literal["pretrained", "head", "finetune"] = "head"
    flip_tta: bool = True
    # torch training and embedding: auto | cpu | cuda | cuda:N, resolved by components/devices.py
    device: str = Field("auto", pattern=TORCH_DEVICE_PATTERN)
    # inference number format (components/embedding/precision.py): auto = bfloat16 where the CPU has it natively
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    # fused backbones: members' weights fitted on training identities (fit) or kept equal (equal)
    fusion_weights: Literal["fit", "equal"] = "fit"


class _CourseAugmentations(_Strict):
    """The course's three augmentations, shared by the face chips and the detector's images."""

    flip_p: float = Field(0.5, ge=0.0, le=1.0)  # mirroring
    crop_p: float = Field(0.5, ge=0.0, le=1.0)  # random cropping
    crop_scale_min: float = Field(0.8, gt=0.0, le=1.0)
    colour_p: float = Field(0.5, ge=0.0, le=1.0)  # colour shifting
    rgb_shift: int = Field(15, ge=0, le=255)
    brightness: float = Field(0.2, ge=0.0)
    contrast: float = Field(0.2, ge=0.0)
    saturation: float = Field(0.2, ge=0.0)
    hue: float = Field(0.02, ge=0.0, le=0.5)


class MaskSettings(_Strict):
    """Synthetic masks drawn on chips (components/faces/masks.py): training copies and the masked protocol."""

    p: float = Field(0.5, ge=0.0, le=1.0)  # augmentation: chance a chip gets a mask
    styles: tuple[Literal["surgical", "cloth", "n95"], ...] = ("surgical", "cloth", "n95")
    below_nose_p: float = Field(0.15, ge=0.0, le=1.0)  # worn below the nose (mask_weared_incorrect)
    tilt_deg: float = Field(8.0, ge=0.0, le=45.0)
    strap_p: float = Field(0.7, ge=0.0, le=1.0)


class AugmentSettings(_CourseAugmentations):
    copies: int = Field(2, ge=0, le=16)  # head mode: augmented copies of each training chip (features cached)
    copy_p: float = Field(0.5, ge=0.0, le=1.0)  # head mode: chance a sample uses one of its copies


class TrainSettings(_Strict):
    miner: Literal["batch_hard", "semi_hard", "random"] = "batch_hard"
    margin: float = Field(0.2, gt=0.0)
    p: int = Field(32, ge=2)
    k: int = Field(4, ge=2)
    epochs: int = Field(10, ge=1)
    batches_per_epoch: int | None = Field(None, ge=1)
    lr: float = Field(1e-6, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    pretrained_decay: float = Field(0.0, ge=0.0)
    finetune_stages: int = Field(2, ge=0)
    flip_prob: float = Field(0.5, ge=0.0, le=1.0)
    trainable: Literal["all", "gates"] = "all"  # head mode: the whole head, or SFace's position gates only
    gate_lr: float = Field(3e-3, gt=0.0)  # SFace's position gates (components.embedding.position_gate)
    gate_bare_penalty: float = Field(0.3, ge=0.0)  # on gates away from 1 for samples that are not augmented copies


class GallerySettings(_Strict):
    target_far: float = Field(1e-3, gt=0.0, lt=1.0)
    target_fpir: float = Field(1e-2, gt=0.0, le=1e-2)  # the stored impostor tail covers FAR <= 1e-2
    index_kind: Literal["flat", "ivf", "hnsw"] = "flat"
    calibration_dataset: str = "lfw"  # an identity set read from its folder; its held-out identities calibrate a model
    keep_versions: int = Field(3, ge=1)
    # after an enrolment or removal the DVC snapshot of gallery/ is made by a background worker (API) or a
    # detached process (CLI); manual: only asked for, `facegate gallery snapshot` makes it
    snapshot: Literal["background", "manual"] = "background"
    device: Literal["cpu", "gpu", "auto"] = "auto"  # faiss search device; auto: a GPU when faiss sees one
    # deployment-side recalibration: impostor pairs of enrolled employees blended with the model's stored
    # tail once there are this many, weighted n / (n + prior_pairs)
    recalibration_min_pairs: int = Field(10_000, ge=1)
    recalibration_prior_pairs: int = Field(100_000, ge=0)
    # identification in small galleries: the stored tail moved by the enrolled employees' bulk shift,
    # weighted n / (n + shift_prior_pairs) (components.calibration.BulkShift); None: no shift
    shift_prior_pairs: int | None = Field(100, ge=0)


class ApiSettings(_Strict):
    """Limits the API enforces before work is done: the body while it streams, then the form."""

    max_upload_bytes: int = Field(10_000_000, gt=0)  # one image
    max_body_bytes: int = Field(25_000_000, gt=0)  # a whole request, counted as it streams
    max_files: int = Field(5, ge=1)  # images in one request
    max_fields: int = Field(10, ge=1)  # non-file form fields in one request
    max_field_bytes: int = Field(4096, ge=64)  # one non-file form field
    max_id_length: int = Field(64, ge=1, le=64)  # employee ids (the id pattern allows 64 at most)
    max_name_length: int = Field(200, ge=1)  # display names
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    inference_slots: int = Field(0, ge=0)  # requests running the model at once; 0: one per core (the rest queue)
    inference_threads: int = Field(1, ge=1)  # torch/OpenCV threads per running request (slots x threads = cores)


class AccessLogSettings(_Strict):
    """The access log (components/access_log.py): one row per decision, one per gallery change."""

    url: str | None = None  # SQLAlchemy URL (postgresql://...); None: SQLite in the state folder; env FACEGATE_ACCESS_LOG_URL wins
    retention_days: int = Field(365, ge=1)  # decision rows older than this are purged (audit rows are kept)
    erase_on_remove: bool = True  # `remove` also deletes the employee's decision rows (an erasure request)


class ConsoleSettings(_Strict):
    """Operator console and accounts (flows/console.py, components/accounts.py)."""

    session_hours: float = Field(8.0, gt=0.0, le=24 * 30)  # a signed session cookie expires after this
    login_max_failures: int = Field(5, ge=1)  # failed logins per account name or client address ...
    login_window_s: int = Field(300, ge=1)  # ... within this window, then 429 until the window passes
    min_face_px: int = Field(80, ge=16)  # enrolment check: the face's shorter box side
    min_sharpness: float = Field(20.0, ge=0.0)  # enrolment check: variance of the Laplacian on the face
    metrics_public_on_loopback: bool = True  # /metrics without a key when the server is bound to loopback


class TrackingSettings(_Strict):
    experiment_prefix: str = "facegate"


class RegistrySettings(_Strict):
    embedder_model: str = Field("facegate-embedder", pattern=r"^[A-Za-z0-9_.-]+$")
    gate_metric: Literal["val_accuracy", "val_auc", "val_tar_at_far_1e-3", "val_masked_accuracy",
                         "val_masked_tar_at_far_1e-3"] = "val_tar_at_far_1e-3"
    guard_metric: Literal["val_accuracy", "val_auc", "val_tar_at_far_1e-3", None] = None  # must not regress
    max_regression: float = Field(0.001, ge=0.0)  # the most the guard metric may lose
    min_improvement: float = Field(0.002, ge=0.0)  # the challenger must beat the champion by this much


class RetrainSettings(_Strict):
    dataset: str = "lfw"  # the ingested identity dataset the chain trains and evaluates on
    cron: str = "0 2 * * 0"  # Sundays 02:00 in ``timezone``
    timezone: str = "UTC"
    deployment: str = "facegate-retrain"
    work_pool: str = "facegate-process"


class DistributedSettings(_Strict):
    """Chip extraction, features and embeddings fanned out over shards (flows/distributed.py, Dask)."""

    runner: Literal["local", "dask"] = "local"  # local: one process in order; dask: shards on a Dask cluster
    shards: int = Field(4, ge=1, le=4096)  # pieces the image list is cut into (>= the cluster's workers)
    address: str | None = None  # an existing Dask scheduler (tcp://host:8786); None: a local cluster
    workers: int | None = Field(None, ge=1)  # local cluster: worker processes (None: one per core)
    threads_per_worker: int = Field(1, ge=1)


class TwoStageSettings(_Strict):
    """The two-stage face-mask detector (issue 14): RetinaFace proposals, a mask-state classifier on crops."""

    crop_size: int = Field(96, ge=16, le=256)  # classifier input (faces are ~23 px at 416)
    crop_context: float = Field(1.3, ge=1.0, le=3.0)  # crop side / the box's longer side
    jitter: float = Field(0.15, ge=0.0, le=0.5)  # training: centre shift and size change of the crop
    proposal_scale: float = Field(2.0, gt=0.0, le=4.0)  # RetinaFace input = image x this (long side <= 1600)
    proposal_score_threshold: float = Field(0.02, ge=0.0, le=1.0)  # face score kept before NMS
    proposal_nms_iou: float = Field(0.4, gt=0.0, le=1.0)
    box_fit_images: int = Field(1000, ge=1)  # training images RetinaFace runs on: box correction, proposals to learn from
    frozen_epochs: int = Field(20, ge=0)  # linear head on cached features
    frozen_copies: int = Field(2, ge=1, le=16)  # the plain crop + jittered copies
    finetune_epochs: int = Field(5, ge=0)
    finetune_stages: int = Field(2, ge=0, le=5)
    lr_head: float = Field(1e-3, gt=0.0)
    lr_finetune: float = Field(5e-4, gt=0.0)
    batch_size: int = Field(64, ge=1)
    balance: Literal["sampling", "loss", "none"] = "sampling"  # the rare mask_weared_incorrect class


class DetectionSettings(_CourseAugmentations):
    """The YOLO-style face-mask detector (issue 6): data, model, both training phases, loss, decoding."""

    dataset: str = "facemask"  # ingested VOC dataset (its seeded image-level split)
    classes: tuple[str, ...] = ("with_mask", "without_mask", "mask_weared_incorrect")
    input_size: int = Field(416, ge=64, le=1024)
    strides: tuple[Literal[8, 16, 32], ...] = (8, 16)
    anchors_per_scale: int = Field(3, ge=1, le=9)
    width: int = Field(128, ge=16)
    batch_size: int = Field(16, ge=1)
    frozen_epochs: int = Field(3, ge=0)
    frozen_copies: int = Field(1, ge=1, le=16)
    lr_head: float = Field(2e-3, gt=0.0)
    finetune_epochs: int = Field(3, ge=0)
    finetune_stages: int = Field(3, ge=0, le=5)
    lr_finetune: float = Field(5e-4, gt=0.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    lambda_coord: float = Field(5.0, ge=0.0)
    lambda_obj: float = Field(1.0, ge=0.0)
    lambda_noobj: float = Field(0.5, ge=0.0)
    lambda_cls: float = Field(1.0, ge=0.0)
    ignore_iou: float = Field(0.5, gt=0.0, le=1.0)
    crop_scale_min: float = Field(0.5, gt=0.0, le=1.0)  # smaller crops than for face chips
    min_visibility: float = Field(0.4, ge=0.0, le=1.0)  # a cropped box keeping less of its area is dropped
    score_threshold: float = Field(0.4, ge=0.0, le=1.0)  # `facegate detect` and the face-detector entry
    eval_score_threshold: float = Field(0.01, ge=0.0, le=1.0)  # mAP: low, so the PR curve is complete
    nms_iou: float = Field(0.45, gt=0.0, le=1.0)
    max_detections: int = Field(100, ge=1)
    eval_every: int = Field(3, ge=1)
    log_sample_images: bool = False  # face images in MLflow only when asked
    registered_model: str = Field("facegate-detector", pattern=r"^[A-Za-z0-9_.-]+$")
    min_improvement: float = Field(0.005, ge=0.0)  # map50 margin a challenger needs over the champion
    device: str = Field("auto", pattern=TORCH_DEVICE_PATTERN)  # torch training: as embedding.device
    variant: Literal["yolo", "two_stage"] = "two_stage"  # what train-detector trains (both register as versions)
    two_stage: TwoStageSettings = Field(default_factory=TwoStageSettings)


class StyleSettings(_Strict):
    """Neural style transfer (issue 16): MobileNetV2 layers, the cost weights, the optimisation of G's pixels."""

    content_layer: str = "features.10"  # a middle layer (stride 16): what is where, not how it looks
    style_layers: dict[str, float] = Field(  # lambda[l]: the layers whose Gram matrices carry the style
        default_factory=lambda: {"features.1": 0.1, "features.3": 0.2, "features.6": 0.3, "features.10": 0.2,
                                 "features.13": 0.2}, min_length=1)
    alpha: float = Field(10.0, ge=0.0)
    beta: float = Field(10000.0, ge=0.0)
    iterations: int = Field(200, ge=1)
    lr: float = Field(0.03, gt=0.0)
    optimizer: Literal["adam", "lbfgs"] = "adam"
    init: Literal["content_noise", "noise"] = "content_noise"
    noise: float = Field(0.25, ge=0.0, le=1.0)
    image_size: int = Field(256, ge=16, le=2048)
    seed: int = 1234
    log_images: bool = False  # content, style and output in MLflow only when asked (a face photo is biometric)


class Settings(_Strict):
    seed: int = 1234
    images: ImageSettings = ImageSettings()
    ingest: IngestSettings = IngestSettings()
    validate_: ValidateSettings = Field(ValidateSettings(), alias="validate")
    faces: FaceSettings = FaceSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    augment: AugmentSettings = AugmentSettings()
    masks: MaskSettings = MaskSettings()
    gallery: GallerySettings = GallerySettings()
    api: ApiSettings = ApiSettings()
    access_log: AccessLogSettings = AccessLogSettings()
    console: ConsoleSettings = ConsoleSettings()
    train: TrainSettings = TrainSettings()
    tracking: TrackingSettings = TrackingSettings()
    registry: RegistrySettings = RegistrySettings()
    retrain: RetrainSettings = RetrainSettings()
    detection: DetectionSettings = DetectionSettings()
    distributed: DistributedSettings = DistributedSettings()
    style: StyleSettings = StyleSettings()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def flat(self) -> dict[str, Any]:
        """Dotted-key view (``ingest.val_fraction``) for MLflow params, so runs line up in the UI."""
        return flatten(self.model_dump(by_alias=True, mode="json"))


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
    missing = [f.name for f in fields if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
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


def parse_settings(raw: dict[str, Any], source: str = "params.yaml") -> Settings:
    """Validate a raw mapping; the error names every bad key in dotted form."""
    try:
        return Settings.model_validate(raw or {})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "<root>"
            problems.append(f"{key}: {err['msg']}")
        raise SettingsError(f"{source}: " + "; ".join(problems)) from None


def load_settings(path: Path | str | None = None) -> Settings:
    """Read params.yaml (default: the repository's, or $FACEGATE_PARAMS)."""
    from components.paths import params_path

    path = Path(path) if path else params_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SettingsError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML ({exc})") from None
    if raw is not None and not isinstance(raw, dict):
        raise SettingsError(f"{path}: top level must be a mapping")
    return parse_settings(raw or {}, str(path))
