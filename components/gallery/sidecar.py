"""The sidecar table: one row per stored vector, naming the employee it belongs to.

Columns are ``SIDECAR_COLUMNS``, rows sorted by ``vector_id`` (ids only grow), all text as ``str``
so a round trip through parquet compares equal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from facegate.components.core.errors import UnknownEmployee
from facegate.components.gallery.manifest import utc_now

SIDECAR_COLUMNS = ("vector_id", "employee_id", "name", "photo", "added_at")
Match = tuple[str, str, float]  # (employee_id, name, distance)


def empty_sidecar() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "vector_id": pd.Series([], dtype="int64"),
            "employee_id": pd.Series([], dtype=str),
            "name": pd.Series([], dtype=str),
            "photo": pd.Series([], dtype=str),
            "added_at": pd.Series([], dtype=str),
        }
    )


def with_rows(
    sidecar: pd.DataFrame, ids: np.ndarray, employee_id: str, name: str, photos: Sequence[str]
) -> pd.DataFrame:
    """``sidecar`` plus one row per new vector id; all the employee's rows take ``name``."""
    now = utc_now()
    rows = pd.DataFrame(
        {
            "vector_id": pd.Series(ids, dtype="int64"),
            "employee_id": pd.Series([employee_id] * len(ids), dtype=str),
            "name": pd.Series([name] * len(ids), dtype=str),
            "photo": pd.Series(photos, dtype=str),
            "added_at": pd.Series([now] * len(ids), dtype=str),
        }
    )
    out = pd.concat([sidecar, rows], ignore_index=True) if len(sidecar) else rows
    out.loc[out["employee_id"] == employee_id, "name"] = name
    return out


def employees(sidecar: pd.DataFrame) -> pd.DataFrame:
    """One row per employee: employee_id, name, n_vectors (sorted by employee_id)."""
    if sidecar.empty:
        return pd.DataFrame(
            {
                "employee_id": pd.Series([], dtype=str),
                "name": pd.Series([], dtype=str),
                "n_vectors": pd.Series([], dtype="int64"),
            }
        )
    out = (
        sidecar.groupby("employee_id", sort=True)
        .agg(name=("name", "first"), n_vectors=("vector_id", "size"))
        .reset_index()
    )
    out["n_vectors"] = out["n_vectors"].astype("int64")
    return out


class Roster:
    """Lookups over a sidecar, rebuilt after every change: vector id -> employee, employee -> rows."""

    def __init__(self, sidecar: pd.DataFrame) -> None:
        self.ids = sidecar["vector_id"].to_numpy(dtype=np.int64)
        self.employee_ids = sidecar["employee_id"].to_numpy(dtype=object)
        self.names = sidecar["name"].to_numpy(dtype=object)
        self.positions: dict[str, np.ndarray] = (
            {str(k): np.asarray(v) for k, v in sidecar.groupby("employee_id", sort=False).indices.items()}
            if len(sidecar)
            else {}
        )
        self.max_per_employee = max((len(v) for v in self.positions.values()), default=0)

    def rows_of(self, employee_id: str) -> np.ndarray:
        """Row positions of an employee's vectors; UnknownEmployee if not enrolled."""
        positions = self.positions.get(employee_id)
        if positions is None:
            raise UnknownEmployee(employee_id)
        return positions

    def best_per_employee(self, distances: np.ndarray, ids: np.ndarray, k: int) -> list[Match]:
        """The first ``k`` distinct employees among one query's neighbours (ids -1: none), each at
        their nearest vector, as (employee_id, name, distance)."""
        found: dict[str, Match] = {}  # insertion-ordered: best first
        valid = ids >= 0
        for p, d in zip(np.searchsorted(self.ids, ids[valid]), distances[valid]):
            found.setdefault(self.employee_ids[p], (self.employee_ids[p], self.names[p], float(d)))
            if len(found) == k:
                break
        return list(found.values())
