import pytest

from facegate.components.core.errors import SettingsError
from facegate.components.core.paths import repo_root
from facegate.components.core.settings import load_settings, parse_settings, read_params


def test_repository_params_load():
    s = load_settings(repo_root() / "params.yaml")
    assert s.ingest.val_fraction == pytest.approx(0.2)
    assert {d.name for d in s.ingest.datasets} == {"lfw", "facemask", "captures"}
    assert "validate.min_images_per_train_identity" in s.flat()


def test_unknown_key_is_named():
    with pytest.raises(SettingsError, match=r"ingest\.val_fractoin"):
        load_settings(overrides={"ingest": {"val_fractoin": 0.3}})


def test_bad_value_is_named():
    with pytest.raises(SettingsError, match=r"ingest\.val_fraction"):
        load_settings(overrides={"ingest": {"val_fraction": 1.5}})
    with pytest.raises(SettingsError, match=r"ingest\.datasets\.0\.kind"):
        load_settings(overrides={"ingest": {"datasets": [{"name": "x", "kind": "zip", "path": "x"}]}})


def test_a_missing_key_is_named_never_defaulted():
    raw = read_params()
    del raw["faces"]["detector"]
    with pytest.raises(SettingsError, match=r"faces\.detector: Field required"):
        parse_settings(raw)


def test_overrides_merge_section_by_section_and_are_validated():
    s = load_settings()
    t = s.replace({"api": {"max_files": 2}, "validate": {"max_listed_rows": 3}})
    assert (t.api.max_files, t.validate_.max_listed_rows, t.api.port) == (2, 3, s.api.port)
    assert load_settings(overrides={"api": {"max_files": 2}}) == t.replace(
        {"validate": {"max_listed_rows": s.validate_.max_listed_rows}}
    )
    assert list(s.replace({"style": {"style_layers": {"features.1": 1.0}}}).style.style_layers) == ["features.1"]
    with pytest.raises(SettingsError, match=r"gallery\.keep_version"):
        s.replace({"gallery": {"keep_version": 1}})


def test_missing_and_malformed_file(tmp_path):
    with pytest.raises(SettingsError, match="file not found"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(bad)


def test_run_configs_come_from_params_alone():
    """TrainConfig and DetectTrainConfig hold no defaults of their own: every value is params'."""
    from facegate.components.core.devices import resolve_torch_device
    from facegate.components.detection.train import DetectTrainConfig
    from facegate.components.embedding.train import TrainConfig

    s = load_settings(repo_root() / "params.yaml")
    train = TrainConfig.from_settings(s)
    device = str(resolve_torch_device(s.embedding.device))  # resolved: 'cpu' here, 'cuda:0' on a GPU
    assert {**s.train.model_dump(), "seed": s.seed, "device": device} == train.__dict__
    assert TrainConfig.from_settings(s, epochs=3, lr=None).epochs == 3  # None: params' value
    assert TrainConfig.from_settings(s, lr=None).lr == s.train.lr
    cfg = DetectTrainConfig.from_settings(s, frozen_epochs=1)
    d = s.detection
    assert cfg.frozen_epochs == 1 and cfg.finetune_epochs == d.finetune_epochs and cfg.classes == d.classes
    assert cfg.loss.lambda_noobj == d.lambda_noobj and cfg.loss.ignore_iou == d.ignore_iou
    assert cfg.augment.crop_scale_min == d.crop_scale_min and cfg.augment.min_visibility == d.min_visibility
    assert cfg.eval_every == d.eval_every and cfg.seed == s.seed
    assert cfg.device == str(resolve_torch_device(d.device, key="detection.device"))
    with pytest.raises(TypeError, match="no field"):
        TrainConfig.from_settings(s, epoch=3)  # a typo fails, never silently ignored


def test_validation_reads_the_shared_image_and_detector_settings():
    with pytest.raises(SettingsError, match=r"validate\.min_side"):
        load_settings(overrides={"validate": {"min_side": 16}})  # images.min_side is the one knob
    with pytest.raises(SettingsError, match=r"validate\.detection_classes"):
        load_settings(overrides={"validate": {"detection_classes": ["a"]}})  # detection.classes is
