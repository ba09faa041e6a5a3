"""The sections of params.yaml as typed, strict models: one class per top-level key (``faces:``,
``gallery:``, ``pad:`` ...), each with no defaults (params.yaml holds every value). The root object and
the loader are settings.py; the sections live here so each module stays readable.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from facegate.components.core.devices import TORCH_DEVICE_PATTERN


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __hash__(self) -> int:  # a section may hold a dict (style layers): hash the values, not the objects
        return hash(self.model_dump_json())


class ImageSettings(_Strict):
    max_pixels: int = Field(gt=0)
    min_side: int = Field(ge=1)


class DatasetSource(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    kind: Literal["lfw", "image_folder", "voc", "captures"]  # components/core/datasets.py SOURCES
    path: str  # relative to the datasets root; captures: to data/ (facegate exports them there)


class IngestSettings(_Strict):
    datasets: tuple[DatasetSource, ...]
    val_fraction: float = Field(gt=0.0, lt=1.0)
    link_mode: Literal["hardlink", "copy"]
    box_clip_tolerance_px: float = Field(ge=0.0)


class ValidateSettings(_Strict):
    """The suites' own knobs; image sizes come from ``images.min_side``, box labels from ``detection.classes``."""

    min_images_per_train_identity: int = Field(ge=1)
    max_listed_rows: int = Field(ge=1)


class FaceSettings(_Strict):
    # the face-detector registry's names (components/faces/detectors.py DETECTORS; yolo_facemask is
    # registered by components/lifecycle/detector_models.py); tests/unit/core/test_params_match_code.py
    # fails when the two drift
    detector: Literal[
        "dlib_hog",
        "dlib_mmod",
        "hog_then_mmod",
        "retinaface",
        "yolo_facemask",
        "yunet",
        "yunet_then_hog",
        "yunet_then_retinaface",
    ]
    upsample: int = Field(ge=0, le=2)  # 0 finds LFW-sized faces (~100 px); 1 finds faces down to ~40 px
    score_threshold: float = Field(gt=0.0, lt=1.0)  # YuNet, RetinaFace: minimum face score
    max_side: int = Field(ge=64, le=8192)  # YuNet, RetinaFace: larger frames are shrunk to this long side first
    mask_state: Literal["auto", "off"]  # identify: mask on/off per face from the face-mask detector


# components/embedding/backbones.py BACKBONES' names; FUSION_SEPARATOR joins several (score fusion)
BACKBONE_NAMES = ("dlib_resnet", "mobilenet_v2", "sface")
_ONE_BACKBONE = "(" + "|".join(BACKBONE_NAMES) + ")"


class EmbeddingSettings(_Strict):
    # one registered backbone, or several joined by '+' (score fusion, components/embedding/fusion.py)
    backbone: str = Field(pattern=rf"^{_ONE_BACKBONE}(\+{_ONE_BACKBONE})*$")
    mode: Literal["pretrained", "head", "finetune"]
    flip_tta: bool
    # torch training and embedding: auto | cpu | cuda | cuda:N, resolved by components/core/devices.py
    device: str = Field(pattern=TORCH_DEVICE_PATTERN)
    # inference number format (components/embedding/precision.py): auto = bfloat16 where the CPU has it natively
    precision: Literal["auto", "float32", "bfloat16"]
    # inference runtime (components/embedding/openvino_runtime.py): torch, or openvino with torch as the fallback
    backend: Literal["torch", "openvino"]
    # fused backbones: members' weights fitted on training identities (fit) or kept equal (equal)
    fusion_weights: Literal["fit", "equal"]


class RecognitionSettings(_Strict):
    # the confidence cascade (components/service/cascade.py): on = one member decides faces far from its threshold
    cascade: Literal["on", "off"]
    # the cascade's cheap first pass: one member of embedding.backbone (the whole model when it has one)
    cascade_member: str = Field(pattern=rf"^{_ONE_BACKBONE}$")


class _CourseAugmentations(_Strict):
    """The course's three augmentations, shared by the face chips and the detector's images."""

    flip_p: float = Field(ge=0.0, le=1.0)  # mirroring
    crop_p: float = Field(ge=0.0, le=1.0)  # random cropping
    crop_scale_min: float = Field(gt=0.0, le=1.0)
    colour_p: float = Field(ge=0.0, le=1.0)  # colour shifting
    rgb_shift: int = Field(ge=0, le=255)
    brightness: float = Field(ge=0.0)
    contrast: float = Field(ge=0.0)
    saturation: float = Field(ge=0.0)
    hue: float = Field(ge=0.0, le=0.5)


