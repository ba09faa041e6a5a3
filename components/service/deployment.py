"""The deployment's own things the service defaults to: its enrolment store and who acts locally."""

from __future__ import annotations

import getpass

from facegate.components.core.paths import gallery_dir
from facegate.components.gallery.enrolment import EnrolmentStore


def local_actor() -> str:
    """Who made a change from this machine without an account (the CLI, a flow): ``local:<user>``."""
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):
        return "local:unknown"


def gallery_store() -> EnrolmentStore:
    """The deployment's enrolment store (photos, gallery versions, calibration copies):
    ``facegate.components.core.paths.gallery_dir`` (``gallery/`` beside ``gallery.dvc``, or under ``FACEGATE_HOME``)."""
    return EnrolmentStore(gallery_dir())
