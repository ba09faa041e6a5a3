"""What the operator does at the entrance, one item at a time: `enroll`, `remove`, `identify`, `verify`.

These call ``FaceGate`` directly: no Prefect server, a few seconds each (issues 17 and 31: 5 s for one
enrolment on 2 cores). So neither MLflow nor Prefect may load here: a write's MLflow run goes to the
outbox (``facegate.components.lifecycle.run_outbox``) and it and the DVC snapshot are handed to a
detached process. Only a batch enrolment (``enroll --from``) runs a flow."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from facegate.cli.output import friendly, print_json
from facegate.components.core.errors import InvalidEmployee
from facegate.components.core.inference import passive_waits
from facegate.components.lifecycle import run_outbox


def quiet_for_one_item() -> None:
    """enroll/remove/identify/verify print their JSON and, on failure, one error line: MLflow's INFO
    lines (creating its database on first use) would add to stderr. Torch's idle threads sleep rather than
    spin (``facegate.components.core.inference.passive_waits``): on a busy machine spinning made one face
    ~10x slower."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    passive_waits()


def _after_write(settings) -> dict:
    """After a CLI write (its MLflow record already in the outbox): who logs the record, and the DVC
    snapshot. The gallery marked dirty and, unless params say manual, a detached process snapshots it
    and then logs the record (``gallery snapshot --pending``); otherwise a detached process only logs it
    (``gallery log-records``). Either way the command answers first; a record whose process dies is
    logged by the next one (``run_outbox``). ``settings``: the command's own (parsed once)."""
    from facegate.components.lifecycle import gallery_snapshots  # heavy: FAISS and numpy, ~0.7 s

    if gallery_snapshots.dvc_target() is None:
        snapshot = "none: the gallery is outside the repository (FACEGATE_HOME/FACEGATE_GALLERY), DVC cannot version it"
    else:
        gallery_snapshots.mark_dirty()
        if settings.gallery.snapshot != "manual":
            pid = gallery_snapshots.spawn_pending_snapshot()
            return {
                "mlflow_run": f"logged by the background process (pid {pid}), after the snapshot",
                "gallery_snapshot": f"pending, made in the background (pid {pid})",
            }
        snapshot = "pending (`facegate gallery snapshot` makes it)"
    try:
        mlflow_run = f"logged by the background process (pid {run_outbox.spawn_flush()})"
    except OSError as exc:  # the record stays in the outbox: the next command's flusher logs it
        mlflow_run = f"pending in {run_outbox.outbox_dir()} ({exc.strerror})"
    return {"mlflow_run": mlflow_run, "gallery_snapshot": snapshot}


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
    result = enrol_recorded(gate, employee_id, name, photos, replace=replace, force=force, later=True)
    print_json({**result, **_after_write(gate.settings)})


@friendly
def remove(employee_id: Annotated[str, typer.Argument(help="employee id")]) -> None:
    """Remove an employee: embeddings (all local gallery versions) and stored photos are deleted."""
    quiet_for_one_item()
    from facegate.components.service.facade import FaceGate  # heavy: torch and the models, ~2 s
    from facegate.components.service.gallery_changes import remove_recorded  # heavy: torch, with the facade

    gate = FaceGate()
    result = remove_recorded(gate, employee_id, later=True)
    print_json({**result, **_after_write(gate.settings)})


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