class MaskSettings(_Strict):
    """Synthetic masks drawn on chips (components/faces/masks.py): training copies and the masked protocol."""

    p: float = Field(ge=0.0, le=1.0)  # augmentation: chance a chip gets a mask
    styles: tuple[Literal["surgical", "cloth", "n95"], ...]
    below_nose_p: float = Field(ge=0.0, le=1.0)  # worn below the nose (mask_weared_incorrect)
    tilt_deg: float = Field(ge=0.0, le=45.0)
    strap_p: float = Field(ge=0.0, le=1.0)


class AugmentSettings(_CourseAugmentations):
    copies: int = Field(ge=0, le=16)  # head mode: augmented copies of each training chip (features cached)
    copy_p: float = Field(ge=0.0, le=1.0)  # head mode: chance a sample uses one of its copies


class TrainSettings(_Strict):
    miner: Literal["batch_hard", "semi_hard", "random"]  # components/embedding/triplets.py MINERS
    margin: float = Field(gt=0.0)
    p: int = Field(ge=2)
    k: int = Field(ge=2)
    epochs: int = Field(ge=1)
    batches_per_epoch: int | None = Field(ge=1)
    lr: float = Field(gt=0.0)
    weight_decay: float = Field(ge=0.0)
    pretrained_decay: float = Field(ge=0.0)
    finetune_stages: int = Field(ge=0)
    flip_prob: float = Field(ge=0.0, le=1.0)
    trainable: Literal["all", "gates"]  # head mode: the whole head, or SFace's position gates only
    gate_lr: float = Field(gt=0.0)  # SFace's position gates (facegate.components.embedding.position_gate)
    gate_bare_penalty: float = Field(ge=0.0)  # on gates away from 1 for samples that are not augmented copies


class GallerySettings(_Strict):
    target_far: float = Field(gt=0.0, lt=1.0)
    target_fpir: float = Field(gt=0.0, le=1e-2)  # the stored impostor tail covers FAR <= 1e-2
    # enrolment's duplicate-face check: share of new people refused as someone already enrolled, at any
    # gallery size (facegate.components.gallery.duplicates); the stored tail covers it as it does target_fpir
    duplicate_target: float = Field(gt=0.0, le=1e-2)
    index_kind: Literal["flat", "ivf", "hnsw"]  # components/gallery/index_kinds.py INDEX_KINDS
    calibration_dataset: str  # an identity set read from its folder; its held-out identities calibrate a model
    keep_versions: int = Field(ge=1)
    # after an enrolment or removal the DVC snapshot of gallery/ is made by a background worker (API) or a
    # detached process (CLI); manual: only asked for, `facegate gallery snapshot` makes it
    snapshot: Literal["background", "manual"]
    device: Literal["cpu", "gpu", "auto"]  # faiss search device; auto: a GPU when faiss sees one
    # deployment-side recalibration: impostor pairs of enrolled employees blended with the model's stored
    # tail once there are this many, weighted n / (n + prior_pairs)
    recalibration_min_pairs: int = Field(ge=1)
    recalibration_prior_pairs: int = Field(ge=0)
    # identification in small galleries: the stored tail moved by the enrolled employees' bulk shift,
    # weighted n / (n + shift_prior_pairs) (facegate.components.calibration.thresholds.BulkShift); None: no shift
    shift_prior_pairs: int | None = Field(ge=0)
    # templates per employee (enrolment photos + confirmed captures, the most diverse kept); identify takes the nearest
    max_templates: int = Field(ge=1)
    # a confirmed capture within identify's tau + this of a known impostor (a stranger-labelled capture, another
    # employee's confirmed capture or vector) never becomes a template (components/service/templates.py); null: no guard
    template_impostor_margin: float | None = Field(ge=-0.5, le=0.5)


