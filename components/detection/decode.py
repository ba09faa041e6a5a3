"""From raw grid outputs to boxes: decode, discard low scores, per-class non-max suppression.

A box's score is p_c x P(class | object) (YOLO's class-specific confidence). Boxes under
``score_threshold`` are discarded, then NMS per class keeps one box per object. ``class_agnostic``
scores boxes by p_c alone and runs one NMS over all classes: the "is there a face" question.
Also the letterbox that every image goes through (training, evaluation, ``facegate detect``) and
its inverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facegate.components.core.devices import module_device
from facegate.components.detection.encoding import N_BOX_FIELDS
from facegate.components.faces.boxes import nms, per_class_nms
from facegate.components.networks.mobilenet_v2 import normalise

__all__ = ["Detections", "decode_grid", "postprocess", "letterbox", "PAD_VALUE", "detect_images"]

PAD_VALUE = (124, 116, 104)  # ImageNet mean colour: padding normalises to ~0


@dataclass
class Detections:
    boxes: np.ndarray  # K x 4 xyxy
    scores: np.ndarray  # K
    labels: np.ndarray  # K, class index

    def __len__(self) -> int:
        return len(self.scores)

    def scaled(self, factor_x: float, factor_y: float) -> Detections:
        b = self.boxes * np.array([factor_x, factor_y, factor_x, factor_y])
        return Detections(b, self.scores, self.labels)

    def clipped(self, width: int, height: int) -> Detections:
        b = self.boxes.copy()
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, width)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, height)
        return Detections(b, self.scores, self.labels)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def decode_grid(raw: np.ndarray, anchors: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image, one scale: raw S_h x S_w x B x (5 + C) -> (boxes K x 4, p_c K, class probs K x C).

    Centre = (cell + sigmoid(t_x, t_y)) x stride; size = anchor x exp(t_h, t_w); p_c = sigmoid(t_c);
    class probabilities = softmax over the class logits.
    """
    raw = np.asarray(raw, dtype=np.float64)
    gh, gw, b, _ = raw.shape
    rows = np.arange(gh).reshape(gh, 1, 1)
    cols = np.arange(gw).reshape(1, gw, 1)
    cx = (cols + _sigmoid(raw[..., 1])) * stride
    cy = (rows + _sigmoid(raw[..., 2])) * stride
    h = np.asarray(anchors, dtype=np.float64)[:, 1].reshape(1, 1, b) * np.exp(np.minimum(raw[..., 3], 10))
    w = np.asarray(anchors, dtype=np.float64)[:, 0].reshape(1, 1, b) * np.exp(np.minimum(raw[..., 4], 10))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1).reshape(-1, 4)
    p_c = _sigmoid(raw[..., 0]).reshape(-1)
    logits = raw[..., N_BOX_FIELDS:].reshape(len(p_c), -1)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return boxes, p_c, e / e.sum(axis=1, keepdims=True)


def postprocess(
    boxes: np.ndarray,
    p_c: np.ndarray,
    class_probs: np.ndarray,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int = 100,
    class_agnostic: bool = False,
    pre_nms_top_k: int = 2000,
) -> Detections:
    """Score, threshold, NMS (per class unless ``class_agnostic``), keep the best ``max_detections``.

    Only the ``pre_nms_top_k`` best-scoring candidates enter NMS (bounds its cost at low thresholds).
    """
    if class_agnostic:
        scores, labels = p_c, class_probs.argmax(axis=1)
        keep = np.flatnonzero(scores >= score_threshold)
    else:
        # each box may stand for any class whose score passes (as in the VOC/COCO protocols)
        scored = p_c[:, None] * class_probs
        idx, labels = np.nonzero(scored >= score_threshold)
        boxes, scores = boxes[idx], scored[idx, labels]
        keep = np.arange(len(idx))
    keep = keep[np.argsort(-scores[keep], kind="stable")[:pre_nms_top_k]]
    if class_agnostic:
        order = keep[nms(boxes[keep], scores[keep], iou_threshold)]
    else:
        order = (
            keep[per_class_nms(boxes[keep], scores[keep], labels[keep], iou_threshold)]
            if len(keep)
            else np.zeros(0, np.int64)
        )
    order = order[:max_detections]
    return Detections(
        np.asarray(boxes)[order].reshape(-1, 4), np.asarray(scores)[order], np.asarray(labels)[order].astype(np.int64)
    )


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, float]:
    """Resize so the longer side is ``size`` (aspect kept), pad bottom/right with the mean colour.

    Returns the padded image and the factors (original / resized) that map boxes back along x and y.
    """
    h, w = image.shape[:2]
    s = size / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nw, nh) != (w, h) else image
    out = np.empty((size, size, 3), np.uint8)
    out[:] = PAD_VALUE
    out[:nh, :nw] = resized
    return out, w / nw, h / nh


def detect_images(
    model,
    images: list[np.ndarray],
    *,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int = 100,
    class_agnostic: bool = False,
    batch_size: int = 8,
) -> list[Detections]:
    """Detections in each original image's pixel coordinates (model: a ``YoloDetector``), computed
    where the model's weights are; decoding and NMS run on the CPU. A model with its own
    ``detect_images`` (the two-stage detector) answers the same call itself."""
    if hasattr(model, "detect_images"):
        return model.detect_images(
            images,
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
            max_detections=max_detections,
            class_agnostic=class_agnostic,
            batch_size=batch_size,
        )
    import torch  # heavy: torch loads ~1 s of native code; only the paths that run a model need it

    size = model.input_size[0]
    device = module_device(model)
    anchors = model.anchors.cpu().numpy()
    out: list[Detections] = []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            boxed = [letterbox(im, size) for im in chunk]
            x = normalise(torch.from_numpy(np.stack([b[0] for b in boxed])).to(device))
            preds = [p.cpu().numpy() for p in model(x)]
            for i, (im, (_, fx, fy)) in enumerate(zip(chunk, boxed)):
                parts = [decode_grid(p[i], anchors[s], model.strides[s]) for s, p in enumerate(preds)]
                boxes = np.concatenate([q[0] for q in parts])
                p_c = np.concatenate([q[1] for q in parts])
                probs = np.concatenate([q[2] for q in parts])
                det = postprocess(boxes, p_c, probs, score_threshold, iou_threshold, max_detections, class_agnostic)
                out.append(det.scaled(fx, fy).clipped(im.shape[1], im.shape[0]))
    model.train(was_training)
    return out
