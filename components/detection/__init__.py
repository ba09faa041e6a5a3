"""A YOLO-style face-mask detector: one network, an S x S grid per scale, B anchors per cell.

Each anchor of each cell predicts (p_c, b_x, b_y, b_h, b_w, c_1..c_C): pure building blocks live here
(boxes and IoU, k-means anchors, grid targets, the model, the loss, decoding with per-class NMS, VOC and
COCO mAP, bbox-aware augmentation, the training loop); Prefect wiring lives in flows/detect.py.
"""