class ApiSettings(_Strict):
    """Limits the API enforces before work is done: the body while it streams, then the form."""

    max_upload_bytes: int = Field(gt=0)  # one image
    max_body_bytes: int = Field(gt=0)  # a whole request, counted as it streams
    max_files: int = Field(ge=1)  # images in one request
    max_fields: int = Field(ge=1)  # non-file form fields in one request
    max_field_bytes: int = Field(ge=64)  # one non-file form field
    max_id_length: int = Field(ge=1, le=64)  # employee ids (the id pattern allows 64 at most)
    max_name_length: int = Field(ge=1)  # display names
    host: str
    port: int = Field(ge=1, le=65535)
    inference_slots: int = Field(ge=0)  # requests running the model at once; 0: one per core (the rest queue)
    inference_threads: int = Field(ge=1)  # torch/OpenCV threads per running request (slots x threads = cores)
    # concurrent requests' faces reaching the embedding within this window go through one forward pass
    # (components/recognition/batching.py); 0: none (each request embeds its own faces)
    batch_window_ms: float = Field(ge=0.0, le=1000.0)
    batch_max: int = Field(ge=1)  # faces in one batched forward pass (a request with more runs alone)


class CaptureSettings(_Strict):  # deployment captures (components/service/captures.py), for review and templates
    enabled: bool  # off by default: no chip or embedding is kept unless turned on
    entrances: tuple[str, ...]  # entrances that capture; empty: every entrance (when enabled)
    retention_days: int = Field(ge=1)  # captures older than this are purged (with their chips)
    review_band: float = Field(gt=0.0)  # review priority: distances within this of tau are "near the threshold"


class AccessLogSettings(_Strict):
    """The access log (components/service/access_log.py): one row per decision, one per gallery change."""

    # SQLAlchemy URL (postgresql://...); None: SQLite in the state folder; env FACEGATE_ACCESS_LOG_URL wins
    url: str | None
    retention_days: int = Field(ge=1)  # decision rows older than this are purged (audit rows are kept)
    erase_on_remove: bool  # `remove` also deletes the employee's decision rows (an erasure request)


class ConsoleSettings(_Strict):
    """Operator console and accounts (components/web/console.py, components/web/accounts.py)."""

    session_hours: float = Field(gt=0.0, le=24 * 30)  # a signed session cookie expires after this
    login_max_failures: int = Field(ge=1)  # failed logins per account name or client address ...
    login_window_s: int = Field(ge=1)  # ... within this window, then 429 until the window passes
    min_face_px: int = Field(ge=16)  # enrolment check: the face's shorter box side
    min_sharpness: float = Field(ge=0.0)  # enrolment check: variance of the Laplacian on the face
    metrics_public_on_loopback: bool  # /metrics without a key when the server is bound to loopback


class TrackingSettings(_Strict):
    experiment_prefix: str


class RegistrySettings(_Strict):
    embedder_model: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    gate_metric: Literal[
        "val_accuracy", "val_auc", "val_tar_at_far_1e-3", "val_masked_accuracy", "val_masked_tar_at_far_1e-3"
    ]
    guard_metric: Literal["val_accuracy", "val_auc", "val_tar_at_far_1e-3", None]  # must not regress
    max_regression: float = Field(ge=0.0)  # the most the guard metric may lose
    min_improvement: float = Field(ge=0.0)  # the challenger must beat the champion by this much
    # the deployment's own held-out captures: none of these may drop by more than deploy_max_regression
    # (checked when both sides have them, i.e. when the chain had held-out captures to evaluate on)
    deploy_guard_metrics: tuple[Literal["val_deploy_accuracy", "val_deploy_auc", "val_deploy_tar_at_far_1e-3"], ...]
    deploy_max_regression: float = Field(ge=0.0)


class RetrainSettings(_Strict):
    dataset: str  # the ingested identity dataset the chain trains and evaluates on
    # the ingested captures dataset (kind captures) whose training split joins ``dataset``'s and whose held-out
    # employees give val_deploy_*, when the chain ingests it and it holds captures; None: never
    captures_dataset: str | None
    cron: str  # Sundays 02:00 in ``timezone``
    timezone: str
    deployment: str
    work_pool: str
    drift_cron: str  # the drift flow's schedule (daily), in ``timezone``
    drift_deployment: str  # the drift flow's deployment; its trigger starts a run of ``deployment``
    drift_window_days: float = Field(gt=0)  # drift flow: the window of decisions and captures judged
    drift_reference_days: float = Field(gt=0)  # ... against this many days before it
    trigger_drift: float = Field(gt=0)  # drift score (largest PSI, or a share's change x 2.5) that alarms and retrains
    trigger_confirmed: int = Field(ge=1)  # newly confirmed captures that start a retraining


