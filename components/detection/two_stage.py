"""The two-stage face-mask detector: RetinaFace finds the faces, a transfer-learned classifier reads each
crop's mask state.

Why: the one-stage YOLO learns "where is a face" and "which mask state" from 680 images and CPU epochs;
finding faces is already solved by a network trained on WIDER FACE, and the mask state is a small-image
classification that an ImageNet MobileNetV2 learns from the ~3,000 ground-truth face crops. The detection
score is RetinaFace's face score x the class probability, every box standing for each class (as the YOLO
decoder does), so the same mAP code scores both variants.

- Proposals: RetinaFace (facegate.components.faces.retinaface) at ``proposal_scale`` (the set's faces are
  small), then a box correction fitted on the training split (median offsets and scales from RetinaFace's
  boxes to the annotators' boxes, which are drawn looser around the chin and hair).
- Crops: a square ``crop_context`` times the box's longer side around its centre, ``crop_size`` pixels;
  training jitters the centre and size, shifts colours and mirrors left-right (a vertical flip or a tight
  crop would hide where the mask sits against the nose: the only cue of ``mask_weared_incorrect``).
- Second stage (Fast R-CNN's idea on a face detector's proposals): ImageNet MobileNetV2 on the crop ->
  the flattened final map -> mask-class logits plus a "not a face" logit, and a box refinement. It learns
  from every ground-truth face and from RetinaFace's own proposals of the training images (matched ones
  carry the box errors to undo, unmatched ones are "not a face"): a frozen phase on cached features of
  jittered copies, then the deepest stages fine-tuned with ImageNet's BN statistics kept; the rare class
  by ``balance``: ``sampling`` (class-balanced batches), ``loss`` (inverse-frequency weights) or ``none``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from facegate.components.core.settings import build_config
from facegate.components.detection.decode import Detections
from facegate.components.faces.boxes import iou_matrix, nms, per_class_nms
from facegate.components.faces.retinaface import decode, load_retinaface, preprocess
from facegate.components.networks.mobilenet_v2 import MobileNetV2, normalise

__all__ = [
    "TwoStageConfig",
    "TwoStageDetector",
    "MaskStateClassifier",
    "face_crop",
    "fit_box_correction",
    "apply_box_correction",
    "box_deltas",
    "apply_deltas",
    "DELTA_SCALE",
]


@dataclass(frozen=True)
class TwoStageConfig:
    """params' ``detection.two_stage`` section plus the shared decoding keys and the seed."""

    classes: tuple[str, ...]
    crop_size: int
    crop_context: float
    jitter: float
    proposal_scale: float
    proposal_score_threshold: float
    proposal_nms_iou: float
    box_fit_images: int
    frozen_epochs: int
    frozen_copies: int
    finetune_epochs: int
    finetune_stages: int
    lr_head: float
    lr_finetune: float
    weight_decay: float
    batch_size: int
    balance: str
    flip_p: float
    colour_p: float
    rgb_shift: int
    brightness: float
    contrast: float
    saturation: float
    hue: float
    eval_score_threshold: float
    nms_iou: float
    max_detections: int
    seed: int
    flip_tta: bool
    threads: int = 2

    @classmethod
    def from_settings(cls, settings, **overrides) -> TwoStageConfig:
        det = settings.detection.model_dump()
        return build_config(cls, {**det, **det["two_stage"], "seed": settings.seed}, **overrides)


