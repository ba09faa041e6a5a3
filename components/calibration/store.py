"""A model's calibration, computed once per model and kept with the model, never per gallery.

What a calibration is: for each held-out face set (LFW's held-out identities, plus any set an operator
points at, e.g. ORL), sketches of the model's impostor and genuine distances
(:class:`facegate.components.calibration.thresholds.ScoreSketch`). Thresholds for any target FAR, FPIR and gallery size
come from them; the service blends in its own enrolled employees' impostor pairs as they accumulate.

Where it lives, so enrolment never waits for it:

- a registered version: ``calibration/calibration.npz`` logged to the version's MLflow run, the tau at
  the target FAR and the sets as version tags (:func:`log_version_calibration`,
  :func:`load_version_calibration`);
- the unregistered pretrained model: a small file committed with the code,
  ``calibration/<embedder>-<fingerprint>.npz`` (the fingerprint is the weights' hash, so changed
  weights never read a stale file), made by ``facegate calibrate`` from the shared datasets: a fresh
  clone enrols at once, without ingesting LFW;
- a copy beside the gallery (``gallery/calibration/``), written when a gallery is made for the model,
  so a gallery version and its thresholds travel together in DVC.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facegate.components.calibration.face_sets import attach_chips, chips_cached, embed_face_set, lfw_set, read_face_set
from facegate.components.calibration.thresholds import Calibration, ImpostorScores, ScoreSketch, all_pair_distances
from facegate.components.core.errors import DatasetError
from facegate.components.core.paths import REPO_ROOT, datasets_root, state_dir

FORMAT = 2
REFERENCE_SET = "lfw"  # the set whose genuine pairs report the TAR of a tau (the manifest's achieved_tar)
ARTIFACT_PATH = "calibration"
ARTIFACT_FILE = "calibration.npz"
VERSION_TAG = "calibration"  # on a registered version: where its calibration artifact is


@dataclass(frozen=True)
class SetScores:
    """One held-out set's distance sketches under one model."""

    name: str
    impostor: ScoreSketch
    genuine: ScoreSketch | None
    images: int
    identities: int

    def summary(self, target_far: float) -> dict:
        tau = self.impostor.threshold_for_share(target_far)
        return {
            "set": self.name,
            "images": self.images,
            "identities": self.identities,
            "impostor_pairs": self.impostor.n,
            "genuine_pairs": self.genuine.n if self.genuine else 0,
            "tau": tau,
            "tar_at_tau": (self.genuine.share_at_most(tau) if self.genuine else None),
        }


