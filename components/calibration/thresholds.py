"""Threshold calibration: the distance tau that meets a target false-accept rate.

tau is read off impostor pairs of held-out identities (never the people being enrolled): every pair of
different identities among them, so a FAR of 1e-3 or 1e-4 rests on millions of comparisons rather
than a few thousand. The achieved FAR and TAR at tau go into the gallery manifest.

A model's score distributions are kept small (:class:`ScoreSketch`: every rank at the end that
thresholds read, geometric ranks elsewhere), so one file per model carries them for any gallery size;
:class:`ImpostorScores` turns them into the FAR of a distance, the tau of a FAR or an FPIR, blended with
the deployment's own impostor pairs (enrolled employees against each other) once there are enough.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TAIL_MAX_FAR = 1e-2  # the impostor tail kept for identification thresholds covers FAR up to this


@dataclass(frozen=True)
class Calibration:
    tau: float
    target_far: float
    achieved_far: float
    achieved_tar: float
    n_impostor_pairs: int
    n_genuine_pairs: int
    impostor_tail: np.ndarray | None = None  # the smallest impostor distances, sorted (see tau_for_fpir)


def far_per_comparison(target_fpir: float, gallery_size: int) -> float:
    """The 1:1 FAR at which a stranger, compared with ``gallery_size`` people, is accepted as someone
    with probability ``target_fpir``: 1 - (1 - FPIR)^(1/K), comparisons taken as independent."""
    return 1.0 - (1.0 - target_fpir) ** (1.0 / max(gallery_size, 1))


def tau_for_fpir(impostor_tail: np.ndarray, n_impostor_pairs: int, gallery_size: int, target_fpir: float) -> float:
    """Identification threshold: tau at the per-comparison FAR that keeps FPIR at the target for a
    gallery of this size. A fixed 1:1 tau lets in a stranger with probability ~ 1-(1-FAR)^K."""
    allowed = int(np.floor(far_per_comparison(target_fpir, gallery_size) * n_impostor_pairs))
    if allowed >= len(impostor_tail):
        raise ValueError(
            f"FAR {far_per_comparison(target_fpir, gallery_size):.2e} is beyond the stored "
            f"impostor tail (FAR <= {len(impostor_tail) / n_impostor_pairs:.2e})"
        )
    return float(np.nextafter(impostor_tail[allowed], -np.inf))


def all_pair_distances(emb: np.ndarray, labels: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Distances of every unordered pair, split into (genuine, impostor)."""
    emb = np.asarray(emb, np.float32)
    labels = np.asarray(labels)
    genuine, impostor = [], []
    for start in range(0, len(emb), chunk):
        block = emb[start : start + chunk]
        sims = block @ emb.T
        rows = np.arange(start, start + len(block))[:, None]
        upper = np.arange(len(emb))[None, :] > rows  # each unordered pair once
        same = labels[start : start + len(block), None] == labels[None, :]
        d = np.sqrt(np.maximum(2.0 - 2.0 * sims, 0.0))
        genuine.append(d[upper & same])
        impostor.append(d[upper & ~same])
    return np.concatenate(genuine), np.concatenate(impostor)


def calibrate_tau(emb: np.ndarray, labels: np.ndarray, target_far: float) -> Calibration:
    """Largest tau with empirical FAR <= target over all impostor pairs (accept when distance <= tau)."""
    genuine, impostor = all_pair_distances(emb, labels)
    if impostor.size == 0:
        raise ValueError("calibration needs at least two identities")
    allowed = int(np.floor(target_far * impostor.size))  # impostors we may accept
    imp_sorted = np.sort(impostor)
    tau = float(np.nextafter(imp_sorted[allowed], -np.inf)) if allowed < imp_sorted.size else float(imp_sorted[-1])
    tail = imp_sorted[: max(1, int(np.ceil(TAIL_MAX_FAR * impostor.size)) + 1)].astype(np.float32)
    return Calibration(
        tau=tau,
        target_far=target_far,
        achieved_far=float((impostor <= tau).mean()),
        achieved_tar=float((genuine <= tau).mean()) if genuine.size else float("nan"),
        n_impostor_pairs=int(impostor.size),
        n_genuine_pairs=int(genuine.size),
        impostor_tail=tail,
    )


