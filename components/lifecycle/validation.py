"""Great Expectations suites over the ingest manifests.

Each manifest becomes one or two pandas frames with derived columns (how many splits an identity or a
file appears in, whether the bytes on disk still match their sha256, ...) and a real GX 1.x suite runs
over them through a checkpoint that also renders Data Docs. The result names every failing
expectation and the rows it failed on.

The deployment's captures (kind ``captures``) are biometric data of employees, so their suite adds what
the law and the gallery say at validation time, not only what the export wrote: every row's employee
consented to training (at export, and still now), is enrolled now (a removed employee's image fails by
name), and no image is there twice (content hash), on top of the identity suite (no employee in two
splits). Who is enrolled and who consents live in the service layer: the caller passes them in.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from facegate.components.core.datasets import CAPTURES_KIND
from facegate.components.core.errors import DatasetError
from facegate.components.core.settings import Settings
from facegate.components.core.weights import sha256_file

SPLITS = ["train", "val", "test"]


@dataclass
class ExpectationFailure:
    table: str
    expectation: str
    kwargs: dict
    unexpected_count: int
    rows: list[str]

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        rows = "; ".join(self.rows)
        return f"{self.table}: {self.expectation}({args}) failed on {self.unexpected_count} row(s): {rows}"


@dataclass
class ValidationReport:
    dataset: str
    kind: str
    success: bool
    tables: dict[str, int]  # table -> rows checked
    expectations: int
    failures: list[ExpectationFailure] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)
    data_docs: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        head = (
            f"{self.dataset}: {'passed' if self.success else 'FAILED'} "
            f"({self.expectations} expectations over {self.tables}; {len(self.quarantined)} quarantined)"
        )
        return "\n".join([head, *("  - " + f.describe() for f in self.failures)])


@dataclass(frozen=True)
class CaptureReference:
    """What a captures manifest is checked against now: the gallery's employees and the consent register."""

    employees: frozenset[str]
    consenting: frozenset[str]


# ---------------------------------------------------------------- frames
def _file_ok(data_root: Path, paths: pd.Series, hashes: pd.Series) -> pd.Series:
    """True where the file exists under data/ and its bytes still hash to the recorded sha256."""

    def ok(p: str, h: str) -> bool:
        f = data_root / p
        return f.is_file() and sha256_file(f) == h

    return pd.Series([ok(p, h) for p, h in zip(paths, hashes)], index=paths.index, dtype=bool)


def identity_frame(manifest: pd.DataFrame, data_root: Path) -> pd.DataFrame:
    df = manifest.copy()
    df["file_ok"] = _file_ok(data_root, df["path"], df["sha256"])
    df["identity_split_count"] = df.groupby("identity")["split"].transform("nunique")
    df["sha256_split_count"] = df.groupby("sha256")["split"].transform("nunique")
    per_identity = df.groupby("identity")["path"].transform("size")
    # Only training identities need an anchor and a positive; nulls are skipped by GX.
    df["train_identity_images"] = per_identity.where(df["split"] == "train").astype("float64")
    return df


def captures_frame(manifest: pd.DataFrame, data_root: Path, reference: CaptureReference) -> pd.DataFrame:
    df = identity_frame(manifest, data_root)
    df["enrolled_now"] = df["identity"].isin(reference.employees).astype(bool)
    df["consent_now"] = df["identity"].isin(reference.consenting).astype(bool)
    df["consent"] = df["consent"].astype(bool)
    return df


