import pytest

from components.errors import SettingsError
from components.paths import repo_root
from components.settings import load_settings, parse_settings


def test_repository_params_load():
    s = load_settings(repo_root() / "params.yaml")
    assert s.ingest.val_fraction == pytest.approx(0.2)
    assert {d.name for d in s.ingest.datasets} == {"lfw", "facemask"}
    assert "validate.min_images_per_train_identity" in s.flat()


def test_unknown_key_is_named():
    with pytest.raises(SettingsError, match=r"ingest\.val_fractoin"):
        parse_settings({"ingest": {"val_fractoin": 0.3}})


def test_bad_value_is_named():
    with pytest.raises(SettingsError, match=r"ingest\.val_fraction"):
        parse_settings({"ingest": {"val_fraction": 1.5}})
    with pytest.raises(SettingsError, match=r"ingest\.datasets\.0\.kind"):
        parse_settings({"ingest": {"datasets": [{"name": "x", "kind": "zip", "path": "x"}]}})


def test_missing_and_malformed_file(tmp_path):
    with pytest.raises(SettingsError, match="file not found"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(bad)
