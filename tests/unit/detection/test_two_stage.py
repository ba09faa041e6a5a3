"""The two-stage detector's parts on tiny generated data: crop geometry, the box correction, the classifier
learning a colour-coded "mask state" from frozen ImageNet features, and the detector interface (real
RetinaFace proposals on a real face-mask image; scores = face score x class probability)."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch

from facegate.components.core.images import load_image
from facegate.components.detection.data import DetectionSample
from facegate.components.detection.decode import detect_images
from facegate.components.detection.two_stage import (
    TwoStageConfig,
    apply_box_correction,
    apply_deltas,
    box_deltas,
    face_crop,
    fit_box_correction,
)
from facegate.components.detection.two_stage_training import train_two_stage
from facegate.components.networks.mobilenet_v2 import normalise
from tests.conftest import SHARED_DATASETS, requires_dataset

COLOURS = np.array([[220, 30, 30], [30, 200, 30], [30, 30, 220]], np.uint8)  # one "mask state" per class


def _cfg(**kw) -> TwoStageConfig:
    base = dict(
        classes=("with_mask", "without_mask", "mask_weared_incorrect"),
        crop_size=32,
        crop_context=1.3,
        jitter=0.1,
        proposal_scale=1.0,
        proposal_score_threshold=0.05,
        proposal_nms_iou=0.4,
        box_fit_images=2,
        frozen_epochs=12,
        frozen_copies=2,
        finetune_epochs=0,
        finetune_stages=1,
        lr_head=0.01,
        lr_finetune=1e-4,
        weight_decay=0.0,
        batch_size=16,
        balance="sampling",
        flip_p=0.5,
        colour_p=0.0,
        rgb_shift=0,
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        hue=0.0,
        eval_score_threshold=0.01,
        nms_iou=0.45,
        max_detections=100,
        seed=0,
        flip_tta=False,
        threads=2,
    )
    return TwoStageConfig(**{**base, **kw})


def _samples(n: int, seed: int) -> list[DetectionSample]:
    """Grey noise images with two 24-px squares each, the lower half of a square coloured by its class."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = rng.integers(90, 160, (96, 96, 3), dtype=np.uint8)
        boxes, labels = [], []
        for x in (10, 58):
            y = int(rng.integers(10, 60))
            label = int(rng.integers(0, 3)) if i % 4 else 2  # the "rare" class, a quarter of the images
            img[y : y + 24, x : x + 24] = 200
            img[y + 12 : y + 24, x : x + 24] = COLOURS[label]
            boxes.append([x, y, x + 24, y + 24])
            labels.append(label)
        out.append(DetectionSample(f"gen{i}.png", img, np.array(boxes, float), np.array(labels)))
    return out


def test_face_crop_geometry_and_mirror():
    img = np.zeros((100, 100, 3), np.uint8)
    img[40:60, 40:50] = 255  # left half of the box white
    crop = face_crop(img, [40, 40, 60, 60], 20, 1.0)
    assert crop.shape == (20, 20, 3)
    assert crop[:, :9].min() == 255 and crop[:, 11:].max() == 0
    mirrored = face_crop(img, [40, 40, 60, 60], 20, 1.0, flip=True)
    assert mirrored[:, 11:].min() == 255 and mirrored[:, :9].max() == 0
    wider = face_crop(img, [40, 40, 60, 60], 20, 2.0)  # context 2: the box fills the middle half
    assert wider[:, :4].max() == 0 and wider[10, 5:9].min() == 255


