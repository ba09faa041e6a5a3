"""A server warms up before it listens (components/service/warm_up.py): the model in service, its
served graphs and the cascade are loaded and run once, so the first requests wait for nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.integration


def test_warm_up_loads_and_runs_every_served_part(sandbox):
    from facegate.components.core.settings import load_settings
    from facegate.components.embedding.inference_graphs import CompiledEmbedding, full_graph
    from facegate.components.service.facade import FaceGate
    from facegate.components.service.warm_up import warm_up

    gate = FaceGate(load_settings())
    out = warm_up(gate)
    assert {"recognizer", "full_embedding", "cheap_pass"} <= set(out), out
    assert all(isinstance(out[k], float) for k in ("recognizer", "full_embedding", "cheap_pass")), out
    model = gate.recognizer.model
    if gate.settings.embedding.backend == "openvino":  # the graph the first request uses is built already
        chips = np.zeros((1, 150, 150, 6), np.uint8)
        with torch.inference_mode():
            assert isinstance(full_graph(model, chips, gate.settings.embedding.flip_tta), CompiledEmbedding)
    assert "pad" not in out  # the suite's params run without PAD: nothing of it is loaded
