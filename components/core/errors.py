"""Typed errors: every failure that reaches a user names its file or field and carries a stable code.

The CLI and the API render these as one-line messages (or JSON with ``code``), never as tracebacks.
Every class facegate raises on purpose lives here and carries its HTTP status, so an adapter needs no
table of codes: the API answers ``{code, message}`` with ``exc.http_status``.
"""

from __future__ import annotations

import difflib
from pathlib import Path


class FacegateError(Exception):
    """Base of every error facegate raises on purpose."""

    code = "facegate_error"
    http_status = 500  # a failure of the service, unless a subclass says the request was at fault

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> dict:
        """Fields beside code and message that a caller can act on (the API adds them to its answer)."""
        return {}


class DlibFormatError(FacegateError, ValueError):
    """A dlib ``.dat`` file is not the serialisation the reader understands; names the file and offset."""

    code = "dlib_format_error"

    def __init__(self, source: str, offset: int, reason: str) -> None:
        self.source = source
        self.offset = offset
        self.reason = reason
        super().__init__(f"{source}: byte offset {offset}: {reason}")


class PairsFormatError(FacegateError, ValueError):
    """pairs.txt does not follow the View 2 layout; the message names the file and the line."""

    code = "bad_pairs"

    def __init__(self, path: Path | str, line: int, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        super().__init__(f"{self.path}:{line}: {reason}")


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
    http_status = 422


class UnreadableImage(ImageError):
    """Not an image, truncated, empty or in a format that cannot be decoded."""

    code = "unreadable_image"


class ImageTooLarge(ImageError):
    """More pixels than the configured limit: refused before decoding (decompression bombs)."""

    code = "image_too_large"
    http_status = 413


class ImageTooSmall(ImageError):
    """Smaller than the configured minimum side length."""

    code = "image_too_small"


class ImageTooSmallForStyle(ImageTooSmall):
    """A style-transfer input smaller than the stride of the deepest feature layer it uses."""

    code = "image_too_small_for_style"


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


class WeightFileError(WeightsError):
    """A file under the weights root is missing or is not the pinned file: one error for both, naming the
    file and the sha256 expected, so an operator knows exactly what to restore (a swapped file would
    silently change what the model decides, so an unverified file is never loaded)."""

    code = "bad_weights_file"
    http_status = 503

    def __init__(
        self, path: Path | str, expected_sha256: str, actual_sha256: str | None = None, reason: str | None = None
    ) -> None:
        self.path = str(path)
        self.expected_sha256 = expected_sha256
        self.actual_sha256 = actual_sha256
        self.reason = reason or ("missing" if actual_sha256 is None else f"sha256 is {actual_sha256}")
        super().__init__(
            f"{self.path}: {self.reason}; expected the file with sha256 {expected_sha256} "
            "(set FACEGATE_WEIGHTS to the folder that holds it)"
        )


class DataVersionError(FacegateError):
    """A DVC operation failed; carries DVC's own message."""

    code = "data_version_error"


class FaceError(PathError):
    """A photo does not hold exactly the faces an operation needs; names the file."""

    code = "face_error"
    http_status = 422


class NoFaceFound(FaceError):
    code = "no_face_found"


class MultipleFaces(FaceError):
    code = "multiple_faces"


class RegistryError(FacegateError):
    """The model registry cannot do what was asked (unknown version, nothing to roll back to, ...)."""

    code = "registry_error"
    http_status = 409


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
    http_status = 409


class DeviceUnavailable(SettingsError):
    """A setting asks for a device (a CUDA GPU) that this machine does not have; names the setting."""

    code = "device_unavailable"
    http_status = 503


class SchedulerError(FacegateError):
    """The Prefect server for schedules cannot be reached or started."""

    code = "scheduler_error"
    http_status = 503


class Locked(FacegateError):
    """Another process held a file lock (facegate.components.core.locks) for longer than the caller would wait."""

    code = "locked"
    http_status = 503


# ------------------------------------------------------------------------------ request and API


class Unauthorized(FacegateError):
    """Missing or wrong API key."""

    code = "unauthorized"
    http_status = 401


class UnsupportedMediaType(FacegateError):
    """An upload whose content type is not an image type."""

    code = "unsupported_media_type"
    http_status = 415


class BadRequest(FacegateError):
    """A request the API cannot read: a malformed header, body or form."""

    code = "bad_request"
    http_status = 400


class InvalidRequest(FacegateError):
    """A request whose fields are missing or out of their declared range (FastAPI's validation)."""

    code = "invalid_request"
    http_status = 422


class BodyTooLarge(FacegateError):
    """A request body over ``api.max_body_bytes``: refused on its Content-Length or once that many bytes
    arrived, before anything is spooled to disk."""

    code = "body_too_large"
    http_status = 413


class FormLimitExceeded(FacegateError):
    """More files or form fields than ``api.max_files`` / ``api.max_fields``, or a field over
    ``api.max_field_bytes``: found while the form is parsed, a bad request."""

    code = "form_limit_exceeded"
    http_status = 400


# ------------------------------------------------------------------------------- employees, gallery


class InvalidEmployee(FacegateError):
    """An employee id or enrolment request that cannot be accepted (bad id, no photo)."""

    code = "invalid_employee"
    http_status = 422


class EmployeeExists(FacegateError):
    """Enrolling an id that is already enrolled, without ``replace``."""

    code = "employee_exists"
    http_status = 409


class GalleryError(FacegateError):
    """Base of the gallery's errors (also: a save that failed and left the previous version current)."""

    code = "gallery_error"


class InvalidGalleryInput(GalleryError):
    """An argument cannot go into (or be searched in) the gallery; ``field`` names the argument."""

    code = "invalid_gallery_input"
    http_status = 422

    def __init__(self, field_name: str, reason: str) -> None:
        self.field = field_name
        self.reason = reason
        super().__init__(f"{field_name}: {reason}")


class UnknownEmployee(GalleryError):
    """The employee id is not enrolled in this gallery."""

    code = "unknown_employee"
    http_status = 404

    def __init__(self, employee_id: str) -> None:
        self.employee_id = employee_id
        super().__init__(f"employee_id: {employee_id!r} is not enrolled in the gallery")


class GalleryNotFound(GalleryError):
    """No gallery has ever been saved in this directory."""

    code = "gallery_not_found"
    http_status = 404


class GalleryLocked(GalleryError, Locked):
    """Another writer held the lock for longer than the caller was willing to wait."""

    code = "gallery_locked"
    http_status = 503


class GalleryCorrupt(GalleryError, PathError):
    """A stored version is incomplete or inconsistent; ``path`` names the offending file."""

    code = "gallery_corrupt"
    http_status = 503


class GalleryModelMismatch(GalleryError):
    """The gallery was embedded by another model: its distances mean nothing to the current one."""

    code = "gallery_model_mismatch"
    http_status = 409


class DuplicateFace(FacegateError):
    """An enrolment photo whose face looks already enrolled under another employee id: closer to them than
    the duplicate threshold (``gallery.duplicate_target`` of new people refused by chance at this gallery's
    size); ``force`` enrols it anyway. Names the photo, the other id, the distance, the threshold and the
    estimated chance that a new person comes this close by chance (None: a gallery with a fixed tau)."""

    code = "duplicate_face"
    http_status = 409

    def __init__(
        self,
        photo: str,
        employee_id: str,
        other_id: str,
        distance: float,
        tau: float,
        false_alarm: float | None = None,
        photo_index: int = 0,
    ) -> None:
        self.photo = photo
        self.photo_index = photo_index
        self.employee_id = employee_id
        self.other_id = other_id
        self.distance = distance
        self.tau = tau
        self.false_alarm = false_alarm
        chance = f"; a new person comes this close by chance ~{false_alarm:.1e}" if false_alarm is not None else ""
        super().__init__(
            f"{photo}: this face looks already enrolled as {other_id!r} (distance {distance:.3f} <= "
            f"{tau:.3f}{chance}); enrol it as {employee_id!r} anyway with force (--force)"
        )

    def details(self) -> dict:
        return {
            "photo": self.photo,
            "photo_index": self.photo_index,
            "employee_id": self.employee_id,
            "other_id": self.other_id,
            "distance": round(self.distance, 6),
            "tau": round(self.tau, 6),
            "false_alarm": None if self.false_alarm is None else float(f"{self.false_alarm:.3g}"),
        }


class PresentationAttack(FacegateError):
    """An enrolment photo the PAD model judges a presentation attack (a photo of a photo or of a screen):
    refused unless forced, so a printed picture cannot become someone's enrolled face. Names the photo."""

    code = "presentation_attack"
    http_status = 422

    def __init__(self, photo: str, score: float, threshold: float, model: str) -> None:
        self.photo, self.score, self.threshold, self.model = photo, score, threshold, model
        super().__init__(
            f"{photo}: judged a presentation attack by {model} (live score {score:.4f} <= threshold "
            f"{threshold:.4f}); if the photo is genuine, enrol it anyway with force (--force)"
        )


class PadUnavailable(FacegateError):
    """``pad.mode: enforce`` and the PAD model cannot run (weights missing or wrong, no calibration): the
    door fails closed instead of deciding without it; ``/status`` says why."""

    code = "pad_unavailable"
    http_status = 503


class CalibrationMissing(FacegateError):
    """The model in service has no stored calibration, so no threshold can be set: ``facegate calibrate``
    computes it once for the model (minutes), then enrolment is immediate."""

    code = "calibration_missing"
    http_status = 503


# ------------------------------------------------------------------------ accounts and the console


class Forbidden(FacegateError):
    """An authenticated account whose role may not do this (a viewer enrolling, a turnstile reading)."""

    code = "forbidden"
    http_status = 403


class LoginRateLimited(FacegateError):
    """Too many failed logins for this account or address in ``console.login_window_s``: wait."""

    code = "login_rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AccountError(FacegateError):
    """An account cannot be created or found (a taken or invalid name, an unknown role); names the field."""

    code = "account_error"
    http_status = 422


class UnknownAccount(AccountError):
    code = "unknown_account"
    http_status = 404


class AccessLogError(FacegateError):
    """The access log's database cannot be reached or written; names its URL (without a password)."""

    code = "access_log_error"
    http_status = 503


# ------------------------------------------------------------------- explain: what the units learn


class UnknownLayer(FacegateError, KeyError):
    """A layer name the network does not have; ``valid`` holds every name it has (``named_modules()``),
    and the message names the closest ones first."""

    code = "unknown_layer"
    http_status = 422

    def __init__(self, name: str, valid: list[str], model: str = "") -> None:
        self.name = name
        self.valid = list(valid)
        self.model = model
        close = difflib.get_close_matches(name, self.valid, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        shown = self.valid[:60] + ([f"... ({len(self.valid) - 60} more)"] if len(self.valid) > 60 else [])
        where = f" in {model}" if model else ""
        super().__init__(f"unknown layer {name!r}{where}.{hint} Valid names: {', '.join(shown)}")

    def __str__(self) -> str:  # KeyError's own would print the message's repr
        return self.message


class ReceptiveFieldUntraceable(FacegateError, ValueError):
    """A layer whose receptive field the forward pass cannot follow (an upsampling, a global pooling on
    the way) or whose output is not a feature map: the model's adapter must give its path explicitly."""

    code = "receptive_field_untraceable"


class ExplainUnavailable(FacegateError):
    """A model kind that cannot be looked inside in this build (the PAD models before components/pad)."""

    code = "explain_unavailable"
    http_status = 501