# ------------------------------------------------------------------------------ score sketches

SKETCH_EXACT = 2000  # ranks kept one by one at the dense end (FAR down to 1 / n exactly)
SKETCH_KNOTS = 600  # geometric ranks over the rest: counts between knots interpolated within ~1.6%
MIN_LOCAL_TAIL = 25  # the deployment's own pairs recalibrate a FAR only where this many of them lie (~20%)
BULK_KEEP = 0.9  # a bulk shift compares the closest 90% of pairs: the side the tail is on, kept exactly by a sketch


@dataclass(frozen=True)
class ScoreSketch:
    """A sorted score sample (distances: smaller is closer) kept as knots (rank, value).

    Ranks are 0-based positions in the sorted scores; the first (0) and last (n - 1) are always knots.
    ``dense="low"`` keeps every rank of the smallest scores exactly (impostor distances: the FAR end),
    ``"high"`` of the largest (genuine distances: the false-reject end). Between knots the count is
    interpolated linearly in the value, so a few thousand floats stand for millions of pairs.
    """

    ranks: np.ndarray  # int64, strictly increasing
    values: np.ndarray  # float64, non-decreasing
    n: int

    @classmethod
    def from_scores(
        cls, scores: np.ndarray, dense: str = "low", exact: int = SKETCH_EXACT, knots: int = SKETCH_KNOTS
    ) -> ScoreSketch:
        s = np.sort(np.asarray(scores, np.float64).ravel())
        if s.size == 0:
            raise ValueError("a score sketch needs at least one score")
        if not np.isfinite(s).all():
            raise ValueError("scores must be finite")
        n = s.size
        head = np.arange(min(exact, n))
        spread = np.unique(np.geomspace(1, max(n - len(head), 1), knots).astype(np.int64)) + len(head) - 1
        ranks = np.unique(np.r_[head, spread[spread < n], n - 1])
        if dense == "high":
            ranks = np.unique(n - 1 - ranks)
        elif dense != "low":
            raise ValueError(f"dense must be 'low' or 'high', got {dense!r}")
        return cls(ranks.astype(np.int64), s[ranks], int(n))

    def count_at_most(self, value: float) -> float:
        """How many scores are <= ``value`` (exact on runs of consecutive knots, else interpolated)."""
        v, r = self.values, self.ranks
        if value < v[0]:
            return 0.0
        if value >= v[-1]:
            return float(self.n)
        i = int(np.searchsorted(v, value, side="right")) - 1  # v[i] <= value < v[i + 1]
        gap = r[i + 1] - r[i] - 1
        return float(r[i] + 1 + np.floor(gap * (value - v[i]) / (v[i + 1] - v[i])))

    def share_at_most(self, value: float) -> float:
        return self.count_at_most(value) / self.n

    def bulk_moments(self, keep: float = BULK_KEEP) -> tuple[float, float]:
        """(mean, standard deviation) of the smallest ``keep`` share of the scores, the values between
        knots taken as their linear interpolation (within ~1e-5 of the exact figures on 17M LFW
        impostor pairs; the whole range is not: the coarse last knots before the maximum bias it)."""
        cut = int(np.floor(keep * (self.n - 1)))
        inside = self.ranks < cut
        r = np.r_[self.ranks[inside], cut].astype(np.float64)
        v = np.r_[self.values[inside], self.value_at_rank(cut)]
        length, va = np.diff(r), v[:-1]
        step = np.diff(v) / np.maximum(length, 1)
        # sums over ranks r_a .. r_b - 1 of va + k * step and of its square (k = 0 .. L - 1), then rank cut
        s1 = length * va + step * length * (length - 1) / 2
        s2 = length * va**2 + va * step * length * (length - 1) + step**2 * (length - 1) * length * (2 * length - 1) / 6
        mean = (s1.sum() + v[-1]) / (cut + 1)
        return float(mean), float(np.sqrt(max((s2.sum() + v[-1] ** 2) / (cut + 1) - mean**2, 0.0)))

    def value_at_rank(self, rank: float) -> float:
        return float(np.interp(rank, self.ranks, self.values))

    def threshold_for_share(self, share: float) -> float:
        """Largest threshold with share(score <= threshold) <= ``share``: just below the score at rank
        floor(share * n) (as :func:`calibrate_tau`); the largest score when every score may pass."""
        allowed = int(np.floor(share * self.n))
        if allowed >= self.n:
            return float(self.values[-1])
        # one float32 step below: distances are float32, and numpy compares them with a Python
        # float in float32, so a float64 step would round back onto the score itself
        return float(np.nextafter(np.float32(self.value_at_rank(allowed)), np.float32(-np.inf)))

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray | np.int64]:
        return {
            f"{prefix}_ranks": self.ranks,
            f"{prefix}_values": self.values.astype(np.float64),
            f"{prefix}_n": np.int64(self.n),
        }

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> ScoreSketch:
        return cls(
            np.asarray(arrays[f"{prefix}_ranks"], np.int64),
            np.asarray(arrays[f"{prefix}_values"], np.float64),
            int(arrays[f"{prefix}_n"]),
        )


