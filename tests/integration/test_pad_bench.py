"""`bench pad --live DIR --attack KIND=DIR` on a site's own folders (here a small slice of nuaa-dev laid
out as a site would: person sub-folders), scored by the model in service as served."""

from __future__ import annotations

import json

import pytest

from facegate.components.core.paths import weights_root
from tests.conftest import link_or_copy, requires_dataset, shared_dataset

pytestmark = [
    pytest.mark.integration,
    requires_dataset("nuaa-dev"),
    pytest.mark.skipif(
        not (weights_root() / "minifasnet").is_dir(),
        reason=f"MiniFASNet weights not under {weights_root()} (set FACEGATE_WEIGHTS)",
    ),
]


def test_site_folders(tmp_path):
    from facegate.benchmarks.pad import run_site_benchmark
    from facegate.components.core.settings import load_settings

    src = shared_dataset("nuaa-dev")
    for folder, kind in (("live", "live"), ("print", "paper")):
        for person in ("0001", "0002"):
            for f in sorted((src / folder / person).glob("*.jpg"))[:4]:
                link_or_copy(f, tmp_path / kind / person / f.name)
    settings = load_settings().replace({"pad": {"mode": "enforce", "model": "minifasnet_pair"}})
    out = run_site_benchmark(settings, tmp_path / "live", {"paper": tmp_path / "paper"}, det_png=tmp_path / "det.png")
    assert {"bpcer20", "bpcer100", "apcer", "bpcer", "iapmr_enforce", "ms_per_face"} <= set(out)
    assert out["frames"] == {"live": 8, "paper": 8} and out["model_in_service"] == "minifasnet_pair"
    assert out["apcer_per_kind"] == {"paper": out["apcer"]} and out["apcer"] == 0.0 and out["bpcer"] == 0.0
    assert out["iapmr_pad_off"] > 0 and out["iapmr_enforce"] == 0.0  # prints that match, all stopped by PAD
    assert (tmp_path / "det.png").stat().st_size > 0
    json.dumps(out)  # the CLI writes it as JSON
