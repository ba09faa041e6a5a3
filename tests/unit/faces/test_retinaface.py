"""The torch port of RetinaFace-MobileNet0.25 against OpenCV's ONNX runtime on real face-mask images; a
changed graph is refused; the detector finds the annotated faces."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
import torch
from onnx import helper

from facegate.components.core.images import load_image
from facegate.components.core.weights import embedded_bytes
from facegate.components.faces.boxes import iou_matrix
from facegate.components.faces.retinaface import (
    RetinaFaceDetector,
    RetinaFaceFormatError,
    anchors_for,
    load_retinaface,
    preprocess,
    retinaface_onnx,
)
from tests.conftest import SHARED_DATASETS, requires_dataset

TOLERANCE = 1e-4  # max abs difference on every output (box and landmark offsets, softmaxed scores)
IMAGES = ("maksssksksss0", "maksssksksss1", "maksssksksss10")  # 512x366, 400x156, 301x400: odd grid sizes


@pytest.fixture(scope="module")
def net():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return load_retinaface()


def _truth(name: str) -> np.ndarray:
    root = ET.parse(SHARED_DATASETS / "facemask" / "annotations" / f"{name}.xml").getroot()
    return np.array(
        [[float(o.find("bndbox").find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")] for o in root.iter("object")]
    )


@requires_dataset("facemask")
def test_port_matches_opencv_onnx_runtime(net):
    reference = cv2.dnn.readNetFromONNX(np.frombuffer(embedded_bytes("retinaface_mnet025"), np.uint8))
    for name in IMAGES:
        image = load_image(SHARED_DATASETS / "facemask" / "images" / f"{name}.jpg")
        x = preprocess(image[None])
        with torch.inference_mode():
            ours = dict(zip(("loc", "conf", "landmarks"), net(x)))
        reference.setInput(x.numpy())
        theirs = dict(
            zip(reference.getUnconnectedOutLayersNames(), reference.forward(reference.getUnconnectedOutLayersNames()))
        )
        assert len(anchors_for(*image.shape[:2])) == ours["loc"].shape[1]
        for key, value in ours.items():
            assert value.shape == theirs[key].shape, key
            assert np.abs(value.numpy() - theirs[key]).max() < TOLERANCE, (name, key)


@requires_dataset("facemask")
def test_detector_finds_the_annotated_faces():
    detector = RetinaFaceDetector(0, scale=2.0, score_threshold=0.5, max_side=1600, threads=2)
    image = load_image(SHARED_DATASETS / "facemask" / "images" / f"{IMAGES[0]}.jpg")
    faces = detector.detect(image)
    truth = _truth(IMAGES[0])
    assert faces and all(f.landmarks.shape == (5, 2) for f in faces)
    best = iou_matrix(truth, np.array([f.as_list() for f in faces], float)).max(1)
    assert (best >= 0.4).mean() >= 0.5  # most annotated faces, on a frame with small and masked ones


def test_a_changed_graph_is_refused():
    model = retinaface_onnx()
    conv = next(
        n
        for n in model.graph.node
        if n.op_type == "Conv" and any(a.name == "strides" and list(a.ints) == [2, 2] for a in n.attribute)
    )
    for a in conv.attribute:
        if a.name == "strides":
            a.CopyFrom(helper.make_attribute("strides", [1, 1]))
    with pytest.raises(RetinaFaceFormatError, match=r"stem is \(\[3, 3\], \[2, 2\]"):
        load_retinaface(model)