class DistributedSettings(_Strict):
    """Chip extraction, features and embeddings fanned out over shards (flows/distributed.py, Dask)."""

    runner: Literal["local", "dask"]  # local: one process in order; dask: shards on a Dask cluster
    shards: int = Field(ge=1, le=4096)  # pieces the image list is cut into (>= the cluster's workers)
    address: str | None  # an existing Dask scheduler (tcp://host:8786); None: a local cluster
    workers: int | None = Field(ge=1)  # local cluster: worker processes (None: one per core)
    threads_per_worker: int = Field(ge=1)


class TwoStageSettings(_Strict):
    """The two-stage face-mask detector (issue 14): RetinaFace proposals, a mask-state classifier on crops."""

    crop_size: int = Field(ge=16, le=256)  # classifier input (faces are ~23 px at 416)
    crop_context: float = Field(ge=1.0, le=3.0)  # crop side / the box's longer side
    jitter: float = Field(ge=0.0, le=0.5)  # training: centre shift and size change of the crop
    proposal_scale: float = Field(gt=0.0, le=4.0)  # RetinaFace input = image x this (long side <= 1600)
    proposal_score_threshold: float = Field(ge=0.0, le=1.0)  # face score kept before NMS
    proposal_nms_iou: float = Field(gt=0.0, le=1.0)
    box_fit_images: int = Field(ge=1)  # training images RetinaFace runs on: box correction, proposals to learn from
    frozen_epochs: int = Field(ge=0)  # linear head on cached features
    frozen_copies: int = Field(ge=1, le=16)  # the plain crop + jittered copies
    finetune_epochs: int = Field(ge=0)
    finetune_stages: int = Field(ge=0, le=5)
    lr_head: float = Field(gt=0.0)
    lr_finetune: float = Field(gt=0.0)
    batch_size: int = Field(ge=1)
    balance: Literal["sampling", "loss", "none"]  # the rare mask_weared_incorrect class
    flip_tta: bool  # test time: mean of the crop's and its mirror's class probabilities and box deltas


class DetectionSettings(_CourseAugmentations):
    """The YOLO-style face-mask detector (issue 6): data, model, both training phases, loss, decoding."""

    dataset: str  # ingested VOC dataset (its seeded image-level split)
    classes: tuple[str, ...]
    input_size: int = Field(ge=64, le=1024)
    strides: tuple[Literal[8, 16, 32], ...]
    anchors_per_scale: int = Field(ge=1, le=9)
    width: int = Field(ge=16)
    batch_size: int = Field(ge=1)
    frozen_epochs: int = Field(ge=0)
    frozen_copies: int = Field(ge=1, le=16)
    lr_head: float = Field(gt=0.0)
    finetune_epochs: int = Field(ge=0)
    finetune_stages: int = Field(ge=0, le=5)
    lr_finetune: float = Field(gt=0.0)
    weight_decay: float = Field(ge=0.0)
    lambda_coord: float = Field(ge=0.0)
    lambda_obj: float = Field(ge=0.0)
    lambda_noobj: float = Field(ge=0.0)
    lambda_cls: float = Field(ge=0.0)
    ignore_iou: float = Field(gt=0.0, le=1.0)
    crop_scale_min: float = Field(gt=0.0, le=1.0)  # smaller crops than for face chips
    min_visibility: float = Field(ge=0.0, le=1.0)  # a cropped box keeping less of its area is dropped
    score_threshold: float = Field(ge=0.0, le=1.0)  # `facegate detect` and the face-detector entry
    eval_score_threshold: float = Field(ge=0.0, le=1.0)  # mAP: low, so the PR curve is complete
    nms_iou: float = Field(gt=0.0, le=1.0)
    max_detections: int = Field(ge=1)
    eval_every: int = Field(ge=1)
    log_sample_images: bool  # face images in MLflow only when asked
    registered_model: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    min_improvement: float = Field(ge=0.0)  # map50 margin a challenger needs over the champion
    device: str = Field(pattern=TORCH_DEVICE_PATTERN)  # torch training: as embedding.device
    variant: Literal["yolo", "two_stage"]  # what train-detector trains (both register as versions)
    two_stage: TwoStageSettings