def test_box_correction_recovers_a_known_shift_and_scale():
    rng = np.random.default_rng(1)
    pred = [
        np.c_[xy, xy + wh] for xy, wh in ((rng.uniform(0, 200, (5, 2)), rng.uniform(20, 40, (5, 2))) for _ in range(6))
    ]
    truth_corr = np.array([0.05, 0.1, 1.2, 1.3])
    truth = [apply_box_correction(p, truth_corr) for p in pred]
    assert np.allclose(fit_box_correction(pred, truth), truth_corr, atol=1e-9)
    assert np.allclose(fit_box_correction([np.zeros((0, 4))], [np.zeros((0, 4))]), [0, 0, 1, 1])
    target = truth[0] + [3.0, -2.0, 5.0, 1.0]
    assert np.allclose(apply_deltas(pred[0], box_deltas(pred[0], target)), target)


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(2)
    result = train_two_stage(_samples(24, 0), _samples(8, 1), _cfg())
    return result


def test_classifier_learns_the_crops_class(trained):
    last = trained.history[-1]
    assert trained.class_counts["mask_weared_incorrect"] > 0
    assert last["val_crop_accuracy"] >= 0.9, trained.history
    assert np.allclose(trained.box_correction, [0, 0, 1, 1])  # no face on noise: RetinaFace matches nothing
    assert trained.class_counts["background"] <= 2 * 24  # at most two "not a face" proposals per image


@requires_dataset("facemask")
def test_detector_interface_on_a_real_image(trained):
    model = trained.model
    image = load_image(SHARED_DATASETS / "facemask" / "images" / "maksssksksss0.jpg")
    faces = detect_images(model, [image], score_threshold=0.3, iou_threshold=0.45, class_agnostic=True)[0]
    per_class = detect_images(model, [image], score_threshold=0.01, iou_threshold=0.45)[0]
    assert len(faces) > 0 and set(faces.labels) <= {0, 1, 2}
    assert per_class.scores.max() <= faces.scores.max() + 1e-9  # face score x a class's share of P(face)
    assert (per_class.boxes[:, 2] <= image.shape[1]).all() and (per_class.boxes[:, 3] <= image.shape[0]).all()
    buf = io.BytesIO()  # MLflow pickles the model: the copy answers the same
    pickle.dump(model, buf)
    copy = pickle.loads(buf.getvalue())
    again = detect_images(copy, [image], score_threshold=0.3, iou_threshold=0.45, class_agnostic=True)[0]
    assert np.allclose(again.boxes, faces.boxes) and np.allclose(again.scores, faces.scores)
    model.clear_proposal_cache()
    fresh = detect_images(model, [image], score_threshold=0.3, iou_threshold=0.45, class_agnostic=True)[0]
    assert np.allclose(fresh.boxes, faces.boxes)


def test_same_seed_trains_the_same_classifier():
    """Sampling, jitter, colour shifts, initialisation and both phases seeded: identical weights."""
    cfg = _cfg(frozen_epochs=2, finetune_epochs=1, colour_p=1.0, rgb_shift=10, brightness=0.2)
    first, second = (train_two_stage(_samples(6, 0), [], cfg).model.classifier.state_dict() for _ in range(2))
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = train_two_stage(
        _samples(6, 0), [], _cfg(frozen_epochs=2, finetune_epochs=1, colour_p=1.0, rgb_shift=10, brightness=0.2, seed=1)
    ).model.classifier.state_dict()
    assert not torch.equal(first["fc.weight"], other["fc.weight"])


@requires_dataset("facemask")
def test_flip_tta_averages_the_crop_and_its_mirror(trained):
    model = trained.model
    image = load_image(SHARED_DATASETS / "facemask" / "images" / "maksssksksss0.jpg")
    boxes = model.propose(image)[0][:3]
    mirrored = np.stack([face_crop(image, b, model.crop_size, model.crop_context, flip=True) for b in boxes])
    with torch.inference_mode():  # as detect_images calls it
        plain_probs, _ = model.classify(image, boxes)
        mirror_probs = model.classifier(normalise(mirrored)).softmax(1).numpy()[:, :3]
        model.flip_tta = True
        try:
            tta_probs, tta_boxes = model.classify(image, boxes)
        finally:
            model.flip_tta = False
    assert np.allclose(tta_probs, (plain_probs + mirror_probs) / 2, atol=1e-4)
    assert tta_boxes.shape == boxes.shape
