"""Typed errors: every failure that reaches a user names its file or field and carries a stable code.

The CLI and the API render these as one-line messages (or JSON with ``code``), never as tracebacks.
"""
from __future__ import annotations

from pathlib import Path


class FacegateError(Exception):
    """Base of every error facegate raises on purpose."""

    code = "facegate_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SettingsError(FacegateError):
    """params.yaml has an unknown key or a bad value; the message names the key."""

    code = "bad_settings"


class PathError(FacegateError):
    """An error about one file: the message always starts with its path."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ImageError(PathError):
    """An image could not be used; always names the file."""

    code = "bad_image"


class UnreadableImage(ImageError):
    """Not an image, truncated, empty or in a format that cannot be decoded."""

    code = "unreadable_image"


class ImageTooLarge(ImageError):
    """More pixels than the configured limit: refused before decoding (decompression bombs)."""

    code = "image_too_large"


class ImageTooSmall(ImageError):
    """Smaller than the configured minimum side length."""

    code = "image_too_small"


class DatasetError(FacegateError):
    """A dataset source is missing or laid out wrongly; names the path."""

    code = "bad_dataset"


class ValidationFailed(FacegateError):
    """A Great Expectations suite failed; the message lists the failing expectations and rows."""

    code = "validation_failed"

    def __init__(self, message: str, failures: list[dict] | None = None) -> None:
        super().__init__(message)
        self.failures = failures or []


class WeightsError(FacegateError):
    """A pretrained-weight file is missing or its sha256 does not match."""

    code = "bad_weights"


class DataVersionError(FacegateError):
    """A DVC operation failed; carries DVC's own message."""

    code = "data_version_error"


class FaceError(PathError):
    """A photo does not hold exactly the faces an operation needs; names the file."""

    code = "face_error"


class NoFaceFound(FaceError):
    code = "no_face_found"


class MultipleFaces(FaceError):
    code = "multiple_faces"


class RegistryError(FacegateError):
    """The model registry cannot do what was asked (unknown version, nothing to roll back to, ...)."""

    code = "registry_error"


class StageFailed(FacegateError):
    """A stage of the retraining chain failed; names the stage. Champion and gallery are unchanged."""

    code = "stage_failed"

    def __init__(self, stage: str, reason: str) -> None:
        self.stage = stage
        self.reason = reason
        super().__init__(f"retrain stopped at stage '{stage}': {reason} (champion and gallery unchanged)")


class RetrainBusy(FacegateError):
    """Another retraining chain holds the lock."""

    code = "retrain_busy"