def fpir_of_far(far: float, gallery_size: int) -> float:
    """The chance a stranger is accepted as someone among ``gallery_size`` people when each comparison
    accepts with probability ``far`` (comparisons taken as independent): 1 - (1 - FAR)^K."""
    return float(-np.expm1(max(gallery_size, 1) * np.log1p(-min(max(far, 0.0), 1.0))) if far < 1 else 1.0)


def recalibration_weight(local_pairs: int, min_pairs: int, prior_pairs: int) -> float:
    """Weight of the deployment's own impostor pairs against the stored tail: none below ``min_pairs``,
    then n / (n + prior_pairs), so the stored tail counts as ``prior_pairs`` pairs of evidence."""
    if local_pairs < max(min_pairs, 1):
        return 0.0
    return local_pairs / (local_pairs + max(prior_pairs, 0))


def bulk_moments(scores: np.ndarray, keep: float = BULK_KEEP) -> tuple[float, float]:
    """(mean, standard deviation) of the smallest ``keep`` share of ``scores``, as
    :meth:`ScoreSketch.bulk_moments` reads them off a sketch."""
    s = np.sort(np.asarray(scores, np.float64).ravel())
    s = s[: int(np.floor(keep * (s.size - 1))) + 1]
    return float(s.mean()), float(s.std())


@dataclass(frozen=True)
class BulkShift:
    """Where a deployment's impostor distances sit against the model's held-out ones, from the bulk.

    A small gallery cannot recalibrate a tail: 20 employees give 190 pairs, and a FAR of 5e-4 needs
    thousands. But 190 pairs do place the bulk (mean and standard deviation of the closest 90%), and a
    domain shift (greyscale, another camera) moves the bulk and the tail together. Each stored sketch's
    distances are mapped by that location/scale change, shrunk toward no change by the weight
    pairs / (pairs + prior_pairs) (``gallery.shift_prior_pairs``): tau_local = mu + (tau_stored - m) * r,
    mu = m + w (mean_local - m), r = 1 + w (sd_local / sd_stored - 1).
    """

    mean: float
    sd: float
    pairs: int
    prior_pairs: float

    @classmethod
    def from_scores(cls, local: np.ndarray, prior_pairs: float) -> BulkShift | None:
        """The shift of these local impostor distances; None where they cannot place a bulk (< 2 pairs)."""
        local = np.asarray(local, np.float64).ravel()
        if local.size < 2:
            return None
        mean, sd = bulk_moments(local)
        return cls(mean, sd, int(local.size), float(prior_pairs)) if sd > 0 else None

    @property
    def weight(self) -> float:
        return self.pairs / (self.pairs + max(self.prior_pairs, 0.0))

    def mapping(self, sketch: ScoreSketch) -> tuple[float, float, float]:
        """(m, mu, r) for one stored sketch: a stored distance d stands for mu + (d - m) * r here."""
        m, sd = sketch.bulk_moments()
        w = self.weight
        return m, m + w * (self.mean - m), 1.0 + w * (self.sd / sd - 1.0)


