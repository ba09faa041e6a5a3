"""The YOLO loss on raw head outputs against grid targets (``encoding.encode_targets``).

For every anchor of every cell (per image, summed, then averaged over the batch):
- where a true box is assigned (p_c = 1):
  lambda_coord * [(sigmoid(t_x) - b_x)^2 + (sigmoid(t_y) - b_y)^2 + (t_h - log b_h)^2 + (t_w - log b_w)^2]
  + lambda_obj * BCE(p_c logit, 1) + lambda_cls * cross-entropy over the C class logits;
- elsewhere: lambda_noobj * BCE(p_c logit, 0), except where the anchor's predicted box already overlaps
  some true box by IoU > ``ignore_iou`` (YOLOv3): such a prediction is not a mistake worth punishing,
  only not the one chosen to answer for that box.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from facegate.components.detection.encoding import N_BOX_FIELDS

__all__ = ["LossWeights", "yolo_loss", "decode_boxes_torch", "box_iou_torch"]


@dataclass(frozen=True)
class LossWeights:
    """YOLO's lambda_coord / lambda_noobj (and the two others), named as in params' ``detection`` section."""

    lambda_coord: float
    lambda_obj: float
    lambda_noobj: float
    lambda_cls: float
    ignore_iou: float  # no no-object penalty where a prediction already overlaps a true box this much


def decode_boxes_torch(pred: Tensor, anchors: Tensor, stride: int) -> Tensor:
    """N x S_h x S_w x B x 4 xyxy boxes in input pixels from raw predictions of one scale."""
    n, gh, gw, b, _ = pred.shape
    rows = torch.arange(gh, dtype=pred.dtype, device=pred.device).view(1, gh, 1, 1)
    cols = torch.arange(gw, dtype=pred.dtype, device=pred.device).view(1, 1, gw, 1)
    cx = (cols + torch.sigmoid(pred[..., 1])) * stride
    cy = (rows + torch.sigmoid(pred[..., 2])) * stride
    h = anchors[:, 1].view(1, 1, 1, b) * torch.exp(pred[..., 3].clamp(max=10))
    w = anchors[:, 0].view(1, 1, 1, b) * torch.exp(pred[..., 4].clamp(max=10))
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def box_iou_torch(a: Tensor, b: Tensor) -> Tensor:
    """K x M IoU of xyxy boxes."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def yolo_loss(
    preds: list[Tensor],
    targets: list[Tensor],
    gt_boxes: list[Tensor] | None,
    anchors: Tensor,
    strides: tuple[int, ...],
    weights: LossWeights,
) -> dict[str, Tensor]:
    """Loss parts and ``total``; ``gt_boxes[i]`` (M_i x 4 xyxy input pixels) feed the ignore rule
    (None: no ignore rule, every unassigned anchor is a negative)."""
    n = preds[0].shape[0]
    parts = {k: preds[0].new_zeros(()) for k in ("box", "obj", "noobj", "cls")}
    for scale, (pred, target) in enumerate(zip(preds, targets)):
        pos = target[..., 0] > 0.5
        neg = ~pos
        if gt_boxes is not None and weights.ignore_iou < 1.0:
            with torch.no_grad():
                boxes = decode_boxes_torch(pred.detach(), anchors[scale], strides[scale])
                for i in range(n):
                    if gt_boxes[i].numel():
                        best = box_iou_torch(boxes[i].reshape(-1, 4), gt_boxes[i]).max(dim=1).values
                        neg[i] &= ~(best.view(neg[i].shape) > weights.ignore_iou)
        logit_obj = pred[..., 0]
        if pos.any():
            p, t = pred[pos], target[pos]
            xy = (torch.sigmoid(p[:, 1:3]) - t[:, 1:3]).pow(2).sum()
            hw = (p[:, 3:5] - torch.log(t[:, 3:5].clamp(min=1e-9))).pow(2).sum()
            parts["box"] = parts["box"] + weights.lambda_coord * (xy + hw)
            parts["obj"] = parts["obj"] + weights.lambda_obj * F.binary_cross_entropy_with_logits(
                logit_obj[pos], torch.ones_like(logit_obj[pos]), reduction="sum"
            )
            parts["cls"] = parts["cls"] + weights.lambda_cls * F.cross_entropy(
                p[:, N_BOX_FIELDS:], t[:, N_BOX_FIELDS:].argmax(dim=1), reduction="sum"
            )
        if neg.any():
            parts["noobj"] = parts["noobj"] + weights.lambda_noobj * F.binary_cross_entropy_with_logits(
                logit_obj[neg], torch.zeros_like(logit_obj[neg]), reduction="sum"
            )
    out = {k: v / n for k, v in parts.items()}
    out["total"] = out["box"] + out["obj"] + out["noobj"] + out["cls"]
    return out
