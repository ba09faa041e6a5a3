import numpy as np

from facegate.components.core.settings import load_settings
from facegate.components.faces.augment import as_function, describe, face_augmentation


def augment(**overrides):
    """params' augment section with ``overrides``."""
    return load_settings(overrides={"augment": overrides}).augment


def test_always_flip_mirrors_the_chip():
    cfg = augment(flip_p=1.0, crop_p=0.0, colour_p=0.0)
    chip = np.random.default_rng(0).integers(0, 256, (150, 150, 3), dtype=np.uint8)
    np.testing.assert_array_equal(as_function(face_augmentation(cfg, 150, seed=1))(chip), chip[:, ::-1])


def test_crop_and_colour_keep_shape_and_change_pixels():
    cfg = augment(flip_p=0.0, crop_p=1.0, colour_p=1.0, crop_scale_min=0.5)
    chip = np.random.default_rng(0).integers(0, 256, (150, 150, 3), dtype=np.uint8)
    out = as_function(face_augmentation(cfg, 150, seed=1))(chip)
    assert out.shape == chip.shape and out.dtype == np.uint8 and not np.array_equal(out, chip)


def test_pipeline_is_serialised_with_its_probabilities():
    d = describe(face_augmentation(augment(flip_p=0.3), 150))
    names = [t["__class_fullname__"] for part in ("shape", "colour") for t in d[part]["transform"]["transforms"]]
    assert names == ["HorizontalFlip", "RandomResizedCrop", "RGBShift", "ColorJitter"]
    assert d["shape"]["transform"]["transforms"][0]["p"] == 0.3