@dataclass(frozen=True)
class ImpostorScores:
    """The impostor-distance distribution the service decides with.

    ``stored``: the model's sketches, one per calibration set; a distance's FAR is the largest of their
    shares (the threshold holds on every set the model was calibrated on). ``local``: the deployment's
    own impostor pairs (different enrolled employees), blended in with weight ``local_weight``
    (:func:`recalibration_weight`): FAR(d) = (1 - w) * stored(d) + w * local(d), but only at FARs the
    local pairs can speak for: where at least ``min_local_tail`` of them lie (an identification FAR of
    1e-5 is out of reach of a few hundred thousand pairs; there the stored tail alone decides).
    ``shift``: the deployment's bulk (:class:`BulkShift`); identification (``fpir``, ``tau_for_fpir``)
    reads the stored sketches through it, 1:1 (``far``, ``tau_for_far``) does not.
    """

    stored: tuple[ScoreSketch, ...]
    local: ScoreSketch | None = None
    local_weight: float = 0.0
    min_local_tail: int = MIN_LOCAL_TAIL
    shift: BulkShift | None = None
    # (m, mu, r) per stored sketch (:meth:`BulkShift.mapping`), set by __post_init__; None: no shift
    _maps: tuple[tuple[float, float, float], ...] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if isinstance(self.stored, ScoreSketch):
            object.__setattr__(self, "stored", (self.stored,))
        if not self.stored:
            raise ValueError("at least one stored impostor sketch is needed")
        maps = tuple(self.shift.mapping(s) for s in self.stored) if self.shift is not None else None
        if maps is not None and any(r <= 0 for _, _, r in maps):
            maps = None  # a degenerate bulk (never with prior_pairs > 0): no shift
        object.__setattr__(self, "_maps", maps)

    @property
    def blended(self) -> bool:
        return self.local is not None and self.local_weight > 0

    @property
    def shifted(self) -> bool:
        return self._maps is not None

    @property
    def _shift_maps(self) -> tuple[tuple[float, float, float], ...]:
        """The per-sketch maps; read only where ``shifted`` holds."""
        if self._maps is None:
            raise ValueError("these impostor scores carry no bulk shift")
        return self._maps

    @property
    def _local_sketch(self) -> ScoreSketch:
        """``local``; read only where ``blended`` holds."""
        if self.local is None:
            raise ValueError("these impostor scores blend in no local sketch")
        return self.local

    def _local_speaks_for(self, share: float) -> bool:
        return self.blended and share * self._local_sketch.n >= self.min_local_tail

    def _far(self, distance: float, blend: bool, shifted: bool = False) -> float:
        if shifted:  # each stored sketch read at the distance that maps here
            f = max(s.share_at_most(m + (distance - mu) / r) for s, (m, mu, r) in zip(self.stored, self._shift_maps))
        else:
            f = max(s.share_at_most(distance) for s in self.stored)
        if blend:
            f = (1.0 - self.local_weight) * f + self.local_weight * self._local_sketch.share_at_most(distance)
        return float(f)

    def far(self, distance: float, shifted: bool = False) -> float:
        """Estimated false-accept probability of accepting at ``distance`` (1:1; ``shifted``: through
        the deployment's bulk shift, as identification reads it)."""
        blend = self.blended and self._local_sketch.count_at_most(distance) >= self.min_local_tail
        return self._far(distance, blend, shifted and self.shifted)

    def fpir(self, distance: float, gallery_size: int) -> float:
        """Estimated chance that a stranger's nearest employee, in a gallery of this size, is this close."""
        return fpir_of_far(self.far(distance, shifted=True), gallery_size)

    def tau_for_far(self, target_far: float, shifted: bool = False) -> float:
        """Largest distance whose estimated FAR is <= ``target_far``."""
        blend = self._local_speaks_for(target_far)
        shifted = shifted and self.shifted
        if not blend and shifted:  # each sketch's own threshold, mapped (r > 0 keeps the order): the strictest
            return min(
                _float32_at_most(mu + (s.threshold_for_share(target_far) - m) * r)
                for s, (m, mu, r) in zip(self.stored, self._shift_maps)
            )
        if len(self.stored) == 1 and not blend:
            return self.stored[0].threshold_for_share(target_far)
        # FAR(d) is non-decreasing: bracket the crossing between knot values, then bisect
        parts = (
            [mu + (s.values - m) * r for s, (m, mu, r) in zip(self.stored, self._shift_maps)]
            if shifted
            else [s.values for s in self.stored]
        ) + ([self._local_sketch.values] if blend else [])
        cand = np.unique(np.concatenate(parts))
        ok = np.array([self._far(c, blend, shifted) <= target_far for c in cand])
        if not ok[0]:
            return float(np.nextafter(np.float32(cand[0]), np.float32(-np.inf)))
        if ok.all():
            return float(cand[-1])
        j = int(np.argmin(ok))  # the first candidate over the target
        lo, hi = float(cand[j - 1]), float(cand[j])
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self._far(mid, blend, shifted) <= target_far else (lo, mid)
        return _float32_at_most(lo)

    def tau_for_fpir(self, target_fpir: float, gallery_size: int) -> float:
        return self.tau_for_far(far_per_comparison(target_fpir, gallery_size), shifted=True)


