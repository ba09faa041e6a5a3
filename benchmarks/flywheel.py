"""The deployment flywheel, simulated (issue 27): does the loop capture -> review -> template update make
the entrance better day after day, and does drift notice when the faces change?

An entrance, seeded, through the real service: a ``FaceGate`` over a temporary gallery store and access
log (SQLite), with the real capture store, review queue, template update (``service/templates.py``) and
drift report (``service/drift.py``), the model in service and its stored calibration.

- Employees: LFW identities no training split uses (the held-out split of ``assign_identity_splits``
  with params' seed and fraction) with at least ``MIN_PHOTOS`` photos, enrolled from one clean photo.
- Every day each passes the door ``passes`` times through a camera that shifts the domain: lower
  resolution, blur, low light with noise, strong JPEG (``camera``). From ``mask_onset`` on, a share of
  them (and of the strangers) wears a synthetic mask drawn from the face's 68 landmarks
  (``benchmarks/masked_frame.py``). Strangers (other held-out people, each once) pass too.
- An operator reviews ``review`` captures a day from the review queue, labelled from ground truth (the
  face at the frame's centre is the person who passed; any other face is a bystander: skipped).
- Template update runs every evening; drift is judged every evening on the service's own windows
  (``retrain.drift_window_days`` against the ``retrain.drift_reference_days`` before it: in a 10-day run,
  the first days are the reference) and the retraining trigger (``retrain.trigger_*``) is evaluated.
  By default (``retrain="record"``) a triggered retraining is recorded as triggered, not run: the full
  chain takes 7-17 minutes of CPU per run here, beyond a simulation meant to finish in minutes; the
  champion in service stays the same. With ``retrain="run"`` the first trigger runs the real chain, once,
  on a small seeded configuration in a sandbox (``benchmarks/flywheel_retrain.py``): the employees
  consent, their confirmed captures are exported and trained on beside a slice of LFW's training split,
  the challenger's ``val_deploy_*`` (held-out captured employees) are reported beside the champion's with
  the gate's decision; a promoted challenger serves the following days with the gallery the chain rebuilt.

Per day: FNIR (an employee's pass not recognised as that employee) and FPIR (a stranger's pass
recognised as anyone) at the threshold the service used for that gallery (``gallery.target_fpir``),
captures reviewed, templates added, drift score and alarm, champion in service.

The entrance's detector is ``yunet_then_retinaface`` (``DOOR_DETECTOR``): YuNet alone scores most masked
faces in this camera's frames below its threshold (0.3-0.6), so they were no-face passes that neither
counted as recognised nor reached review; RetinaFace, run only where YuNet finds nothing, finds them.
Drift measures captured faces against the gallery's enrolment photos (``enrolment_reference``), so
the templates the loop adds do not read as drift.

Simplifications, each for a reason: ``recognition.cascade`` off (every face gets the full model, so
FNIR is the full model's), ``pad.mode`` off (the liveness model would judge the simulated camera's
artefacts, not the door's attacks: bench pad measures it) and ``faces.mask_state`` off (no face-mask
detector is trained on this machine; the mask share signal of drift is then empty). The service stamps
rows with the wall clock; the simulated days pass in seconds, so the access log's and capture store's
clock is the simulation's for the run. A daily pass re-uses one of an employee's few LFW photos with a new
camera draw: a template learnt from a photo's capture helps later passes of that photo more than a new
day's face would (an employee at the same door looks much the same every day; still, read the gain
as an upper bound). Frames are embedded once: each (photo, camera draw, mask) is a frame whose faces and
embeddings are kept under the state folder's ``cache/flywheel/`` by pixel hash, so a rerun skips the model.
"""

from __future__ import annotations

import hashlib
import pickle
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from unittest import mock

import cv2
import numpy as np

