import numpy as np

from facegate.components.faces.types import FaceBox
from facegate.components.service.mask_state import assign_mask_states

NAMES = ("with_mask", "without_mask", "mask_weared_incorrect")


def test_each_face_takes_the_class_of_the_detection_overlapping_it_most():
    faces = [FaceBox(0, 0, 10, 10), FaceBox(50, 50, 70, 70), FaceBox(200, 200, 210, 210)]
    boxes = np.array([[51, 52, 70, 71], [1, 0, 11, 10], [0, 0, 4, 4]], np.float32)
    labels = np.array([2, 0, 1])
    assert assign_mask_states(faces, boxes, labels, NAMES) == ["with_mask", "mask_weared_incorrect", None]


def test_no_detections_or_no_faces():
    assert assign_mask_states([FaceBox(0, 0, 5, 5)], np.zeros((0, 4)), np.zeros(0), NAMES) == [None]
    assert assign_mask_states([], np.ones((1, 4)), np.zeros(1), NAMES) == []
