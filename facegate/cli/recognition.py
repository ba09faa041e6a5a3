"""What the operator does at the entrance, one item at a time: `enroll`, `remove`, `identify`, `verify`.

These call ``FaceGate`` directly: no Prefect server, a few seconds each (issue 17: 5 s for one
enrolment on 2 cores). So neither MLflow nor Prefect may load here: a write's MLflow run and DVC
snapshot are handed to a detached process. Only a batch enrolment (``enroll --from``) runs a flow."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from facegate.cli.output import friendly, print_json
from facegate.components.core.errors import InvalidEmployee
from facegate.components.core.inference import passive_waits


def quiet_for_one_item() -> None:
    """enroll/remove/identify/verify print their JSON and, on failure, one error line: MLflow's INFO
    lines (creating its database on first use) would add to stderr. Torch's idle threads sleep rather than
    spin (``facegate.components.core.inference.passive_waits``): on a busy machine spinning made one face
    ~10x slower."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    passive_waits()


def _snapshots_in_background(settings) -> bool:
    """Whether a CLI write hands its DVC snapshot (and its MLflow record) to a detached process."""
    from facegate.components.lifecycle import gallery_snapshots  # heavy: FAISS and numpy, ~0.7 s

    return gallery_snapshots.dvc_target() is not None and settings.gallery.snapshot != "manual"


def _request_gallery_snapshot(settings=None) -> str:
    """After a CLI write: mark gallery/ dirty; unless params say manual, a detached process snapshots it
    (and logs any pending MLflow record: ``gallery_changes.flush_records``). ``settings``: the command's
    own (params are parsed and validated once per command: ~0.1 s each time)."""
    from facegate.components.core.settings import load_settings  # heavy: pydantic and the params schema, ~0.15 s
    from facegate.components.lifecycle import gallery_snapshots  # heavy: FAISS and numpy, ~0.7 s

    if gallery_snapshots.dvc_target() is None:
        return "none: the gallery is outside the repository (FACEGATE_HOME/FACEGATE_GALLERY), DVC cannot version it"
    gallery_snapshots.mark_dirty()
    if (settings or load_settings()).gallery.snapshot == "manual":
        return "pending (`facegate gallery snapshot` makes it)"
    return f"pending, made in the background (pid {gallery_snapshots.spawn_pending_snapshot()})"


@friendly
def enroll(
    photos: Annotated[list[Path] | None, typer.Argument(help="one or more photos, exactly one face each")] = None,
    employee_id: Annotated[str | None, typer.Option("--id", help="employee id, e.g. E123")] = None,
    name: Annotated[str, typer.Option(help="display name")] = "",
    replace: Annotated[bool, typer.Option(help="re-enrol an existing employee with these photos")] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="enrol even if the face looks already enrolled under "
            "another id (duplicate_face otherwise; with --from: every "
            "suspected duplicate of the batch) or, under pad.mode "
            "enforce, looks like a photo of a photo "
            "(presentation_attack otherwise)",
        ),
    ] = False,
    source: Annotated[
        Path | None, typer.Option("--from", help="batch: a folder of <id>/*.jpg|png or a CSV with columns id,name,path")
    ] = None,
) -> None:
    """Enrol one employee from one or more photos (no retraining, a new gallery version), or a batch
    with --from (a Prefect flow: progress bar, a report row per employee with suspected duplicates apart
    from errors, one DVC snapshot at the end; exit 1 when a row was not enrolled)."""
    if source is not None:
        if photos or employee_id:
            raise InvalidEmployee("--from enrols a batch: give no --id and no photos with it")
        from facegate.flows.gallery import batch_enrol_flow  # heavy: Prefect and MLflow load in seconds

        result = batch_enrol_flow(str(source), replace=replace, force=force)
        print_json(result)
        if result["failed"] or result["duplicates"]:
            raise typer.Exit(1)
        return
    if not employee_id or not photos:
        raise InvalidEmployee("give --id and at least one photo (or --from FOLDER_OR_CSV for a batch)")
    quiet_for_one_item()
    from facegate.components.service.facade import FaceGate  # heavy: torch and the models, ~2 s
    from facegate.components.service.gallery_changes import enrol_recorded  # heavy: torch, with the facade

    gate = FaceGate()
    later = _snapshots_in_background(gate.settings)  # the MLflow run is logged by the snapshot's detached process
    result = enrol_recorded(gate, employee_id, name, photos, replace=replace, force=force, later=later)
    mlflow_run = {"mlflow_run": "logged by the background process"} if later else {}
    print_json({**result, **mlflow_run, "gallery_snapshot": _request_gallery_snapshot(gate.settings)})


@friendly
def remove(employee_id: Annotated[str, typer.Argument(help="employee id")]) -> None:
    """Remove an employee: embeddings (all local gallery versions) and stored photos are deleted."""
    quiet_for_one_item()
    from facegate.components.service.facade import FaceGate  # heavy: torch and the models, ~2 s
    from facegate.components.service.gallery_changes import remove_recorded  # heavy: torch, with the facade

    result = remove_recorded(FaceGate(), employee_id)
    print_json({**result, "gallery_snapshot": _request_gallery_snapshot()})


@friendly
def identify(
    frame: Annotated[Path, typer.Argument(help="a camera frame or photo")],
    out: Annotated[Path | None, typer.Option(help="write the frame with boxes and names here")] = None,
) -> None:
    """Who is this? Every face in the frame: box, employee id or not recognized, distance, tau."""
    quiet_for_one_item()
    from facegate.components.core.annotate import draw_boxes  # heavy: numpy and PIL, ~0.06 s
    from facegate.components.core.images import load_image  # heavy: PIL and numpy, ~0.07 s
    from facegate.components.service.facade import FaceGate  # heavy: torch and the models, ~2 s

    gate = FaceGate()
    image = load_image(frame, gate.settings.images.max_pixels)
    result = gate.identify(image)
    if out:
        from facegate.components.service.mask_state import SAY  # heavy: the detector's modules; only --out needs it

        draw_boxes(
            image,
            [
                (
                    f.box,
                    (f.name or f.employee_id or "not recognized") + (f", {SAY.get(f.mask, f.mask)}" if f.mask else ""),
                    f.recognized,
                )
                for f in result.faces
            ],
            out,
        )
    print_json({"frame": str(frame), **result.to_dict(), "annotated": str(out) if out else None})


@friendly
def verify(
    photo: Annotated[Path, typer.Argument(help="a photo with exactly one face")],
    employee_id: Annotated[str, typer.Option("--id", help="the claimed employee id")],
) -> None:
    """Is this person the claimed employee? (1:1 at the calibrated false-accept rate)."""
    quiet_for_one_item()
    from facegate.components.core.images import load_image  # heavy: PIL and numpy, ~0.07 s
    from facegate.components.service.facade import FaceGate  # heavy: torch and the models, ~2 s

    gate = FaceGate()
    print_json(gate.verify(employee_id, load_image(photo, gate.settings.images.max_pixels), photo).to_dict())