def detection_frames(manifest: pd.DataFrame, data_root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    images = manifest.copy()
    images["file_ok"] = _file_ok(data_root, images["path"], images["sha256"])
    images["sha256_split_count"] = images.groupby("sha256")["split"].transform("nunique")
    parsed = images["boxes"].map(lambda b: json.loads(b) if isinstance(b, str) else [])
    images["n_boxes"] = parsed.map(len).astype("int64")
    rows = []
    for (path, w, h), boxes in zip(images[["path", "width", "height"]].itertuples(index=False), parsed):
        for i, b in enumerate(boxes):
            rows.append(
                {
                    "path": path,
                    "box": i,
                    "label": b.get("label"),
                    "xmin": b.get("xmin"),
                    "ymin": b.get("ymin"),
                    "xmax": b.get("xmax"),
                    "ymax": b.get("ymax"),
                    "width": w,
                    "height": h,
                    "zero": 0.0,
                }
            )
    boxes = pd.DataFrame(
        rows, columns=["path", "box", "label", "xmin", "ymin", "xmax", "ymax", "width", "height", "zero"]
    )
    boxes["box_id"] = boxes["path"] + "#" + boxes["box"].astype(str)
    return images.drop(columns=["boxes"]), boxes


# ---------------------------------------------------------------- suites
def _common_image_expectations(gxe, settings: Settings, columns: list[str]) -> list:
    exps = [gxe.ExpectColumnToExist(column=c) for c in columns]
    exps += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("path", "split", "sha256", "width", "height")]
    exps += [
        gxe.ExpectColumnValuesToBeUnique(column="path"),
        gxe.ExpectColumnValuesToMatchRegex(column="sha256", regex=r"^[0-9a-f]{64}$"),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=SPLITS),
        gxe.ExpectColumnValuesToBeBetween(column="width", min_value=settings.images.min_side),
        gxe.ExpectColumnValuesToBeBetween(column="height", min_value=settings.images.min_side),
        gxe.ExpectColumnValuesToBeInSet(column="file_ok", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="sha256_split_count", min_value=1, max_value=1),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
    ]
    return exps


def identity_suite(gxe, settings: Settings) -> list:
    cols = ["path", "source", "identity", "split", "sha256", "width", "height", "format"]
    return _common_image_expectations(gxe, settings, cols) + [
        gxe.ExpectColumnValuesToNotBeNull(column="identity"),
        gxe.ExpectColumnValuesToBeBetween(column="identity_split_count", min_value=1, max_value=1),
        gxe.ExpectColumnValuesToBeBetween(
            column="train_identity_images", min_value=settings.validate_.min_images_per_train_identity
        ),
    ]


def captures_suite(gxe, settings: Settings) -> list:
    """The identity suite, and: consent at export and now, the employee enrolled now, no image twice."""
    return identity_suite(gxe, settings) + [
        *(gxe.ExpectColumnToExist(column=c) for c in ("capture_id", "captured_at", "consent", "chip_geometry")),
        *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("capture_id", "captured_at", "chip_geometry")),
        gxe.ExpectColumnValuesToBeInSet(column="consent", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="consent_now", value_set=[True]),
        gxe.ExpectColumnValuesToBeInSet(column="enrolled_now", value_set=[True]),
        gxe.ExpectColumnValuesToBeUnique(column="sha256"),
        gxe.ExpectColumnValuesToBeUnique(column="capture_id"),
    ]


def detection_image_suite(gxe, settings: Settings) -> list:
    cols = ["path", "source", "split", "sha256", "width", "height", "format"]
    return _common_image_expectations(gxe, settings, cols) + [
        gxe.ExpectColumnValuesToBeBetween(column="n_boxes", min_value=1),
    ]


def detection_box_suite(gxe, settings: Settings) -> list:
    return [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("label", "xmin", "ymin", "xmax", "ymax")] + [
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(settings.detection.classes)),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="xmin", column_B="zero", or_equal=True),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="ymin", column_B="zero", or_equal=True),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="width", column_B="xmax", or_equal=True),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="height", column_B="ymax", or_equal=True),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="xmax", column_B="xmin"),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="ymax", column_B="ymin"),
    ]