def face_crop(
    image: np.ndarray, box, size: int, context: float, shift=(0.0, 0.0), scale: float = 1.0, flip: bool = False
) -> np.ndarray:
    """A size x size RGB crop: a square ``context`` x the box's longer side around its centre (moved by
    ``shift`` x side, side x ``scale``), edge pixels replicated outside the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * context * scale
    cx, cy = (x1 + x2) / 2 + shift[0] * side, (y1 + y2) / 2 + shift[1] * side
    s = size / side
    m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], np.float64)
    if flip:
        m[0] = -m[0]
        m[0, 2] += size
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(image, m, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)


def fit_box_correction(pred: list[np.ndarray], truth: list[np.ndarray], min_iou: float = 0.4) -> np.ndarray:
    """(dx, dy, sw, sh): medians over matched pairs of the truth centre's offset in units of the predicted
    width/height, and the width/height ratios; identity (0, 0, 1, 1) when nothing matches."""
    rows = []
    for p, t in zip(pred, truth):
        if not len(p) or not len(t):
            continue
        ious = iou_matrix(np.asarray(p, np.float64), np.asarray(t, np.float64))
        for j in range(len(t)):
            i = int(ious[:, j].argmax())
            if ious[i, j] >= min_iou:
                pw, ph = p[i, 2] - p[i, 0], p[i, 3] - p[i, 1]
                tw, th = t[j, 2] - t[j, 0], t[j, 3] - t[j, 1]
                rows.append(
                    (
                        (t[j, 0] + t[j, 2] - p[i, 0] - p[i, 2]) / 2 / pw,
                        (t[j, 1] + t[j, 3] - p[i, 1] - p[i, 3]) / 2 / ph,
                        tw / pw,
                        th / ph,
                    )
                )
    return np.median(np.asarray(rows), 0) if rows else np.array([0.0, 0.0, 1.0, 1.0])


def apply_box_correction(boxes: np.ndarray, corr: np.ndarray) -> np.ndarray:
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2 + corr[0] * w, (boxes[:, 1] + boxes[:, 3]) / 2 + corr[1] * h
    w, h = w * corr[2], h * corr[3]
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


DELTA_SCALE = (0.1, 0.1, 0.2, 0.2)  # box deltas are learned divided by these (RetinaFace's variances)


def box_deltas(boxes: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(dx, dy, dw, dh) taking ``boxes`` to ``targets``: centre offsets in box units, log size ratios."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    tw, th = targets[:, 2] - targets[:, 0], targets[:, 3] - targets[:, 1]
    return np.stack(
        [
            ((targets[:, 0] + targets[:, 2]) - (boxes[:, 0] + boxes[:, 2])) / 2 / w,
            ((targets[:, 1] + targets[:, 3]) - (boxes[:, 1] + boxes[:, 3])) / 2 / h,
            np.log(tw / w),
            np.log(th / h),
        ],
        1,
    )


def apply_deltas(boxes: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2 + deltas[:, 0] * w, (boxes[:, 1] + boxes[:, 3]) / 2 + deltas[:, 1] * h
    w, h = w * np.exp(np.clip(deltas[:, 2], -1, 1)), h * np.exp(np.clip(deltas[:, 3], -1, 1))
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


class MaskStateClassifier(nn.Module):
    """ImageNet MobileNetV2 features of a face crop -> mask class logits (+ one "not a face" logit, last)
    and a box refinement (Fast R-CNN's second stage: the crop sees where the face really ends).

    Head input: the final feature map flattened (a 64-px crop gives 2 x 2 x 1280): pooling would throw
    away where in the crop the face sits, which the box refinement needs."""

    def __init__(self, num_classes: int, backbone: MobileNetV2 | None = None, crop_size: int = 64) -> None:
        super().__init__()
        self.backbone = backbone if backbone is not None else MobileNetV2()
        side = math.ceil(crop_size / 32)
        self.fc = nn.Linear(self.backbone.num_features * side * side, num_classes + 1)
        self.box = nn.Linear(self.backbone.num_features * side * side, 4)
        nn.init.zeros_(self.box.weight)
        nn.init.zeros_(self.box.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x).flatten(1)

    def heads(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc(f), self.box(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (C + 1, background last)."""
        return self.fc(self.features(x))


class TwoStageDetector(nn.Module):
    """Face proposals + mask-state classifier behind the detector interface (``detect_images``)."""

    variant = "two_stage"
    box_correction: torch.Tensor  # a buffer (register_buffer in __init__)

    def __init__(
        self,
        classifier: MaskStateClassifier,
        class_names: tuple[str, ...],
        crop_size: int,
        crop_context: float,
        proposal_scale: float,
        proposal_score_threshold: float,
        proposal_nms_iou: float,
        box_correction: np.ndarray,
        flip_tta: bool = False,
    ) -> None:
        super().__init__()
        self.flip_tta = bool(flip_tta)
        self.proposer = load_retinaface()
        self.classifier = classifier
        self.class_names = tuple(class_names)
        self.crop_size, self.crop_context = int(crop_size), float(crop_context)
        self.proposal_scale = float(proposal_scale)
        self.proposal_score_threshold = float(proposal_score_threshold)
        self.proposal_nms_iou = float(proposal_nms_iou)
        self.register_buffer("box_correction", torch.tensor(np.asarray(box_correction, np.float64)))
        self.input_size = (self.crop_size, self.crop_size)  # the classifier's input (the proposer takes any size)

    def propose(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Corrected face boxes (K x 4, clipped to the image) and their face scores, best first.

        The last few images' proposals are kept by content hash: the benchmark asks for the same frame
        twice (per-class mAP, then class-agnostic face AP) and RetinaFace is most of the cost."""
        key = (
            hashlib.sha1(np.ascontiguousarray(image).data).hexdigest(),
            image.shape,
            self.box_correction.numpy().tobytes(),
        )
        cache = self.__dict__.setdefault("_proposal_cache", {})
        if key not in cache:
            if len(cache) >= 256:
                cache.pop(next(iter(cache)))
            cache[key] = self._propose(image)
        return cache[key]

    def clear_proposal_cache(self) -> None:
        """Forget cached proposals (a speed measurement must pay for RetinaFace on every frame)."""
        self.__dict__.pop("_proposal_cache", None)

    def __getstate__(self):  # the cache is not part of the model
        state = self.__dict__.copy()
        state.pop("_proposal_cache", None)
        return state

    def _propose(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        scale = min(self.proposal_scale, 1600 / max(h, w))
        resized = (
            image
            if scale == 1.0
            else cv2.resize(
                image,
                (max(1, round(w * scale)), max(1, round(h * scale))),
                interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA,
            )
        )
        sh, sw = resized.shape[:2]
        with torch.inference_mode():
            loc, conf, marks = self.proposer(preprocess(resized[None]))
        boxes, scores, _ = decode(loc[0].numpy(), conf[0].numpy(), marks[0].numpy(), sh, sw)
        keep = np.flatnonzero(scores >= self.proposal_score_threshold)
        keep = keep[np.argsort(-scores[keep], kind="stable")[:2000]]
        boxes, scores = boxes[keep] * (w / sw, h / sh, w / sw, h / sh), scores[keep]
        order = nms(boxes, scores, self.proposal_nms_iou)
        boxes = apply_box_correction(boxes[order], self.box_correction.numpy())
        return np.clip(boxes, 0, [w, h, w, h]), scores[order]

    def classify(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K x C class probabilities, K x 4 refined boxes) for the crops around ``boxes``; the
        probabilities leave out the "not a face" share, so they sum to at most 1."""
        if not len(boxes):
            return np.zeros((0, len(self.class_names))), np.zeros((0, 4))
        crops = np.stack([face_crop(image, b, self.crop_size, self.crop_context) for b in boxes])
        logits, raw_deltas = self.classifier.heads(self.classifier.features(normalise(crops)))
        probs = logits.softmax(1).numpy().astype(np.float64)
        deltas = raw_deltas.numpy().astype(np.float64)
        if getattr(self, "flip_tta", False):  # models logged before flip_tta existed read without it
            probs, deltas = self._with_mirror(image, boxes, probs, deltas)
        probs = probs[:, : len(self.class_names)]
        refined = apply_deltas(boxes, deltas * np.asarray(DELTA_SCALE))
        h, w = image.shape[:2]
        return probs, np.clip(refined, 0, [w, h, w, h])

    def _with_mirror(
        self, image: np.ndarray, boxes: np.ndarray, probs: np.ndarray, deltas: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Test-time flip: the mean of the crop's and its mirror image's probabilities and box deltas
        (the mirror's horizontal offset turned back)."""
        crops = np.stack([face_crop(image, b, self.crop_size, self.crop_context, flip=True) for b in boxes])
        logits, raw_mirrored = self.classifier.heads(self.classifier.features(normalise(crops)))
        mirrored = raw_mirrored.numpy().astype(np.float64) * np.array([-1.0, 1.0, 1.0, 1.0])
        return (probs + logits.softmax(1).numpy().astype(np.float64)) / 2, (deltas + mirrored) / 2

    def detect_images(
        self,
        images: list[np.ndarray],
        *,
        score_threshold: float,
        iou_threshold: float,
        max_detections: int = 100,
        class_agnostic: bool = False,
        batch_size: int = 8,
    ) -> list[Detections]:
        """Score = face score x class probability; class-agnostic: face score x P(a face), one NMS."""
        was_training = self.training
        self.eval()
        out = []
        with torch.inference_mode():
            for im in images:
                boxes, face = self.propose(im)
                probs, boxes = self.classify(im, boxes)
                if class_agnostic:
                    score = face * probs.sum(1)
                    keep = np.flatnonzero(score >= score_threshold)
                    keep = keep[nms(boxes[keep], score[keep], iou_threshold)][:max_detections] if len(keep) else keep
                    classes = probs[keep].argmax(1).astype(np.int64) if len(keep) else np.zeros(0, np.int64)
                    out.append(Detections(boxes[keep].reshape(-1, 4), score[keep], classes))
                    continue
                scored = face[:, None] * probs
                idx, labels = np.nonzero(scored >= score_threshold)
                b, s = boxes[idx], scored[idx, labels]
                order = per_class_nms(b, s, labels, iou_threshold)[:max_detections] if len(idx) else np.zeros(0, int)
                out.append(Detections(b[order].reshape(-1, 4), s[order], labels[order].astype(np.int64)))
        self.train(was_training)
        return out
