"""Fixtures shared by the gallery tests: twelve employees, three vectors each, and their gallery."""

from __future__ import annotations

import pytest

from facegate.components.gallery import Gallery
from tests.unit.gallery.synthetic import DIM, Population


@pytest.fixture
def pop() -> Population:
    return Population(n=12, per=3)


@pytest.fixture
def gallery(pop: Population) -> Gallery:
    return pop.fill(Gallery.new(DIM, "dlib_resnet", "3", tau=0.6))
