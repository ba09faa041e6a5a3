"""Whether a retraining chain has anything new to learn from, before it spends minutes of CPU on it.

A scheduled chain that would train the same seeded challenger on the same data with the same code and
params as the champion's own chain can only reproduce the champion: it is skipped, and the skip is an
MLflow run of its own (``skipped``, ``skip_reason``), so the schedule's history still shows every week.

What "unchanged" means, each part recorded as a tag on every chain's parent run (``skip.*``):
- data: the DVC data version in ``data.dvc`` equals the champion's chain's (post-ingest) data version,
  and the ingest sources (every file under each ``ingest.datasets`` path: relative path, size, mtime)
  fingerprint the same as when the champion's chain started: a re-ingest would read the same files.
  The deployment's captures are exported (idempotently) before this check, so a newly confirmed
  capture is a new file here, and an unchanged export changes nothing.
- params: the hash of the chain's logged params (every params.yaml key plus the run's own options).
- code: a content hash of every ``*.py`` under ``components/`` and ``flows/`` and of
  ``requirements/lock.txt``, read from the installed package. Not the git commit: a commit that changes
  only docs or tests must not force a retrain, and an uncommitted edit to the training code must (git's
  ``-dirty`` says that something changed, not what).
A champion whose chain has no ``skip.*`` tags (made before this check, or promoted by hand from an old
version) is never skipped against.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from facegate.components.core.datasets import source_folder
from facegate.components.core.settings_sections import DatasetSource
from facegate.components.lifecycle import registry

TAG_PREFIX = "skip."
CODE_ROOT = Path(__file__).resolve().parents[2]  # the checkout holding components/ and flows/
CODE_DIRS = ("components", "flows")
CODE_FILES = ("requirements/lock.txt",)


@dataclass(frozen=True)
class Fingerprints:
    """What a chain would learn from; equal fingerprints train an identical, seeded challenger."""

    data_version: str
    sources: str
    params: str
    code: str

    def tags(self) -> dict[str, str]:
        return {f"{TAG_PREFIX}{k}": v for k, v in asdict(self).items()}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Fingerprints | None:
        try:
            return cls(**{k: tags[f"{TAG_PREFIX}{k}"] for k in cls.__dataclass_fields__})
        except KeyError:
            return None


def _digest(parts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def code_fingerprint(root: Path = CODE_ROOT) -> str:
    """Content hash of the training code (every ``*.py`` under components/ and flows/) and the lock."""
    h = hashlib.sha256()
    files = [p for d in CODE_DIRS for p in (root / d).rglob("*.py") if "__pycache__" not in p.parts]
    files += [root / f for f in CODE_FILES if (root / f).is_file()]
    for path in sorted(files):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def params_fingerprint(params: Mapping[str, Any]) -> str:
    return _digest([json.dumps(dict(params), sort_keys=True, default=str)])


def sources_fingerprint(sources: Iterable[DatasetSource], root: Path | None = None) -> str:
    """Every file an ingest would read, by relative path, size and mtime (no content read: seconds on LFW);
    ``root``: the folder every source's path is under (default: each kind's own, ``source_folder``)."""
    parts: list[str] = []
    for source in sources:
        base = root / source.path if root is not None else source_folder(source.kind, source.path)
        parts.append(f"{source.name}:{source.kind}:{source.path}")
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                st = os.stat(os.path.join(dirpath, name))
                parts.append(f"{os.path.relpath(os.path.join(dirpath, name), base)}:{st.st_size}:{st.st_mtime_ns}")
    return _digest(parts)


def current_fingerprints(
    data_version: str | None, sources: Iterable[DatasetSource], params: Mapping[str, Any]
) -> Fingerprints:
    # "none" before the first ``dvc add``: as tracking.tracked_run tags a run without a data version
    return Fingerprints(
        data_version or "none", sources_fingerprint(sources), params_fingerprint(params), code_fingerprint()
    )


def skip_reason(now: Fingerprints, champion_tags: Mapping[str, str] | None, champion_label: str) -> str | None:
    """Why this chain can be skipped (None: it must run). ``champion_tags``: the champion's chain's run
    tags (None: no champion); its ``data_version`` tag is the data the champion was trained on."""
    if champion_tags is None:
        return None
    then = Fingerprints.from_tags(champion_tags)
    if then is None:
        return None
    trained_on = champion_tags.get("data_version", then.data_version)
    if now.data_version != trained_on or now.sources != then.sources:
        return None
    if now.params != then.params or now.code != then.code:
        return None
    return (
        f"nothing new since {champion_label}'s chain: data version {trained_on}, ingest sources, params "
        f"and code (hash {now.code}) unchanged; --force runs anyway"
    )


def champion_chain_tags(name: str) -> tuple[dict[str, str] | None, str]:
    """The tags of the chain run that registered the champion, and the champion's label."""
    champ = registry.champion(name)
    if champ is None or not champ.tags.get("retrain_run_id"):
        return None, "no champion"
    run = registry.mlflow_client().get_run(champ.tags["retrain_run_id"])
    return dict(run.data.tags), f"champion v{champ.version}"