@dataclass(frozen=True)
class ModelCalibration:
    """A model's score sketches on its held-out sets, and how they were made."""

    embedder_name: str
    embedder_version: str  # the gallery label: ``facegate-embedder/3`` or ``sha256:<fingerprint>``
    sets: tuple[SetScores, ...]
    detector: str = ""
    chip_geometry: str = ""
    flip_tta: bool = True
    normalisation: str = "raw"
    meta: dict = field(default_factory=dict)

    @property
    def legacy(self) -> bool:
        """A per-gallery tail of the first format: only the impostor tail, no genuine scores."""
        return len(self.sets) == 1 and self.sets[0].name == "legacy"

    def impostors(self) -> ImpostorScores:
        return ImpostorScores(tuple(s.impostor for s in self.sets))

    def reference(self) -> SetScores:
        return next((s for s in self.sets if s.name == REFERENCE_SET), self.sets[0])

    def calibration(self, target_far: float) -> Calibration:
        """The 1:1 threshold for ``target_far`` (held on every set) as the gallery manifest records it."""
        imp = self.impostors()
        tau = imp.tau_for_far(target_far)
        ref = self.reference()
        return Calibration(
            tau=tau,
            target_far=target_far,
            achieved_far=imp.far(tau),
            achieved_tar=ref.genuine.share_at_most(tau) if ref.genuine else float("nan"),
            n_impostor_pairs=sum(s.impostor.n for s in self.sets),
            n_genuine_pairs=sum(s.genuine.n for s in self.sets if s.genuine),
        )

    def summary(self, target_far: float) -> dict:
        cal = self.calibration(target_far)
        return {
            "embedder": self.embedder_name,
            "embedder_version": self.embedder_version,
            "detector": self.detector,
            "normalisation": self.normalisation,
            "target_far": target_far,
            "tau": cal.tau,
            "achieved_far": cal.achieved_far,
            "achieved_tar": cal.achieved_tar,
            "sets": [s.summary(target_far) for s in self.sets],
            **self.meta,
        }

    # ------------------------------------------------------------------------------------ file

    def save(self, path: Path) -> Path:
        """One ``.npz`` (sketch arrays and a JSON header), written atomically."""
        arrays: dict[str, np.ndarray | np.int64] = {}
        sets: list[dict] = []
        header = {
            "format": FORMAT,
            "embedder_name": self.embedder_name,
            "embedder_version": self.embedder_version,
            "detector": self.detector,
            "chip_geometry": self.chip_geometry,
            "flip_tta": self.flip_tta,
            "normalisation": self.normalisation,
            "meta": self.meta,
            "sets": sets,
        }
        for i, s in enumerate(self.sets):
            sets.append(
                {"name": s.name, "images": s.images, "identities": s.identities, "genuine": s.genuine is not None}
            )
            arrays.update(s.impostor.to_arrays(f"s{i}_impostor"))
            if s.genuine is not None:
                arrays.update(s.genuine.to_arrays(f"s{i}_genuine"))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.npz")
        os.close(fd)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make a committed file unreadable to other users
        try:
            header_array = np.array(json.dumps(header, sort_keys=True))
            np.savez(tmp, header=header_array, **arrays)  # type: ignore[arg-type]  # **arrays vs allow_pickle: bool
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: Path) -> ModelCalibration:
        """A calibration file; the earlier per-gallery format (one impostor tail) reads as one set."""
        with np.load(path, allow_pickle=False) as z:
            if "header" not in z:
                return _legacy(z, path)
            h = json.loads(str(z["header"]))
            sets = tuple(
                SetScores(
                    s["name"],
                    ScoreSketch.from_arrays(z, f"s{i}_impostor"),
                    ScoreSketch.from_arrays(z, f"s{i}_genuine") if s["genuine"] else None,
                    int(s["images"]),
                    int(s["identities"]),
                )
                for i, s in enumerate(h["sets"])
            )
        return cls(
            h["embedder_name"],
            h["embedder_version"],
            sets,
            h.get("detector", ""),
            h.get("chip_geometry", ""),
            bool(h.get("flip_tta", True)),
            h.get("normalisation", "raw"),
            h.get("meta", {}),
        )


def _legacy(z, path: Path) -> ModelCalibration:
    """A per-gallery tail of the first format (impostor_tail, n_impostor_pairs): the tail holds the
    smallest distances exactly; beyond it, nothing is known (its last value stands for the rest)."""
    tail = np.asarray(z["impostor_tail"], np.float64)
    n = int(z["n_impostor_pairs"])
    ranks = np.r_[np.arange(len(tail)), n - 1] if n > len(tail) else np.arange(len(tail))
    values = np.r_[tail, tail[-1]] if n > len(tail) else tail
    sketch = ScoreSketch(ranks.astype(np.int64), values, n)
    return ModelCalibration("", Path(path).stem, (SetScores("legacy", sketch, None, 0, 0),))


# -------------------------------------------------------------------------------- computing one


def set_scores(name: str, emb: np.ndarray, identities: np.ndarray) -> SetScores:
    """Sketches of every pair of ``emb`` (rows of different identities: impostor; same: genuine)."""
    genuine, impostor = all_pair_distances(emb, identities)
    if impostor.size == 0:
        raise ValueError(f"{name}: calibration needs at least two identities")
    return SetScores(
        name,
        ScoreSketch.from_scores(impostor, "low"),
        ScoreSketch.from_scores(genuine, "high") if genuine.size else None,
        int(len(emb)),
        int(len(np.unique(identities))),
    )


