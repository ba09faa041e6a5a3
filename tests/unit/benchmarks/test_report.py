"""benchmarks/report.py: result files -> docs/benchmarks.md and the README's headline table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facegate.benchmarks import report

README = "# facegate\n\nintro\n\n<!-- headline:start -->\nold table\n<!-- headline:end -->\n\n## After\n"


def _write(folder: Path, name: str, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(data))
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    results, docs = tmp_path / "benchmarks" / "results", tmp_path / "docs" / "benchmarks.md"
    readme = tmp_path / "README.md"
    readme.write_text(README)
    return results, docs, readme


def test_names_follow_the_convention() -> None:
    assert report.parse_name("lfw-20261201-91b28bd") == {
        "kind": "lfw",
        "date": "2026-12-01",
        "time": "",
        "commit": "91b28bd",
        "note": "",
    }
    assert report.parse_name("face-detectors-20261201T1934-abcdef1-retinaface")["kind"] == "face-detectors"
    masked = report.parse_name("lfw-masked-20261201-91b28bd")
    assert (masked["kind"], masked["note"]) == ("lfw", "masked")
    assert report.parse_name("api_load-20261201")["kind"] == "api-load"
    assert report.parse_name("whatever")["kind"] == "whatever"


def test_no_results_yet(tree) -> None:
    results, docs, readme = tree
    assert report.write_report(results, docs, readme) == []
    assert "no results yet" in docs.read_text()
    text = readme.read_text()
    assert "no results yet" in text and "old table" not in text
    assert text.startswith("# facegate\n\nintro\n") and text.endswith("<!-- headline:end -->\n\n## After\n")


def test_two_runs_fill_both_tables(tree) -> None:
    results, docs, readme = tree
    _write(
        results,
        "lfw-20261201-91b28bd.json",
        {
            "backbone": "dlib_resnet+sface",
            "mode": "pretrained",
            "protocol": "plain",
            "flip_tta": True,
            "accuracy_mean": 0.996,
            "accuracy_std": 0.0028,
            "auc": 0.9991,
            "tar_at_far_1e-3": 0.991,
            "pipeline_images_per_s": 41.0,
            "pipeline_cpu_ms_per_image": 43.6,
            "speed_loadavg_1min": 1.41,
            "_distances": "[...]",
        },
    )
    _write(
        results,
        "identify-20261202-0b1edee.json",
        {
            "backbone": "dlib_resnet+sface",
            "mode": "pretrained",
            "rank1": 0.994,
            "dir_at_fpir_1e-2": 0.979,
            "identify_ms_p50": 57.0,
            "identify_ms_p99": 103.9,
            "identify_loadavg_1min": [1.1, 1.3],
        },
    )
    (results / "broken-20261203.json").write_text("{not json")
    runs = report.write_report(results, docs, readme)
    assert [r.kind for r in runs] == ["lfw", "identify"]

    page = docs.read_text()
    assert "## lfw (`facegate bench lfw`)" in page and "## identify (`facegate bench identify`)" in page
    assert "99.60% ± 0.28" in page and "| 2026-12-01 | 91b28bd | 1.41 |" in page
    assert "[lfw-20261201-91b28bd.json](../benchmarks/results/lfw-20261201-91b28bd.json)" in page
    assert "1.10 -> 1.30" in page and "broken-20261203.json: not readable JSON" in page

    head = readme.read_text()
    assert "Newest run 2026-12-02 at commit 0b1edee" in head
    assert "| rank-1, open-set one-shot (LFW) | 0.994 |" in head
    assert "57.0 / 103.9 ms" in head and "41.0" in head
    assert "(benchmarks/results/identify-20261202-0b1edee.json)" in head
    assert "| face-mask detector mAP@0.5 (held-out) | no run yet |" in head


def test_newest_run_wins_and_json_keys_override_the_name(tree) -> None:
    results, docs, readme = tree
    _write(results, "lfw-20261101-aaaaaaa.json", {"accuracy_mean": 0.990})
    _write(results, "lfw-20261201-bbbbbbb.json", {"accuracy_mean": 0.995})
    _write(results, "mine.json", {"benchmark": "detect", "date": "2026-12-05", "commit": "ccccccc", "map50": 0.855})
    report.write_report(results, docs, readme)
    head = readme.read_text()
    assert "99.50%" in head and "99.00%" not in head
    assert "| face-mask detector mAP@0.5 (held-out) | 0.855 |  | 2026-12-05 | ccccccc |" in head
    assert docs.read_text().index("lfw-20261201") < docs.read_text().index("lfw-20261101")


def test_unknown_kind_gets_a_generic_table(tree) -> None:
    results, docs, readme = tree
    _write(results, "newthing-20261201-abcdef0.json", {"speed": 3.5, "label": "x", "loadavg_before": [0.5, 0.4, 0.3]})
    report.write_report(results, docs, None)
    page = docs.read_text()
    assert "## newthing" in page and "| speed |" in page and "3.500" in page and "| 0.50 |" in page
    assert readme.read_text() == README


def test_readme_without_markers_is_an_error(tree) -> None:
    results, docs, readme = tree
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="markers"):
        report.write_report(results, docs, readme)
    assert report.main(["--results", str(results), "--docs", str(docs), "--readme", str(readme)]) == 2


def test_the_detector_headline_quotes_the_seeds_mean_lowest_and_spread():
    from facegate.benchmarks.report import HEADLINES

    (row,) = [h for h in HEADLINES if h.figure.startswith("face-mask detector")]
    seeds = {"seeds": [1, 2, 3], "summary": {"map50": {"mean": 0.8484, "min": 0.8308, "std": 0.0158}}}
    assert row.cell(seeds) == "0.848 mean of 3 seeds (lowest 0.831, std 0.016)"
    assert row.cell({"map50": 0.8612}) == "0.861"  # one trained champion scored