from facegate.benchmarks.flywheel_retrain import LFW_IDENTITIES, Chain, Sandbox, run_chain, training_identities
from facegate.components.calibration.face_sets import lfw_set
from facegate.components.core.datasets import unit_hash
from facegate.components.core.errors import FacegateError
from facegate.components.core.images import load_image
from facegate.components.core.paths import datasets_root, state_dir
from facegate.components.core.settings import MaskSettings, Settings
from facegate.components.faces.masks import _predictor, draw_mask
from facegate.components.gallery.enrolment import EnrolmentStore, Photo
from facegate.components.lifecycle.data_version import read_version
from facegate.components.lifecycle.model_loading import service_model, service_recognizer
from facegate.components.lifecycle.retrain_skip import current_fingerprints, skip_reason
from facegate.components.recognition.recognizer import FaceEmbedding, FaceRecognizer
from facegate.components.service import access_log as access_log_module
from facegate.components.service import captures as captures_module
from facegate.components.service.access_log import AccessLog, now
from facegate.components.service.capture_export import set_training_consent
from facegate.components.service.captures import CaptureStore
from facegate.components.service.drift import drift_report, enrolment_reference, retrain_trigger
from facegate.components.service.facade import FaceGate
from facegate.components.service.templates import update_templates

Log = Callable[[str], None]
MIN_PHOTOS = 3  # an employee: one enrolment photo and at least two others to pass the door with
ENTRANCE = "door-1"
OPERATOR = "operator-sim"
MASK_STYLES = ("surgical", "cloth", "n95")
# the entrance's detector: YuNet alone misses masked faces in this camera's dark, blurred frames
DOOR_DETECTOR = "yunet_then_retinaface"


@dataclass(frozen=True)
class FlywheelConfig:
    days: int = 10
    employees: int = 60
    passes: int = 3  # per employee per day
    strangers: int = 100  # stranger passes per day (each a different person)
    review: int = 40  # captures the operator labels per day
    mask_onset: int = 6  # first day with masks
    mask_share: float = 0.5  # of employees (and strangers) masked from the onset
    seed: int = 1234
    retrain_identities: int = LFW_IDENTITIES  # --retrain run: LFW training-split identities in the chain's slice


