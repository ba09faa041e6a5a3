"""Synthetic employees for the gallery tests: clustered unit vectors with exact brute-force answers."""

from __future__ import annotations

import numpy as np

from facegate.components.gallery import Gallery

DIM = 128


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class Population:
    """``n`` employees, each a random unit centre with ``per`` enrolled vectors close to it."""

    def __init__(self, n: int, per: int, seed: int = 0, noise: float = 0.02) -> None:
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.noise = noise
        self.centres = unit(rng.standard_normal((n, DIM)))
        self.ids = [f"e{i:03d}" for i in range(n)]
        self.names = [f"Employee {i}" for i in range(n)]
        self.enrolled = [unit(c + noise * rng.standard_normal((per, DIM))) for c in self.centres]

    def probe(self, i: int) -> np.ndarray:
        return unit(self.centres[i] + self.noise * self.rng.standard_normal(DIM))

    def fill(self, g: Gallery) -> Gallery:
        for eid, name, emb in zip(self.ids, self.names, self.enrolled):
            g.add(eid, name, emb, [f"{eid}/{j}.jpg" for j in range(len(emb))])
        return g


def brute_force(pop: Population, query: np.ndarray, exclude: set[str] = frozenset()) -> list[tuple[str, float]]:
    best = []
    for eid, emb in zip(pop.ids, pop.enrolled):
        if eid in exclude:
            continue
        ip = float(np.max(emb.astype(np.float64) @ query.astype(np.float64)))
        best.append((eid, float(np.sqrt(max(2 - 2 * ip, 0)))))
    return sorted(best, key=lambda t: t[1])
