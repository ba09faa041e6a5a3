"""Load test of the REST API on loopback: N concurrent clients for D seconds against a real `facegate
serve` (uvicorn) with a temporary repository and gallery, mixing identify and enrol. Prints JSON.

Every enrolment is a different real person (LFW, one photo each, never reused), so each acknowledged
enrolment is a real write (no duplicate-face refusals from re-enrolling the same few faces); identify
probes are other photos of people enrolled so far, or strangers never enrolled, half and half.

Two readings of "N concurrent clients". Closed loop (default): each client sends its next request the
moment the last one is answered; by Little's law every request then waits for about N / throughput,
whatever the server does, so it measures capacity. ``--think-ms T``: a turnstile, where a person
presents a face, gets the answer and the next person walks up T ms later (uniform 0.5T..1.5T, so the
clients do not march in step, and their first arrivals are spread over one think time: 20 people do
not reach 20 turnstiles in the same millisecond); it measures the latency a person sees at that arrival rate.
Afterwards the server is stopped with SIGTERM (its shutdown flushes the DVC snapshot) and every
acknowledged enrolment (201) is looked up in the gallery on disk: ``lost`` must be empty. Every identify
carries an entrance id of its own, so each acknowledged answer (200) is looked up in the access log
(``.facegate/access.db``): one decision row per face it answered (one ``no_face`` row for none), and one
``enrol`` audit row per acknowledged enrolment: ``access_log.lost_rows`` and ``lost_audit`` must be empty. Latencies
are per kind (p50, p90, p99, max, in ms); ``loadavg`` is os.getloadavg() before and after;
``embedding_batches`` is what the server embedded in batches (``api.batch_window_ms``, in ``server_api``).
Only loopback is ever contacted; the run stops by itself.

    python benchmarks/api_load.py --clients 20 --seconds 60 --json out/api_load.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from facegate.components.core.paths import QUIET_ENV, datasets_root, params_path, weights_root

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "load-test-key"
STRANGERS = 200  # LFW people kept out of every enrolment: identify probes that must not be recognised


def lfw_people(lfw: Path, seed: int = 0) -> tuple[list[list[Path]], list[Path]]:
    """(to enrol: each person's photos, at least 2; strangers: one photo each), disjoint, shuffled."""
    people = []
    for d in sorted(p for p in lfw.iterdir() if p.is_dir()):
        photos = sorted(d.glob("*.jpg"))
        if len(photos) >= 2:
            people.append(photos[:2])
    random.Random(seed).shuffle(people)
    return people[STRANGERS:], [p[0] for p in people[:STRANGERS]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    v = sorted(values)

    def q(p: float) -> float:
        return round(1000 * v[min(len(v) - 1, int(p * len(v)))], 1)

    return {"n": len(v), "p50_ms": q(0.50), "p90_ms": q(0.90), "p99_ms": q(0.99), "max_ms": round(1000 * v[-1], 1)}


def server_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, its threads and finished children: DVC) the server has used so far:
    on a shared machine, what the requests cost, whatever else competed for the cores."""
    import psutil  # optional: process inspection only here

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def embedding_batches(base: str) -> dict:
    """The server's embedding batches (``facegate_embedding_batches`` in /metrics, on loopback without a
    key), per cascade pass: batches, requests and faces in them, the largest, and the mean faces per batch."""
    import httpx  # heavy: an HTTP client only for this call

    out: dict[str, dict] = {}
    for line in httpx.get(f"{base}/metrics", headers={"X-API-Key": KEY}, timeout=30).text.splitlines():
        if line.startswith("facegate_embedding_batches{"):
            labels, value = line[line.index("{") + 1 : line.index("}")], float(line.rsplit(" ", 1)[1])
            tags = dict(kv.split("=", 1) for kv in labels.split(","))
            out.setdefault(tags["pass"].strip('"'), {})[tags["count"].strip('"')] = int(value)
    for counts in out.values():
        counts["mean_faces"] = round(counts["rows"] / counts["batches"], 2) if counts.get("batches") else None
    return out


def server_api(params: Path | None) -> dict:
    """The server's slot, batching and inference-runtime settings (from the params file it was started with)."""
    import yaml  # heavy: only to report the settings

    raw = yaml.safe_load((params or params_path()).read_text())
    api, emb = raw.get("api", {}), raw.get("embedding", {})
    keys = ("inference_slots", "inference_threads", "batch_window_ms", "batch_max")
    return {**{k: api.get(k) for k in keys}, "embedding_backend": emb.get("backend"), "precision": emb.get("precision")}


