"""The duplicate-face check's search and decision (``facegate.components.gallery.duplicates``): the nearest
*other* employee, an employee's own templates never a duplicate, the threshold and chance from the
identification arithmetic at the number of other employees."""

from __future__ import annotations

import numpy as np
import pytest

from facegate.components.calibration.thresholds import ImpostorScores, ScoreSketch
from facegate.components.gallery import Gallery
from facegate.components.gallery.duplicates import DuplicateRule, find_duplicates, nearest_others
from tests.unit.gallery.synthetic import DIM, Population, unit


def fixed(tau: float) -> DuplicateRule:
    return DuplicateRule(None, 1e-3, fixed_tau=tau)


def test_find_duplicates_names_the_nearest_other_employee_closest_first(pop: Population, gallery: Gallery):
    new = np.stack([pop.probe(3), unit(np.random.default_rng(9).standard_normal(DIM)), pop.probe(7)])
    found = find_duplicates(gallery, new, "newbie", fixed(0.6))
    assert sorted((s.photo, s.other_id) for s in found) == [(0, "e003"), (2, "e007")]
    assert [s.distance for s in found] == sorted(s.distance for s in found)
    assert all(s.tau == 0.6 and s.false_alarm is None and s.others == 12 for s in found)
    assert find_duplicates(Gallery.new(DIM, "dlib_resnet", "3", tau=0.6), new, "x", fixed(0.6)) == []


def test_own_photos_and_templates_are_never_duplicates(pop: Population, gallery: Gallery):
    """e003 has three templates close together: a fourth photo of e003 is no duplicate of e003 (replace,
    more templates), but it is one for anyone else; the search still finds the nearest other person."""
    mine = np.stack([pop.probe(3), pop.probe(3)])
    assert find_duplicates(gallery, mine, "e003", fixed(0.6)) == []
    assert {s.other_id for s in find_duplicates(gallery, mine, "e004", fixed(0.6))} == {"e003"}
    near = nearest_others(gallery, mine, "e003")
    assert all(n is not None and n[0] != "e003" and n[1] > 0.6 for n in near)
    lone = Gallery.new(DIM, "dlib_resnet", "3", tau=0.6)
    lone.add("amy", "Amy", pop.enrolled[0], ["a.jpg"] * 3)
    assert find_duplicates(lone, pop.enrolled[0][:1], "amy", fixed(2.0)) == []  # nobody else enrolled


def test_the_threshold_tightens_with_the_number_of_other_employees():
    """tau is identify's: per-comparison FAR 1-(1-target)^(1/N) over the impostor scores, N the others;
    the chance at a distance is the FPIR there, the target at tau (within the tail's discreteness)."""
    impostors = np.random.default_rng(0).uniform(0.8, 1.6, 2_000_000)
    rule = DuplicateRule(ImpostorScores(ScoreSketch.from_scores(impostors)), 1e-3)
    taus = [rule.tau(n) for n in (1, 10, 100, 1000)]
    assert taus == sorted(taus, reverse=True) and taus[0] > taus[-1]
    assert rule.tau(1) == pytest.approx(0.8 + 0.8 * 1e-3, abs=1e-3)  # 1:1 at FAR = target
    for n, tau in zip((1, 10, 100, 1000), taus):
        assert 0.9e-3 <= rule.false_alarm(tau, n) <= 1e-3
    assert rule.false_alarm(0.5, 100) == 0.0