# ---------------------------------------------------------------- running GX
def _run_checkpoint(
    ctx, table: str, frame: pd.DataFrame, expectations: list, id_column: str, max_rows: int
) -> tuple[bool, int, list[ExpectationFailure]]:
    import great_expectations as gx  # heavy: Great Expectations takes seconds to import; only validation needs it

    try:
        source = ctx.data_sources.get("facegate")
    except KeyError:
        source = ctx.data_sources.add_pandas("facegate")
    try:
        asset = source.get_asset(table)
    except LookupError:
        asset = source.add_dataframe_asset(table)
    try:
        batch = asset.get_batch_definition("whole")
    except KeyError:
        batch = asset.add_batch_definition_whole_dataframe("whole")
    for store, name in ((ctx.checkpoints, table), (ctx.validation_definitions, table), (ctx.suites, table)):
        try:
            store.delete(name)
        except Exception:  # noqa: BLE001 - GX raises DataContextError when absent; nothing to delete
            pass
    suite = ctx.suites.add(gx.ExpectationSuite(name=table, expectations=expectations))
    vdef = ctx.validation_definitions.add(gx.ValidationDefinition(name=table, data=batch, suite=suite))
    checkpoint = ctx.checkpoints.add(
        gx.Checkpoint(
            name=table,
            validation_definitions=[vdef],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [id_column]},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    failures = []
    for run in result.run_results.values():
        for r in run.results:
            if r.success:
                continue
            cfg = r.expectation_config
            kwargs = {k: v for k, v in cfg.kwargs.items() if k != "batch_id"}
            idx = r.result.get("unexpected_index_list") or []
            rows = [str(i.get(id_column, i)) if isinstance(i, dict) else str(i) for i in idx[:max_rows]]
            count = r.result.get("unexpected_count")
            if count is None:  # table-level expectations report an observed value instead
                rows = [f"observed {r.result.get('observed_value')}"]
                count = 0
            failures.append(ExpectationFailure(table, cfg.type, kwargs, int(count), rows))
    return result.success, len(expectations), failures


def validate_manifest(
    name: str,
    kind: str,
    manifest: pd.DataFrame,
    quarantine: pd.DataFrame,
    data_root: Path,
    settings: Settings,
    gx_root: Path,
    reference: CaptureReference | None = None,
) -> ValidationReport:
    """Run the suite for one dataset; Data Docs are written under ``gx_root`` (see ``gx_project``).

    Sizes are checked against ``images.min_side`` and box labels against ``detection.classes``: the
    same values ingest and the detector use, so validation never disagrees with them. A captures
    dataset needs ``reference`` (who is enrolled and consents now); with no capture in it, there is
    nothing to check and it passes.
    """
    if kind == CAPTURES_KIND:
        if reference is None:
            raise DatasetError(f"{name}: validating captures needs the gallery's employees and the consent register")
        if manifest.empty:
            return ValidationReport(name, kind, True, {f"{name}_images": 0}, 0, [], quarantine.to_dict("records"))
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx  # heavy: Great Expectations takes seconds to import; only validation needs it
    import great_expectations.expectations as gxe  # heavy: as above
    from great_expectations.data_context.types.base import (
        ProgressBarsConfig,  # heavy: Great Expectations takes seconds to import; only validation needs it
    )

    ctx = gx.get_context(mode="file", project_root_dir=str(gx_root))
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)  # keep flow logs readable
    if kind == "voc":
        images, boxes = detection_frames(manifest, data_root)
        plan = [
            (f"{name}_images", images, detection_image_suite(gxe, settings), "path"),
            (f"{name}_boxes", boxes, detection_box_suite(gxe, settings), "box_id"),
        ]
    elif kind == CAPTURES_KIND and reference is not None:
        frame = captures_frame(manifest, data_root, reference)  # rows named by capture id: no employee id in MLflow
        plan = [(f"{name}_images", frame, captures_suite(gxe, settings), "capture_id")]
    else:
        plan = [(f"{name}_images", identity_frame(manifest, data_root), identity_suite(gxe, settings), "path")]
    success, n_exp, failures, tables = True, 0, [], {}
    for table, frame, exps, id_col in plan:
        ok, n, fails = _run_checkpoint(ctx, table, frame, exps, id_col, settings.validate_.max_listed_rows)
        success &= ok
        n_exp += n
        failures += fails
        tables[table] = int(len(frame))
    docs = Path(gx_root) / "gx" / "uncommitted" / "data_docs" / "local_site"
    return ValidationReport(
        dataset=name,
        kind=kind,
        success=bool(success),
        tables=tables,
        expectations=n_exp,
        failures=failures,
        quarantined=quarantine.to_dict("records"),
        data_docs=str(docs) if docs.is_dir() else None,
    )


@contextlib.contextmanager
def gx_project(parent: Path) -> Iterator[Path]:
    """A fresh, empty GX project folder under ``parent`` for one validation run (so Data Docs show this
    run only), removed when the block ends, on failure too: its Data Docs go to MLflow inside the block."""
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gx-", dir=parent) as root:
        yield Path(root)