def centre_crop(path: Path, side: int = 160) -> bytes:
    """The middle of an LFW photo (250x250, the named person centred), as JPEG: background faces that
    make an enrolment photo ambiguous (``multiple_faces``) fall outside it."""
    from PIL import Image  # heavy: only image paths need Pillow

    with Image.open(path) as im:
        w, h = im.size
        box = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
        buf = io.BytesIO()
        im.convert("RGB").crop(box).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def prepare_repo(repo: Path, seed_photo: Path, params: Path | None = None) -> dict:
    """A scratch repository (git + DVC) whose gallery holds one employee, embedded by the model the
    server will serve, with a fixed tau: no calibration data needed."""
    env = {
        **QUIET_ENV,
        "FACEGATE_REPO": str(repo),
        "FACEGATE_HOME": str(repo / ".facegate"),
        "FACEGATE_PARAMS": str(repo / "params.yaml"),
        "FACEGATE_API_KEY": KEY,
        # the scratch repository has no ../shared beside it: the roots of this checkout
        "FACEGATE_DATASETS": str(datasets_root()),
        "FACEGATE_WEIGHTS": str(weights_root()),
    }
    repo.mkdir(parents=True)
    (repo / "params.yaml").write_text((params or params_path()).read_text())  # FACEGATE_PARAMS when set
    (repo / ".gitignore").write_text("/.facegate/\n/data/\n")
    git = ["git", "-c", "user.name=load", "-c", "user.email=load@localhost"]
    subprocess.run(git + ["init", "-q"], cwd=repo, check=True)
    subprocess.run(git + ["add", "."], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "load test"], cwd=repo, check=True)
    seed = f"""
import os
from facegate.components.lifecycle.data_version import ensure_repo
from facegate.components.gallery.enrolment import Photo
from facegate.components.core.errors import CalibrationMissing
from facegate.components.gallery import Gallery
from facegate.components.service.facade import FaceGate
from facegate.components.service.deployment import gallery_store
from facegate.components.lifecycle.model_loading import service_recognizer
from facegate.components.core.settings import load_settings
ensure_repo()
s = load_settings(); r = service_recognizer(s)
gate = FaceGate(s, store=gallery_store(), recognizer=r)
try:  # the model's stored calibration (its real tau), else a fixed one
    gate.new_gallery()
except CalibrationMissing:
    gate = FaceGate(s, store=gallery_store(), recognizer=r, new_gallery=lambda: Gallery.new(
        r.embedding_dim, r.embedder_name, r.embedder_version, tau=0.5, target_far=1e-3))
g = gate.enrol("seed", "Seed", [Photo({seed_photo.name!r}, open({str(seed_photo)!r}, "rb").read())])
print("TAU", g.manifest.tau)
"""
    out = subprocess.run(
        [sys.executable, "-c", seed], cwd=ROOT, env={**os.environ, **env}, check=True, capture_output=True, text=True
    ).stdout
    env["TAU"] = out.split("TAU")[-1].strip()
    return env


