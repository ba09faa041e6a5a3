"""Grid targets on the course's example: a 3 x 3 grid, two anchors, a person and a car in one cell."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.components.detection.encoding import GridLayout, encode_targets

PEDESTRIAN, CAR, MOTORCYCLE = 0, 1, 2
# 300 x 300 input, stride 100: a 3 x 3 grid; anchor 1 tall (a person's shape), anchor 2 wide (a car's)
COURSE = GridLayout((300, 300), (100,), (((30.0, 90.0), (90.0, 30.0)),), num_classes=3)


def test_person_and_car_in_one_cell_take_one_anchor_each():
    person = [140, 190, 180, 290]  # centre (160, 240), w 40, h 100: tall
    car = [90, 240, 190, 280]  # centre (140, 260), w 100, h 40: wide
    t = encode_targets(np.array([person, car]), np.array([PEDESTRIAN, CAR]), COURSE)
    y = t.grids[0]
    assert y.shape == (3, 3, 2, 8)  # S x S x B x (p_c, b_x, b_y, b_h, b_w, c1, c2, c3)
    assert t.dropped == 0
    # both centres lie in row 2, column 1 (the bottom-middle cell)
    np.testing.assert_allclose(y[2, 1, 0], [1, 0.6, 0.4, 100 / 90, 40 / 30, 1, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(y[2, 1, 1], [1, 0.4, 0.6, 40 / 30, 100 / 90, 0, 1, 0], rtol=1e-6)
    assert y[..., 0].sum() == 2  # every other cell and anchor: p_c = 0 ("don't care" for the rest)
    assert not y[0].any() and not y[1].any()


def test_an_empty_image_has_no_objects():
    y = encode_targets(np.zeros((0, 4)), np.zeros(0), COURSE).grids[0]
    assert y.shape == (3, 3, 2, 8) and not y.any()


def test_collision_moves_to_the_next_best_anchor_then_drops():
    tall = [[140, 190, 180, 290], [145, 195, 175, 285], [150, 200, 170, 280]]
    t = encode_targets(np.array(tall), np.array([PEDESTRIAN, MOTORCYCLE, PEDESTRIAN]), COURSE)
    y = t.grids[0]
    assert y[2, 1, 0, 0] == 1 and y[2, 1, 0, 5] == 1  # first tall box: the tall anchor
    assert y[2, 1, 1, 0] == 1 and y[2, 1, 1, 7] == 1  # second: the wide anchor, the only one left
    assert t.dropped == 1  # the third finds no free anchor in the cell


def test_multi_scale_the_anchor_chooses_the_grid():
    layout = GridLayout((64, 64), (8, 16), (((8.0, 8.0),), ((32.0, 32.0),)), num_classes=1)
    t = encode_targets(np.array([[0, 0, 8, 8], [16, 16, 48, 48]]), np.array([0, 0]), layout)
    small, large = t.grids
    assert small.shape == (8, 8, 1, 6) and large.shape == (4, 4, 1, 6)
    np.testing.assert_allclose(small[0, 0, 0, :5], [1, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(large[2, 2, 0, :5], [1, 0.0, 0.0, 1, 1])  # centre (32, 32): corner of cell (2, 2)
    assert small[..., 0].sum() == 1 and large[..., 0].sum() == 1


def test_layout_checks_and_anchor_split():
    with pytest.raises(ValueError, match="multiple of stride"):
        GridLayout((100, 100), (8,), (((1.0, 1.0),),), 1)
    split = GridLayout.split_anchors(np.array([[50, 50], [5, 5], [20, 20], [10, 10]]), (8, 16))
    assert split == (((5.0, 5.0), (10.0, 10.0)), ((20.0, 20.0), (50.0, 50.0)))