class StyleSettings(_Strict):
    """Neural style transfer (issue 16): MobileNetV2 layers, the cost weights, the optimisation of G's pixels."""

    content_layer: str  # a middle layer (stride 16): what is where, not how it looks
    style_layers: dict[str, float] = Field(min_length=1)  # lambda[l]: the layers whose Gram matrices carry the style
    alpha: float = Field(ge=0.0)
    beta: float = Field(ge=0.0)
    iterations: int = Field(ge=1)
    lr: float = Field(gt=0.0)
    optimizer: Literal["adam", "lbfgs"]
    init: Literal["content_noise", "noise"]
    noise: float = Field(ge=0.0, le=1.0)
    image_size: int = Field(ge=16, le=2048)
    seed: int
    log_images: bool  # content, style and output in MLflow only when asked (a face photo is biometric)


class ExplainSettings(_Strict):
    """What the units learn (facegate explain units): the top patches of sampled units, per layer."""

    # per network (dlib_resnet, sface, mobilenet_v2, ...): layer names of its named_modules(), early -> deep
    layers: dict[str, tuple[str, ...]] = Field(min_length=1)
    units_per_layer: int = Field(ge=1)  # units sampled per layer (seeded: the same units in every version)
    top_k: int = Field(ge=1, le=64)  # patches kept per unit (Zeiler and Fergus: 9)
    images: int = Field(ge=1)  # the command's default --images: training images sampled (seeded)
    batch_size: int = Field(ge=1)
    patch_px: int = Field(ge=8, le=256)  # a patch's side in the grids
    log_to_mlflow: bool  # retrain and train-detector log each registered version's grids under explain/
    mlflow_images: int = Field(ge=1)  # ... over this many training images
    mlflow_units_per_layer: int = Field(ge=1)  # ... and this many units per layer


class PadSettings(_Strict):
    """Presentation-attack detection (components/pad, components/service/liveness.py, docs/pad.md)."""

    # off | flag (liveness answered and logged, decisions as without PAD) | enforce (an attack is never
    # recognised: its decision is ``attack``); flag and enforce also refuse an attack photo at enrolment unless forced
    mode: Literal["off", "flag", "enforce"]
    # components/pad/models.py PAD_MODELS' names (minifasnet_pair_finetuned: components/lifecycle/pad_models.py)
    model: Literal["minifasnet_pair", "minifasnet_v2", "minifasnet_v1se", "minifasnet_pair_finetuned"]
    target_apcer: float = Field(gt=0.0, lt=0.5)  # threshold: at most this share of calibration attacks pass as live
    # components/pad/runtime.py RUNTIMES: openvino (served; OpenCV's DNN where it cannot run) | opencv | torch
    runtime: Literal["openvino", "opencv", "torch"]
    registered_model: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")  # MLflow model of the fine-tuned pair
    dataset: str  # datasets-root folder with live/<subject>/ and print/<subject>/ frames (train-pad, bench pad)
    heldout_subjects: int = Field(ge=1)  # train-pad: subjects held out (seeded) for the gate and the threshold
    folds: int = Field(ge=2)  # bench pad: folds of subjects (>= the number of subjects: leave one subject out)
    finetune_stages: int = Field(ge=0, le=2)  # fine-tuning: deepest stages trained with the head (earlier: cached)
    epochs: int = Field(ge=1)
    lr: float = Field(gt=0.0)
    batch_size: int = Field(ge=1)
    weight_decay: float = Field(ge=0.0)
    flip_p: float = Field(ge=0.0, le=1.0)  # mirroring: chance a training sample is its mirrored copy
    crop_p: float = Field(ge=0.0, le=1.0)  # small crops: chance a training sample is a jittered copy ...
    crop_copies: int = Field(ge=0, le=8)  # ... of which each frame has this many (features cached)
    crop_jitter: float = Field(ge=0.0, le=0.3)  # the box moved and resized by up to this share of its size

    @field_validator("mode", mode="before")
    @classmethod
    def _bare_off(cls, value: Any) -> Any:
        """YAML 1.1 reads a bare ``off`` as false: take it for what was meant."""
        return "off" if value is False else value