def default_face_sets(settings) -> list:
    """The calibration set of params (``gallery.calibration_dataset``) read from its source folder:
    the ``ingest.datasets`` entry of that name (kind and path), else ``<datasets root>/<name>`` (LFW
    when it holds ``pairs.txt``). Nothing needs to be ingested."""
    name = settings.gallery.calibration_dataset
    source = next((d for d in settings.ingest.datasets if d.name == name), None)
    root = datasets_root() / (source.path if source else name)
    kind = source.kind if source else ("lfw" if (root / "pairs.txt").is_file() else "image_folder")
    if kind == "voc":
        raise DatasetError(f"gallery.calibration_dataset {name!r} is a detection set: it has no identities")
    if not root.is_dir():
        raise DatasetError(f"{root}: the calibration set {name!r} is not there (FACEGATE_DATASETS?)")
    if kind == "lfw":  # the ingest's own split rule, with its minimum images per training identity
        fs = lfw_set(
            root, settings.seed, settings.ingest.val_fraction, settings.validate_.min_images_per_train_identity
        )
        fs.name = name
    else:
        fs = read_face_set(
            kind,
            root,
            cache_dir=state_dir() / "cache",
            seed=settings.seed,
            val_fraction=settings.ingest.val_fraction,
            name=name,
        )
    return [fs]


def compute_model_calibration(
    recognizer, settings, face_sets: list, cache_dir: Path, log: Callable[[str], None] = lambda message: None
) -> ModelCalibration:
    """Embed each face set as the service does (params' detector, the model's chip geometry, flip
    TTA) and sketch its distances. LFW contributes its held-out (``val``) identities only: the ones a
    model trained by the chain never saw; other sets count whole."""
    model = recognizer.model
    chip_settings = {
        "detector": settings.faces.detector,
        "upsample": settings.faces.upsample,
        "geometry": model.backbone.chip_geometry,
    }
    sets = []
    for fs in face_sets:
        if fs.split is not None and not chips_cached(fs, cache_dir, **chip_settings):
            fs = fs.subset(np.flatnonzero(fs.split != "train"))  # chip only the held-out images
        attach_chips(fs, cache_dir, **chip_settings)
        rows = fs.rows(fs.split != "train" if fs.split is not None else None)
        emb = embed_face_set(model, fs, settings.embedding.flip_tta, cache_dir)
        sets.append(set_scores(fs.name, emb[rows], fs.identities[rows]))
        log(f"{fs.name}: {sets[-1].summary(settings.gallery.target_far)}")
    return ModelCalibration(
        recognizer.embedder_name,
        recognizer.embedder_version,
        tuple(sets),
        settings.faces.detector,
        model.backbone.chip_geometry,
        settings.embedding.flip_tta,
        "raw",
        {"created_by": "facegate calibrate"},
    )


# --------------------------------------------------------------------------------- where it lives


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)


def committed_dir() -> Path:
    """The calibrations committed with the code (``calibration/`` beside ``components/``), found from the
    code's own location so any repository or sandbox using this code reads them."""
    return Path(os.environ.get("FACEGATE_CALIBRATIONS", REPO_ROOT / "calibration"))


def pretrained_file(embedder_name: str, embedder_version: str) -> Path:
    """``calibration/<embedder>-<fingerprint>.npz`` for an unregistered model (version ``sha256:<fp>``)."""
    fingerprint = embedder_version.split(":", 1)[-1]
    return committed_dir() / f"{safe_name(embedder_name)}-{safe_name(fingerprint)}.npz"


def local_file(embedder_name: str, embedder_version: str) -> Path:
    """Where a calibration computed by the service itself for an unregistered model is kept (the state
    folder, not the code): ``facegate calibrate`` writes the committed one."""
    return state_dir() / "calibration" / pretrained_file(embedder_name, embedder_version).name


# ------------------------------------------------------------------------------ `facegate calibrate`


LABELLED_KINDS = ("lfw", "image_folder")  # impostor pairs need known identities: VOC faces (no identities,
# the same person in many photos) would count one person's photos as impostors and wreck tau


def parse_set(spec: str) -> tuple[str, str, str]:
    """``NAME=KIND:PATH`` (KIND: lfw | image_folder) -> (name, kind, path)."""
    name, _, rest = spec.partition("=")
    kind, _, path = rest.partition(":")
    if not name or kind not in LABELLED_KINDS or not path:
        raise DatasetError(
            f"--set {spec!r}: use NAME=KIND:PATH with KIND one of {', '.join(LABELLED_KINDS)} (a set with identities)"
        )
    return name, kind, path