def camera(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The entrance's camera: the photo at a lower resolution, blurred, in low light with sensor noise,
    through a strong JPEG. Enrolment photos are clean; every pass goes through this."""
    h, w = img.shape[:2]
    scale = rng.uniform(0.3, 0.45)
    small = cv2.resize(img, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    out = cv2.GaussianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), (0, 0), rng.uniform(0.6, 1.1))
    dark = out.astype(np.float32) * rng.uniform(0.35, 0.55) + rng.normal(0, rng.uniform(3, 7), out.shape)
    out = np.clip(dark, 0, 255).astype(np.uint8)
    ok, jpg = cv2.imencode(
        ".jpg", np.ascontiguousarray(out[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(12, 25))]
    )
    return cv2.imdecode(jpg, cv2.IMREAD_COLOR)[..., ::-1].copy()


class FrameCache:
    """Faces and embeddings of frames already seen, by pixel hash, in memory and on disk (one pickle a frame)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.frames: dict[str, list] = {}  # frame hash -> crops
        self.embeddings: dict[str, np.ndarray] = {}  # chip hash -> embedding
        self.frame_of: dict[str, str] = {}  # chip hash -> frame hash (to write the frame once embedded)
        self.hits = self.misses = 0

    @staticmethod
    def key(a: np.ndarray) -> str:
        return hashlib.sha1(np.ascontiguousarray(a).tobytes() + str(a.shape).encode()).hexdigest()

    def crops(self, pixels: np.ndarray, find: Callable[[np.ndarray], list]) -> list:
        k = self.key(pixels)
        if k not in self.frames and (self.folder / f"{k}.pkl").is_file():
            crops, embs = pickle.loads((self.folder / f"{k}.pkl").read_bytes())
            self.frames[k] = crops
            self.embeddings.update({self.key(c.chip): e for c, e in zip(crops, embs)})
        if k in self.frames:
            self.hits += 1
            return self.frames[k]
        self.misses += 1
        self.frames[k] = find(pixels)
        self.frame_of.update({self.key(c.chip): k for c in self.frames[k]})
        if not self.frames[k]:
            self._write(k)
        return self.frames[k]

    def _write(self, k: str) -> None:
        crops = self.frames[k]
        embs = [self.embeddings.get(self.key(c.chip)) for c in crops]
        if all(e is not None for e in embs):
            (self.folder / f"{k}.pkl").write_bytes(pickle.dumps((crops, embs)))

    def embed(self, crops: list, compute: Callable[[list], list]) -> list[FaceEmbedding]:
        keys = [self.key(c.chip) for c in crops]
        todo = [c for c, k in zip(crops, keys) if k not in self.embeddings]
        for c, f in zip(todo, compute(todo) if todo else []):
            self.embeddings[self.key(c.chip)] = f.embedding
        for k in {self.frame_of.pop(k) for k in keys if k in self.frame_of}:
            self._write(k)
        return [FaceEmbedding(c.box, self.embeddings[k], c.chip) for c, k in zip(crops, keys)]


class _CachedFinder:
    def __init__(self, finder, cache: FrameCache) -> None:  # noqa: ANN001 - a FaceFinder
        self._finder, self._cache = finder, cache

    def all_faces(self, image: np.ndarray) -> list:
        return self._cache.crops(image, self._finder.all_faces)

    def __getattr__(self, name: str):  # noqa: ANN204 - single_face and the rest: the real finder's
        return getattr(self._finder, name)


class CachedRecognizer(FaceRecognizer):
    """The model in service, with frames it has seen answered from the ``FrameCache`` (same faces, same
    embeddings: the model is deterministic), so only new frames pay for detection and embedding."""

    def __init__(self, real: FaceRecognizer, cache: FrameCache) -> None:  # noqa: D107 - no model load: a view
        self.__dict__.update(real.__dict__)
        self._real, self._cache = real, cache
        self.finder = _CachedFinder(real.finder, cache)

    def embed_crops(self, crops):  # noqa: ANN001, ANN201 - as FaceRecognizer.embed_crops
        return self._cache.embed(list(crops), self._real.embed_crops)


class RecordingCaptures(CaptureStore):
    """The real capture store, remembering the ids of the last identify's captures (for ground truth)."""

    last: list[int] = []

    def record(self, rows):  # noqa: ANN001, ANN201 - as CaptureStore.record
        self.last = super().record(rows)
        return self.last


class SimulatedGate(FaceGate):
    """The real FaceGate, with the simulation's capture store (the gate opens its own otherwise)."""

    sim_captures: CaptureStore | None = None

    @property
    def captures(self) -> CaptureStore | None:
        return self.sim_captures


@contextmanager
def simulated_clock(clock: list[datetime]):  # noqa: ANN201 - a context manager
    """Rows of the access log and the capture store stamped with the simulated time ``clock[0]``."""
    with (
        mock.patch.object(access_log_module, "now", lambda: clock[0]),
        mock.patch.object(captures_module, "now", lambda: clock[0]),
    ):
        yield


@dataclass
class People:
    employees: dict[str, list[Path]]  # name -> photos (the first enrols)
    strangers: list[Path]
    masked: set[str] = field(default_factory=set)  # people masked from the onset
    trainees: dict[str, list[Path]] = field(default_factory=dict)  # LFW's training split (a retraining's slice)


def choose_people(settings: Settings, cfg: FlywheelConfig, root: Path) -> People:
    """Held-out LFW people: employees (>= MIN_PHOTOS photos, seeded order), strangers (everyone else)."""
    fs = lfw_set(root, settings.seed, settings.ingest.val_fraction, settings.validate_.min_images_per_train_identity)
    held = fs.split == "val"
    photos: dict[str, list[Path]] = {}
    for p, who in zip(fs.paths, fs.identities):
        photos.setdefault(str(who), []).append(p)
    names = sorted({str(n) for n in fs.identities[held]}, key=lambda n: unit_hash(n, cfg.seed))
    staff = [n for n in names if len(photos[n]) >= MIN_PHOTOS][: cfg.employees]
    others = [n for n in names if n not in set(staff)]
    employees = {n: sorted(photos[n]) for n in staff}
    strangers = [sorted(photos[n])[0] for n in others]
    masked = {n for n in staff + others if unit_hash(f"mask:{n}", cfg.seed) < cfg.mask_share}
    train = {str(n) for n in fs.identities[fs.split == "train"]}
    trainees = {n: sorted(photos[n]) for n in training_identities(photos, train, cfg.seed, cfg.retrain_identities)}
    return People(employees, strangers, masked, trainees)


@lru_cache(maxsize=4096)
def landmarks(path: Path) -> np.ndarray | None:
    """68 landmarks of the photo's largest face (dlib's HOG box), once per photo: the slow part of a mask."""

    img = load_image(path)
    rects = _hog()(img, 0)
    if not rects:
        return None
    box = max(rects, key=lambda r: r.area())
    return np.array([[q.x, q.y] for q in _predictor()(img, box).parts()], np.float32)


@lru_cache(maxsize=1)
def _hog():  # noqa: ANN202 - dlib's detector
    import dlib  # heavy: dlib's native module; only the masked passes need it

    return dlib.get_frontal_face_detector()


def frame(path: Path, masked: bool, rng: np.random.Generator) -> np.ndarray:
    """One pass: the photo (masked when ``masked``, as benchmarks/masked_frame.py draws it; no mask where
    dlib finds no face) through the camera."""
    img = load_image(path)
    if masked:
        style, seed = MASK_STYLES[int(rng.integers(len(MASK_STYLES)))], int(rng.integers(1 << 30))
        pts = landmarks(path)
        if pts is not None:
            cfg = MaskSettings(p=1.0, styles=[style], below_nose_p=0.0, tilt_deg=4.0, strap_p=1.0)
            img = draw_mask(img, np.random.default_rng(seed), cfg, landmarks=pts)[0]
    return camera(img, rng)


def subject(faces: list[dict], shape: tuple[int, ...]) -> int | None:
    """The face nearest the frame's centre: the person who passed (LFW centres its subject)."""
    if not faces:
        return None
    cy, cx = shape[0] / 2, shape[1] / 2
    return int(
        np.argmin(
            [((f["box"][0] + f["box"][2]) / 2 - cx) ** 2 + ((f["box"][1] + f["box"][3]) / 2 - cy) ** 2 for f in faces]
        )
    )


@dataclass
class Day:
    """One simulated day's counts."""

    employee_passes: int = 0
    misses: int = 0
    stranger_passes: int = 0
    false_accepts: int = 0
    no_face: int = 0
    taus: list[float] = field(default_factory=list)


def pass_door(
    gate: SimulatedGate,
    store: RecordingCaptures,
    pixels: np.ndarray,
    who: str | None,
    truth: dict[int, tuple[str, str | None]],
    day: Day,
) -> None:
    """One pass through the real identify (access-log row, captures); scored against ``who`` (None: a stranger)."""
    store.last = []
    result = gate.identify(pixels, entrance=ENTRANCE, actor="turnstile-sim").to_dict()
    faces = result.get("faces") or []
    i = subject(faces, pixels.shape)
    for j, capture_id in enumerate(store.last):
        label = ("employee" if who else "stranger") if j == i else "skip"  # a bystander is nobody to learn
        truth[capture_id] = (label, who if j == i else None)
    if i is None:
        day.no_face += 1
    else:
        day.taus.append(float(faces[i]["tau"]))
    if who is None:
        day.stranger_passes += 1
        day.false_accepts += int(i is not None and bool(faces[i]["recognized"]))
    else:
        day.employee_passes += 1
        day.misses += int(i is None or not faces[i]["recognized"] or faces[i]["employee_id"] != who)


def review(gate: SimulatedGate, store: CaptureStore, truth: dict[int, tuple[str, str | None]], budget: int) -> int:
    """The operator's daily budget, from the top of the review queue, labelled from ground truth."""
    queue = store.review_queue(gate.settings.capture.review_band, limit=budget) if budget > 0 else []
    for row in queue:
        label, who = truth.get(row["id"], ("skip", None))
        out = store.label(row["id"], label, who, OPERATOR)
        gate.audit(OPERATOR, "capture_label", out["label_employee_id"], capture_id=row["id"], label=label)
    return len(queue)


def enrol_employees(gate: FaceGate, people: People, log: Log) -> dict[str, tuple[str, list[Path]]]:
    """Each employee from one clean photo (the first that enrols); id -> (name, photos left to pass with)."""
    staff: dict[str, tuple[str, list[Path]]] = {}
    for n, (name, photos) in enumerate(people.employees.items()):
        eid = f"e{n:03d}"
        for k, path in enumerate(photos):
            try:
                gate.enrol(eid, name, [Photo(path.name, path.read_bytes())], actor=OPERATOR)
            except FacegateError as err:
                log(f"{name}: {path.name} not enrolled ({type(err).__name__}); next photo")
                continue
            staff[eid] = (name, [p for i, p in enumerate(photos) if i != k])
            break
    return staff


def skip_check_seconds(settings: Settings) -> float:
    """The retraining chain's skip path for an unchanged run: today's fingerprints (data version, every
    ingest source file's size and mtime, params, code hash) against a champion chain that recorded the same
    ones (``skip_reason``). The params are the chain's (every params.yaml key: ``settings.flat()``)."""
    t0 = time.perf_counter()
    fp = current_fingerprints(read_version(), settings.ingest.datasets, settings.flat())
    reason = skip_reason(fp, {**fp.tags(), "data_version": fp.data_version}, "the champion")
    if reason is None:
        raise RuntimeError("an unchanged run was not skipped")
    return round(time.perf_counter() - t0, 2)


def sim_settings(settings: Settings) -> Settings:
    """Captures on at the simulated entrance; the simplifications of the module docstring."""
    return settings.replace(
        {
            "capture": {"enabled": True, "entrances": [ENTRANCE]},
            "recognition": {"cascade": "off"},
            "pad": {"mode": "off"},
            "faces": {"mask_state": "off", "detector": DOOR_DETECTOR},
            "gallery": {"snapshot": "manual"},
        }
    )


def day_row(
    d: int,
    day: Day,
    reviewed: int,
    templates: dict,
    report: dict,
    trigger: str | None,
    gate: FaceGate,
    target: float,
) -> dict:
    fpir = day.false_accepts / max(day.stranger_passes, 1)
    return {
        "day": d,
        "fnir": round(day.misses / max(day.employee_passes, 1), 4),
        "fpir": round(fpir, 4),
        "fpir_over_target": round(fpir / target, 2),
        "employee_passes": day.employee_passes,
        "misses": day.misses,
        "stranger_passes": day.stranger_passes,
        "false_accepts": day.false_accepts,
        "no_face": day.no_face,
        "tau_mean": round(float(np.mean(day.taus)), 4) if day.taus else None,
        "captures_reviewed": reviewed,
        "templates_added": sum(len(c["added"]) for c in templates["employees"].values()),
        "templates_removed": sum(len(c["removed"]) for c in templates["employees"].values()),
        "templates_refused_near_impostor": sum(
            c.get("refused_near_impostor", 0) for c in templates["employees"].values()
        ),
        "vectors": gate.gallery().n_vectors,
        "drift_score": report["score"],
        "drift_alarm": bool(report["alarm"]),
        "drift_signals": {
            k: (v or {}).get("psi")
            for k, v in report["scopes"]["all"].items()
            if k in ("distance", "nearest_distance", "face_px", "sharpness")
        },
        "drift_distance_source": report["scopes"]["all"].get("distance_source"),
        "drift_rate_changes": {k: v["change"] for k, v in report["scopes"]["all"]["rates"].items()},
        "not_recognised_change": report["scopes"]["all"]["rates"]["not_recognised"]["change"],
        "retraining": "triggered" if trigger else None,
        "trigger_reason": trigger,
        "champion": gate.model_label(),
        "gallery_version": gate.gallery_version,
    }


def frame_cache(s: Settings, recognizer: FaceRecognizer, root: Path) -> FrameCache:
    tag = "".join(c if c.isalnum() else "_" for c in recognizer.embedder_version)
    return FrameCache(root / f"{tag}-{s.faces.detector}-{s.faces.upsample}")


def retrain_overrides(s: Settings) -> dict:
    """The simulation's settings (``sim_settings``) as params sections, for the chain's sandbox."""
    return {
        "capture": {"enabled": True, "entrances": [ENTRANCE]},
        "recognition": {"cascade": "off"},
        "pad": {"mode": "off"},
        "faces": {"mask_state": "off", "detector": DOOR_DETECTOR},
        "gallery": {"snapshot": "manual"},
    }


def weights_tag(model) -> str:  # noqa: ANN001 - an EmbeddingModel
    """A short hash of a model's weights: a trained challenger's frame cache is its own (registry versions
    of the sandbox's registry repeat from run to run)."""
    h = hashlib.sha1(usedforsecurity=False)
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode() + v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def retrain_now(
    gate: SimulatedGate, sandbox: Sandbox, chain: Chain, staff: dict, cache: FrameCache, cache_root: Path, log: Log
) -> tuple[dict, SimulatedGate]:
    """Every employee consents; the chain runs in the sandbox. When the chain rebuilt the gallery (a
    promoted challenger, or the pretrained incumbent registered as the first champion: same weights, a
    registry label), the model it put in service serves from now on, with that gallery (same store)."""
    for eid in staff:
        set_training_consent(gate, eid, True, actor=OPERATOR, note="flywheel: consent form")
    row = run_chain(chain, sandbox, gate.access_log.url, gate.model_label(), log)
    if row["gallery_version"] in (None, "unchanged"):
        return row, gate
    with sandbox.env(gate.access_log.url):
        model, version = service_model(gate.settings)
        fresh = FaceRecognizer(model, gate.settings, version)
    if row["champion_changed"]:  # new weights: their own frame cache
        cache = FrameCache(cache_root / f"trained-{weights_tag(model)}-{gate.settings.faces.detector}")
    new = SimulatedGate(
        gate.settings, store=gate.store, recognizer=CachedRecognizer(fresh, cache), access_log=gate.access_log
    )
    new.sim_captures = gate.sim_captures
    row["champion_after"] = new.model_label()
    return row, new


def simulate(
    settings: Settings, cfg: FlywheelConfig, work: Path, log: Log, retrain: str = "record", chain: Chain | None = None
) -> dict:
    s = sim_settings(settings)
    real = service_recognizer(s)
    cache_root = state_dir() / "cache" / "flywheel"
    cache = frame_cache(s, real, cache_root)
    recognizer = CachedRecognizer(real, cache)
    people = choose_people(s, cfg, datasets_root() / "lfw")
    sandbox = None
    if retrain == "run":
        if chain is None:
            raise ValueError("retrain='run' needs the chain (flows/retrain.py retrain_flow)")
        sandbox = Sandbox(work / "chain", datasets_root() / "lfw", people.trainees, retrain_overrides(s))
    access = AccessLog(f"sqlite:///{work / 'access.db'}")
    store = RecordingCaptures(access.url, s.capture.retention_days)
    gallery = sandbox.gallery if sandbox is not None else work / "gallery"
    gate = SimulatedGate(s, store=EnrolmentStore(gallery), recognizer=recognizer, access_log=access)
    gate.sim_captures = store
    retrained: dict | None = None
    start = now().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=cfg.days + 1)
    clock = [start]
    days, truth, confirmed_at_trigger = [], {}, 0
    with simulated_clock(clock):
        staff = enrol_employees(gate, people, log)
        log(f"{len(staff)} employees enrolled, {len(people.strangers)} strangers available")
        strangers = iter(people.strangers)
        for d in range(1, cfg.days + 1):
            t0, day = time.perf_counter(), Day()
            rng = np.random.default_rng([cfg.seed, d])
            events = [(eid, name, photos) for eid, (name, photos) in staff.items() for _ in range(cfg.passes)]
            events += [(None, None, [next(strangers)]) for _ in range(cfg.strangers)]
            for k in rng.permutation(len(events)):
                eid, name, photos = events[k]
                clock[0] = start + timedelta(days=d - 1, hours=7, seconds=int(k) * 36000 // len(events))
                path = photos[int(rng.integers(len(photos)))]
                masked = d >= cfg.mask_onset and (name or path.parent.name) in people.masked
                pass_door(gate, store, frame(path, masked, rng), eid, truth, day)
            clock[0] = start + timedelta(days=d - 1, hours=20)
            reviewed = review(gate, store, truth, cfg.review)
            templates = update_templates(gate, actor=OPERATOR)
            clock[0] = start + timedelta(days=d)
            report = drift_report(access, store, s, at=clock[0], reference=enrolment_reference(gate.snapshot()))
            trigger = retrain_trigger(report, s, confirmed_at_trigger)
            if trigger:
                confirmed_at_trigger = report["confirmed_captures"]
            days.append(day_row(d, day, reviewed, templates, report, trigger, gate, s.gallery.target_fpir))
            if trigger and sandbox is not None and chain is not None and retrained is None:
                row, gate = retrain_now(gate, sandbox, chain, staff, cache, cache_root, log)
                retrained = {"day": d, **row}  # the day's row: the champion that served it; from tomorrow, the chain's
                days[-1].update(retraining="run", retrain=retrained)
            log(
                f"day {d}: {days[-1]['fnir']=} {days[-1]['fpir']=} reviewed {reviewed} "
                f"templates +{days[-1]['templates_added']} drift {report['score']} alarm {report['alarm']} "
                f"({time.perf_counter() - t0:.0f} s, frames cached {cache.hits}, embedded {cache.misses})"
            )
    return {
        "days": days,
        "retrain": retrained,
        "employees": len(staff),
        "frames_embedded": cache.misses,
        "frames_cached": cache.hits,
    }


def run_flywheel(
    settings: Settings,
    cfg: FlywheelConfig,
    log: Log = lambda message: None,
    retrain: str = "record",
    chain: Chain | None = None,
) -> dict:
    """The simulation, its goals checked, as the JSON ``facegate bench flywheel`` writes. ``retrain``:
    ``record`` (a trigger is recorded) or ``run`` (the first trigger runs ``chain``, see the module doc)."""
    if retrain not in ("record", "run"):
        raise ValueError(f"retrain: record or run, not {retrain!r}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="facegate-flywheel-") as work:
        sim = simulate(settings, cfg, Path(work), log, retrain, chain)
    days, target = sim.pop("days"), settings.gallery.target_fpir
    first, last = days[0]["fnir"], days[-1]["fnir"]
    alarms = [d["day"] for d in days if d["drift_alarm"]]
    # the signals no gallery change moves (face size, chip sharpness): what the alarm would be on those alone
    quality = [
        d["day"]
        for d in days
        if max((d["drift_signals"].get(k) or 0.0) for k in ("face_px", "sharpness")) >= settings.retrain.trigger_drift
    ]
    triggered = [d["day"] for d in days if d["retraining"]]
    return {
        "benchmark": "flywheel",
        "config": cfg.__dict__,
        "target_fpir": target,
        "entrance": ENTRANCE,
        "champion": days[-1]["champion"],
        "days": days,
        "fnir_first_day": first,
        "fnir_last_day": last,
        "fnir_relative_change": round((last - first) / first, 4) if first else None,
        "fpir_over_target_last_day": days[-1]["fpir_over_target"],
        "fpir_all_days": round(
            sum(d["false_accepts"] for d in days) / max(sum(d["stranger_passes"] for d in days), 1), 4
        ),
        "mask_onset_day": cfg.mask_onset,
        "drift_alarm_days": alarms,
        "drift_alarm_days_quality_signals": quality,
        "retraining_triggered_days": triggered,
        "retraining_mode": retrain,
        "retraining_note": "triggered retrainings are recorded, not run: the chain takes 7-17 min of CPU per run"
        if retrain == "record"
        else "the first trigger ran the chain once, on a small seeded configuration in a sandbox "
        "(benchmarks/flywheel_retrain.py); later triggers are recorded",
        "skipped_run_seconds": skip_check_seconds(settings),
        "skipped_run_note": "the chain's skip path (fingerprints vs the champion chain's); the Prefect flow run and "
        "MLflow run around it: tests/integration/test_retrain_skip.py",
        "goals": {
            "fnir_down_30pct": bool(first and (first - last) / first >= 0.3),
            "fpir_within_2x": days[-1]["fpir_over_target"] <= 2,
            "alarm_within_a_day_of_onset": any(cfg.mask_onset <= a <= cfg.mask_onset + 1 for a in alarms),
            "no_alarm_before_onset": not any(a < cfg.mask_onset for a in alarms),
        },
        **sim,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
