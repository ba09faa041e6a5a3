"""One-shot CLI enrolment, end to end: `facegate enroll --id X --name X PHOTO` as the operator runs it.

Why: issue 17 (and 31) ask for one enrolment in at most 5 s wall, median of 5, on 2 cores. Each run is
a fresh ``python -m facegate.cli.main enroll`` process (imports, models, the enrolment, its audit row)
on a different LFW person, all in one fresh state folder (``FACEGATE_HOME``, ``FACEGATE_GALLERY``), with
``--force`` (PAD under enforce judges LFW's news photos as not live). Per run: the wall seconds, the
command's user and system CPU seconds (its waited-for children included, its detached MLflow logger
not) and the load average before it. Between runs the bench waits until the detached logger has
emptied the outbox (``background_s``), so a run does not compete with the previous one's logging.

    .venv/bin/python -m facegate.benchmarks.cli_enrol --runs 5
    .venv/bin/facegate bench cli-enrol --runs 5 --json benchmarks/results/cli-enrol.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from facegate.components.core.paths import datasets_root, repo_root, weights_root

GOAL_S = 5.0
OUTBOX = "pending-records"  # gallery_changes.pending_records_dir, without importing it (torch, with the facade)


# LFW people whose first photo has exactly one face by the default detector (yunet): enrolment refuses
# a photo with several (multiple_faces), and a refused run is not the path being timed.
PEOPLE = (
    "AJ_Cook",
    "Andy_Hebb",
    "Avril_Lavigne",
    "Bruce_Gebhardt",
    "Cindy_Crawford",
    "Emily_Robison",
    "Holly_Hunter",
    "Jacques_Chirac",
    "Katie_Smith",
    "Paul_Wolfowitz",
)


def lfw_people(n: int, root: Path | None = None) -> list[tuple[str, Path]]:
    """The first ``n`` of ``PEOPLE``, each with its first LFW photo."""
    if n > len(PEOPLE):
        raise SystemExit(f"at most {len(PEOPLE)} runs (one LFW person each)")
    root = root or datasets_root() / "lfw"
    return [(name, root / name / f"{name}_0001.jpg") for name in PEOPLE[:n]]


def _wait_outbox_empty(home: Path, timeout_s: float) -> float | None:
    """Seconds until the detached logger has logged every pending record; None after ``timeout_s``."""
    t0, folder = time.perf_counter(), home / OUTBOX
    while time.perf_counter() - t0 < timeout_s:
        if not folder.is_dir() or not any(folder.iterdir()):
            return round(time.perf_counter() - t0, 2)
        time.sleep(0.1)
    return None


def enrol_once(employee_id: str, photo: Path, env: dict[str, str], repo: Path) -> dict:
    """One ``facegate enroll`` process: wall and CPU seconds, the load before it, its exit code."""
    load = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "facegate.cli.main", "enroll", "--id", employee_id, "--name", employee_id, "--force"]
        + [str(photo)],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = {
        "employee_id": employee_id,
        "wall_s": round(wall, 2),
        "user_s": round(after.ru_utime - before.ru_utime, 2),
        "sys_s": round(after.ru_stime - before.ru_stime, 2),
        "loadavg_before": [round(x, 2) for x in load],
        "rc": proc.returncode,
    }
    if proc.returncode:
        row["stderr"] = proc.stderr.strip().splitlines()[-1:]
    else:
        out = json.loads(proc.stdout)
        row["mlflow"] = out.get("mlflow_run_id") or out.get("mlflow_run")
    return row


def run_benchmark(
    runs: int = 5,
    state: Path | None = None,
    repo: Path | None = None,
    drain_timeout_s: float = 120.0,
    log: Callable[[str], None] = print,
) -> dict:
    """``runs`` enrolments of different LFW people into a fresh state folder (``state``: a new temporary
    one by default); the JSON-able result with the runs, their medians and the load averages. ``repo``:
    another checkout's CLI instead of this one's (a copy of the code before a change, to time both under
    the same load), run from its folder with this checkout's datasets and weights."""
    repo = Path(repo or repo_root()).resolve()
    state = Path(state or tempfile.mkdtemp(prefix="facegate-cli-enrol-"))
    home, gallery = state / "home", state / "gallery"
    if home.exists() or gallery.exists():
        raise SystemExit(f"{state}: not a fresh state folder (home/ or gallery/ exists)")
    env = {
        **os.environ,
        "FACEGATE_HOME": str(home),
        "FACEGATE_GALLERY": str(gallery),
        "FACEGATE_REPO": str(repo),
        "FACEGATE_DATASETS": str(datasets_root()),
        "FACEGATE_WEIGHTS": str(weights_root()),
    }
    for name in ("MLFLOW_TRACKING_URI", "FACEGATE_MLFLOW_ARTIFACTS"):  # the state folder's own store
        env.pop(name, None)
    out: dict = {"repo": str(repo), "state": str(state), "goal_s": GOAL_S, "loadavg_before": list(os.getloadavg())}
    out["runs"] = []
    for name, photo in lfw_people(runs):
        row = enrol_once(name, photo, env, repo)
        row["background_s"] = _wait_outbox_empty(home, drain_timeout_s)
        log(json.dumps(row))
        out["runs"].append(row)
    ok = [r for r in out["runs"] if r["rc"] == 0]
    for key in ("wall_s", "user_s", "sys_s"):
        out[f"median_{key}"] = round(statistics.median(r[key] for r in ok), 2) if ok else None
    out["median_load1_before"] = round(statistics.median(r["loadavg_before"][0] for r in out["runs"]), 2)
    out["failed"] = len(out["runs"]) - len(ok)
    out["meets_goal"] = bool(ok) and not out["failed"] and out["median_wall_s"] <= GOAL_S
    out["loadavg_after"] = list(os.getloadavg())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--state", type=Path, default=None, help="a fresh folder for the state (default: a temporary one)")
    ap.add_argument("--repo", type=Path, default=None, help="time another checkout's CLI (default: this one)")
    ap.add_argument("--json", type=Path, default=None, help="write the result here too")
    args = ap.parse_args()
    result = run_benchmark(args.runs, args.state, args.repo, log=lambda m: print(m, file=sys.stderr, flush=True))
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