def run(
    clients: int,
    seconds: float,
    enrol_share: float,
    think_ms: float,
    lfw: Path,
    workdir: Path,
    kill: bool = False,
    params: Path | None = None,
) -> dict:
    import httpx  # heavy: an HTTP client only for this call

    to_enrol, strangers = lfw_people(lfw)
    seed_person = to_enrol.pop()
    env = prepare_repo(workdir / "repo", seed_person[0], params)
    tau = float(env.pop("TAU"))
    port = free_port()
    log = open(workdir / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "facegate.cli.main", "serve", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the server did not start: {(workdir / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    # warm-up, not measured: the first identify loads the model and the gallery
    httpx.post(
        f"{base}/identify",
        files={"image": ("seed.jpg", seed_person[1].read_bytes(), "image/jpeg")},
        headers={"X-API-Key": KEY},
        timeout=180,
    ).raise_for_status()
    lat: dict[str, list[float]] = {"identify": [], "enrol": []}
    slow: list[tuple[float, float, str]] = []  # (ms, seconds into the run, kind): where the tail sits
    statuses: dict[str, dict[int, int]] = {"identify": {}, "enrol": {}}
    acked: list[str] = []
    acked_identify: dict[str, int] = {}  # entrance id of an answered identify -> decision rows it must have left
    error_codes: dict[str, int] = {}
    queue = list(reversed(to_enrol))  # popped: every enrolment a person of its own
    enrolled: list[Path] = [seed_person[1]]  # second photos of people enrolled so far (genuine probes)
    identified = {"genuine": 0, "genuine_recognised": 0, "stranger": 0, "stranger_recognised": 0}
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    load_before = os.getloadavg()
    cpu_before = server_cpu_s(server.pid)
    t_start = time.perf_counter()  # the clients start about now: the slowest requests are placed from it

    def client(n: int) -> None:
        rng = random.Random(n)
        counter = 0
        if think_ms:  # a turnstile: the first people walk up over one think time, not all 20 at the same instant
            time.sleep(rng.uniform(0.0, 1.0) * think_ms / 1000)
        with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=120) as c:
            while time.monotonic() < stop_at + (30 if kill else 0):  # --kill: still sending when it lands
                kind = "enrol" if rng.random() < enrol_share else "identify"
                with lock:
                    if kind == "enrol" and queue:
                        person = queue.pop()
                        path, probe = person[0], None
                    else:
                        kind = "identify"
                        probe = "genuine" if rng.random() < 0.5 else "stranger"
                        path = rng.choice(enrolled) if probe == "genuine" else rng.choice(strangers)
                data = centre_crop(path) if kind == "enrol" else path.read_bytes()
                t0 = time.perf_counter()
                try:
                    if kind == "enrol":
                        counter += 1
                        eid = f"c{n}-{counter}"
                        r = c.post(
                            "/employees",
                            data={"employee_id": eid, "name": path.parent.name},
                            files=[("images", (path.name, data, "image/jpeg"))],
                        )
                    else:
                        counter += 1
                        entrance = f"c{n}-{counter}"
                        r = c.post(
                            "/identify", data={"entrance": entrance}, files={"image": (path.name, data, "image/jpeg")}
                        )
                except httpx.HTTPError as exc:
                    if killed.is_set():
                        break  # the server is gone: a request cut off is not acknowledged
                    with lock:
                        errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                    continue
                dt = time.perf_counter() - t0
                with lock:
                    lat[kind].append(dt)
                    slow.append((round(1000 * dt, 1), round(t0 - t_start, 1), kind))
                    statuses[kind][r.status_code] = statuses[kind].get(r.status_code, 0) + 1
                    if kind == "enrol" and r.status_code == 201:
                        acked.append(eid)
                        enrolled.append(person[1])
                    elif r.status_code >= 400:
                        code = f"{kind}:{r.status_code}:{r.json().get('code')}"
                        error_codes[code] = error_codes.get(code, 0) + 1
                    elif probe and r.status_code == 200:
                        acked_identify[entrance] = max(1, len(r.json()["faces"]))
                        identified[probe] += 1
                        identified[f"{probe}_recognised"] += any(f["recognized"] for f in r.json()["faces"])
                if think_ms:
                    time.sleep(rng.uniform(0.5, 1.5) * think_ms / 1000)

    killed = threading.Event()

    def kill_server() -> None:
        killed.set()
        os.killpg(server.pid, signal.SIGKILL)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    if kill:
        threading.Timer(max(0.0, stop_at - time.monotonic()), kill_server).start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    cpu_used = server_cpu_s(server.pid) - cpu_before if not kill else None
    batches = embedding_batches(base) if not kill else {}

    # a clean stop: SIGTERM, the server's shutdown flushes the DVC snapshot (--kill: SIGKILL came at the
    # deadline with requests in flight, no shutdown at all)
    t_stop = time.perf_counter()
    if not kill:
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(180)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    stop_s = time.perf_counter() - t_stop
    check = """
import json, subprocess, sys
from facegate.components.service.deployment import gallery_store
from facegate.components.lifecycle import gallery_snapshots
from facegate.components.service.access_log import AccessLog, DecisionFilter
from facegate.components.core.settings import load_settings
g = gallery_store().load()
log = AccessLog.from_settings(load_settings())
rows = {}
for d in log.decisions(DecisionFilter(limit=10_000_000)):
    rows[d["entrance"]] = rows.get(d["entrance"], 0) + 1
audited = sorted({a["employee_id"] for a in log.audit_events(limit=10_000_000) if a["action"] == "enrol"})
status = subprocess.run([sys.executable, "-m", "dvc", "status", "gallery.dvc"], capture_output=True, text=True).stdout
print(json.dumps({"ids": sorted(g.employees()["employee_id"]), "dirty": gallery_snapshots.is_dirty(),
                  "dvc_status": status.strip(), "rows": rows, "audited": audited}))
"""
    out = subprocess.run(
        [sys.executable, "-c", check],
        cwd=env["FACEGATE_REPO"],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    on_disk = json.loads(out.stdout.strip().splitlines()[-1])
    lost = sorted(set(acked) - set(on_disk["ids"]))
    lost_rows = sorted(e for e, n in acked_identify.items() if on_disk["rows"].get(e, 0) < n)
    lost_audit = sorted(set(acked) - set(on_disk["audited"]))
    total = sum(len(v) for v in lat.values())
    return {
        "clients": clients,
        "seconds": seconds,
        "enrol_share": enrol_share,
        "think_ms": think_ms,
        "stopped_by": "SIGKILL" if kill else "SIGTERM",
        "wall_s": round(wall, 1),
        "requests": total,
        "throughput_rps": round(total / wall, 2),
        "identify": {**percentiles(lat["identify"]), "statuses": statuses["identify"]},
        "slowest": [{"ms": ms, "at_s": at, "kind": kind} for ms, at, kind in sorted(slow, reverse=True)[:8]],
        "enrol": {**percentiles(lat["enrol"]), "statuses": statuses["enrol"]},
        "tau": tau,
        "error_codes": error_codes,
        "identify_probes": identified,
        "enrol_people_left": len(queue),
        "server_cpu_s": round(cpu_used, 1) if cpu_used is not None else None,
        "server_cpu_ms_per_request": round(1000 * cpu_used / total, 1) if cpu_used and total else None,
        "server_api": server_api(params),
        "embedding_batches": batches,
        "acknowledged_enrolments": len(acked),
        "enrolled_on_disk": len(on_disk["ids"]) - 1,
        "lost": lost,
        "access_log": {
            "acknowledged_identify": len(acked_identify),
            "rows_expected": sum(acked_identify.values()),
            "rows_found": sum(on_disk["rows"].get(e, 0) for e in acked_identify),
            "lost_rows": lost_rows[:10],
            "n_lost_rows": len(lost_rows),
            "audit_enrol_rows": len(on_disk["audited"]),
            "lost_audit": lost_audit[:10],
            "n_lost_audit": len(lost_audit),
        },
        "client_errors": errors[:10],
        "n_client_errors": len(errors),
        "stop_s": round(stop_s, 1),
        "gallery_dirty_after_stop": on_disk["dirty"],
        "dvc_status_after_stop": on_disk["dvc_status"],
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--enrol-share", type=float, default=0.2, help="share of requests that enrol (the rest identify)")
    ap.add_argument("--think-ms", type=float, default=0.0, help="pause of each client between requests")
    ap.add_argument("--lfw", type=Path, default=None, help="LFW folder of <person>/*.jpg (default: datasets root)")
    ap.add_argument(
        "--kill",
        action="store_true",
        help="stop the server with SIGKILL the moment the clients "
        "stop (requests may be in flight): no acknowledged "
        "enrolment may be missing from the gallery on disk",
    )
    ap.add_argument(
        "--params",
        type=Path,
        default=None,
        help="the server's params.yaml (default: the repository's), e.g. other api.inference_* values",
    )
    ap.add_argument("--json", type=Path, default=None, help="write the result here too")
    args = ap.parse_args()
    if not 1 <= args.clients <= 64 or not 1 <= args.seconds <= 600:
        raise SystemExit("bounded: 1..64 clients, 1..600 seconds")

    lfw = args.lfw or datasets_root() / "lfw"
    with tempfile.TemporaryDirectory(prefix="facegate-load-") as tmp:
        result = run(
            args.clients, args.seconds, args.enrol_share, args.think_ms, lfw, Path(tmp), args.kill, args.params
        )
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