def _float32_at_most(x: float) -> float:
    """The largest float32 <= x: distances are float32, and numpy compares them with a Python float in
    float32, so a threshold that rounds up would accept the distance just above it."""
    f = np.float32(x)
    return float(np.nextafter(f, np.float32(-np.inf)) if float(f) > x else f)


def deployment_scores(
    stored: ImpostorScores, local: np.ndarray, min_pairs: int, prior_pairs: int, shift_prior_pairs: float | None
) -> ImpostorScores:
    """What a gallery decides with: the model's stored sketches, its enrolled employees' own impostor
    pairs ``local`` blended in once there are ``min_pairs`` (:func:`recalibration_weight`), and the
    bulk shift they place for identification (``shift_prior_pairs`` None: no shift). The service
    (``facegate.components.service.facade.gallery_impostor_scores``) and ``bench calibration`` both come
    through here."""
    local = np.asarray(local).ravel()
    w = recalibration_weight(local.size, min_pairs, prior_pairs)
    shift = BulkShift.from_scores(local, shift_prior_pairs) if shift_prior_pairs is not None else None
    return ImpostorScores(
        stored.stored, ScoreSketch.from_scores(local) if w > 0 else None, w, stored.min_local_tail, shift
    )


def local_impostor_distances(
    vectors: np.ndarray, labels: np.ndarray, max_people: int = 2000, seed: int = 0
) -> np.ndarray:
    """Distances of every pair of vectors of different people (a deployment's enrolled employees);
    above ``max_people`` a seeded sample of people keeps the cost bounded (~2M pairs)."""
    labels = np.asarray(labels)
    people = np.unique(labels)
    if len(people) > max_people:
        keep = np.random.default_rng(seed).choice(people, max_people, replace=False)
        rows = np.isin(labels, keep)
        vectors, labels = np.asarray(vectors)[rows], labels[rows]
    if len(np.unique(labels)) < 2:
        return np.zeros(0, np.float32)
    return all_pair_distances(vectors, labels)[1]
