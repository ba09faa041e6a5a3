"""Receptive fields traced from the forward pass, against strides and kernels worked by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facegate.components.core.errors import FacegateError, ReceptiveFieldUntraceable, UnknownLayer
from facegate.components.explain.receptive_field import (
    Geometry,
    geometry_from_path,
    gradient_support,
    receptive_field,
    trace_geometry,
)


def stack(pool: type = nn.MaxPool2d) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=1, padding=1),
        nn.ReLU(),  # "0"
        nn.Conv2d(4, 4, 3, stride=2, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),  # "2"
        pool(2, 2),  # "5"
        nn.Conv2d(4, 4, 3, stride=1, padding=1),  # "6"
    ).eval()


# rf' = rf + (k-1)*d*j ; j' = j*s ; start' = start + ((k-1)/2*d - p)*j ; the input: rf 1, j 1, start 0
#   "0" conv3 s1 p1 : rf 1 + 2*1 = 3   j 1   start 0 + (1 - 1)*1   = 0
#   "2" conv3 s2 p1 : rf 3 + 2*1 = 5   j 2   start 0 + (1 - 1)*1   = 0
#   "5" maxpool2 s2 : rf 5 + 1*2 = 7   j 4   start 0 + (0.5 - 0)*2 = 1
#   "6" conv3 s1 p1 : rf 7 + 2*4 = 15  j 4   start 1 + (1 - 1)*4   = 1
# so position (y, x) of "6" is centred on input pixel 1 + 4y and covers [1 + 4y - 7, 1 + 4y + 7]
HAND = {"0": (3, 1, 0.0), "2": (5, 2, 0.0), "5": (7, 4, 1.0), "6": (15, 4, 1.0)}


def test_receptive_fields_match_the_hand_worked_strides_and_grow_with_depth():
    geos = trace_geometry(stack(), torch.rand(1, 3, 32, 32), list(HAND))
    for name, (rf, jump, start) in HAND.items():
        g, _shape = geos[name]
        assert (g.rf, g.jump, g.start) == ((rf, rf), (jump, jump), (start, start)), name
    rfs = [geos[n][0].rf[0] for n in HAND]
    assert rfs == sorted(rfs) and len(set(rfs)) == len(rfs)
    g = geos["6"][0]
    assert g.box(0, 0) == (-6, -6, 9, 9)  # 15 px, off the image at the top left (padding)
    assert g.box(3, 2) == (6, 2, 21, 17)  # centred on (13, 9)
    assert geos["6"][1] == (4, 8, 8)
    assert g.as_json() == {"receptive_field_px": 15, "jump_px": 4, "start_px": 1.0}


def test_explicit_path_dilation_and_no_padding():
    g = geometry_from_path([(3, 1, 1, 1), (3, 2, 1, 1), (2, 2, 0, 1), (3, 1, 1, 1)])  # the stack above
    assert (g.rf, g.jump, g.start) == ((15, 15), (4, 4), (1.0, 1.0))
    # conv3 p0: start 1 (the first full window is centred on pixel 1); conv3 d2 p0 after it: rf 3 + 2*2 = 7,
    # start 1 + (1*2 - 0)*1 = 3
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Conv2d(2, 2, 3, dilation=2)).eval()
    geos = trace_geometry(net, torch.rand(1, 3, 16, 16), ["0", "1"])
    assert geos["0"][0] == Geometry((3, 3), (1, 1), (1.0, 1.0))
    assert geos["1"][0] == Geometry((7, 7), (1, 1), (3.0, 3.0))
    assert geos["1"][0].box(0, 0) == (0, 0, 7, 7)
    over = trace_geometry(net, torch.rand(1, 3, 16, 16), ["1"], paths={"1": [(5, 1, 0)]})
    assert over["1"][0].rf == (5, 5)


def test_traced_box_is_the_gradient_support():
    """Positive weights and no ReLU: d(unit)/d(input) is non-zero exactly on the traced box (clipped)."""
    net = stack(pool=nn.AvgPool2d)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0)
    net = nn.Sequential(*[m for m in net if not isinstance(m, (nn.ReLU, nn.BatchNorm2d))])  # conv conv pool conv
    x = torch.rand(1, 3, 40, 40) + 0.1
    g = receptive_field(net, "3", x)
    assert g.rf == (15, 15)
    for y, xx in [(0, 0), (4, 5), (9, 9)]:
        y0, x0, y1, x1 = g.box(y, xx)
        assert gradient_support(net, "3", x, 0, y, xx) == (max(y0, 0), max(x0, 0), min(y1, 40), min(x1, 40))


class DownBlock(nn.Module):
    """dlib's residual_down: relu(avgpool2x2/2(x) + conv3/2 -> relu -> conv3), a functional pool."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 2, 1), nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1))

    def forward(self, x):
        return F.relu(F.avg_pool2d(x, 2, 2) + self.body(x))


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1))

    def forward(self, x):
        return F.relu(x + self.body(x))


def test_residual_blocks_follow_the_main_path():
    # stem conv3: rf 3. Block: 2 x conv3 -> rf 7, j 1. DownBlock: conv3/2 -> rf 9, j 2; conv3 -> 9 + 2*2 = 13.
    # The shortcut's avgpool2/2 (rf 8, start 0.5) lies inside the main box: the union is the main path.
    net = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), Block(4), DownBlock(4)).eval()
    geos = trace_geometry(net, torch.rand(1, 3, 32, 32), ["1", "2"])
    assert geos["1"][0] == Geometry((7, 7), (1, 1), (0.0, 0.0))
    assert geos["2"][0] == Geometry((13, 13), (2, 2), (0.0, 0.0))


def test_untraceable_layer_asks_for_a_path():
    class Up(nn.Module):
        def forward(self, x):
            return F.interpolate(x, scale_factor=2)

    net = nn.Sequential(nn.Conv2d(3, 2, 3), Up(), nn.Conv2d(2, 2, 3)).eval()
    with pytest.raises(ReceptiveFieldUntraceable, match="paths="):
        trace_geometry(net, torch.rand(1, 3, 16, 16), ["2"])
    assert trace_geometry(net, torch.rand(1, 3, 16, 16), ["2"], paths={"2": [(3, 1, 0)]})["2"][0].rf == (3, 3)


def test_unknown_layer_is_typed_and_lists_the_valid_names():
    net = stack()
    with pytest.raises(UnknownLayer) as e:
        trace_geometry(net, torch.rand(1, 3, 16, 16), ["0", "conv9"], model_name="tiny")
    err = e.value
    assert isinstance(err, FacegateError) and isinstance(err, KeyError)
    assert err.code == "unknown_layer" and err.http_status == 422
    assert err.name == "conv9" and err.valid == ["0", "1", "2", "3", "4", "5", "6"]
    assert "'conv9' in tiny" in str(err) and "0, 1, 2" in str(err)
    with pytest.raises(UnknownLayer, match="Did you mean: 6"):
        receptive_field(net, "6x", torch.rand(1, 3, 8, 8))
