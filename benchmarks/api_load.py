"""Load test of the REST API on loopback: N concurrent clients for D seconds against a real `facegate
serve` (uvicorn) with a temporary repository and gallery, mixing identify and enrol. Prints JSON.

Each client sends requests back to back (closed loop; ``--think-ms`` adds a pause between requests).
Afterwards the server is stopped with SIGTERM (its shutdown flushes the DVC snapshot) and every
acknowledged enrolment (201) is looked up in the gallery on disk: ``lost`` must be empty. Latencies
are per kind (p50, p90, p99, max, in ms); ``loadavg`` is os.getloadavg() before and after. Only
loopback is ever contacted; the run stops by itself.

    python benchmarks/api_load.py --clients 20 --seconds 60 --json out/api_load.json
"""
from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PEOPLE = ["amy", "bernadette", "howard", "leonard", "penny", "raj", "sheldon", "stuart"]
KEY = "load-test-key"


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


def prepare_repo(repo: Path, faces: Path) -> dict:
    """A scratch repository (git + DVC) whose gallery holds one employee, embedded by the model the
    server will serve, with a fixed tau: no calibration data needed."""
    env = {"FACEGATE_REPO": str(repo), "FACEGATE_HOME": str(repo / ".facegate"),
           "FACEGATE_PARAMS": str(repo / "params.yaml"), "FACEGATE_API_KEY": KEY}
    repo.mkdir(parents=True)
    (repo / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (repo / ".gitignore").write_text("/.facegate/\n/data/\n")
    git = ["git", "-c", "user.name=load", "-c", "user.email=load@localhost"]
    subprocess.run(git + ["init", "-q"], cwd=repo, check=True)
    subprocess.run(git + ["add", "."], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "load test"], cwd=repo, check=True)
    seed = f"""
import os
from components.data_version import ensure_repo
from components.enrolment import Photo
from components.gallery import Gallery
from components.service import FaceGate, gallery_store, service_recognizer
from components.settings import load_settings
ensure_repo()
s = load_settings(); r = service_recognizer(s)
gate = FaceGate(s, store=gallery_store(), recognizer=r, new_gallery=lambda: Gallery.new(
    r.embedding_dim, r.embedder_name, r.embedder_version, tau=0.5, target_far=1e-3))
gate.enrol("seed", "Seed", [Photo("amy1.png", open({str(faces / 'amy' / 'amy1.png')!r}, "rb").read())])
"""
    subprocess.run([sys.executable, "-c", seed], cwd=ROOT, env={**os.environ, **env}, check=True)
    return env


def run(clients: int, seconds: float, enrol_share: float, think_ms: float, faces: Path, workdir: Path) -> dict:
    import httpx

    env = prepare_repo(workdir / "repo", faces)
    port = free_port()
    log = open(workdir / "server.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--port", str(port)], cwd=ROOT,
                              env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
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
    photos = {p: [(faces / p / f"{p}{i}.png").read_bytes() for i in (1, 2, 3)] for p in PEOPLE}
    # warm-up, not measured: the first identify loads the model and the gallery
    httpx.post(f"{base}/identify", files={"image": ("amy.png", photos["amy"][1], "image/png")},
               headers={"X-API-Key": KEY}, timeout=180).raise_for_status()
    lat: dict[str, list[float]] = {"identify": [], "enrol": []}
    statuses: dict[str, dict[int, int]] = {"identify": {}, "enrol": {}}
    acked: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    load_before = os.getloadavg()

    def client(n: int) -> None:
        rng = random.Random(n)
        counter = 0
        with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=120) as c:
            while time.monotonic() < stop_at:
                person = rng.choice(PEOPLE)
                data = rng.choice(photos[person])
                kind = "enrol" if rng.random() < enrol_share else "identify"
                t0 = time.perf_counter()
                try:
                    if kind == "enrol":
                        counter += 1
                        eid = f"c{n}-{counter}"
                        r = c.post("/employees", data={"employee_id": eid, "name": person},
                                   files=[("images", (f"{person}.png", data, "image/png"))])
                    else:
                        r = c.post("/identify", files={"image": (f"{person}.png", data, "image/png")})
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                    continue
                dt = time.perf_counter() - t0
                with lock:
                    lat[kind].append(dt)
                    statuses[kind][r.status_code] = statuses[kind].get(r.status_code, 0) + 1
                    if kind == "enrol" and r.status_code == 201:
                        acked.append(eid)
                if think_ms:
                    time.sleep(think_ms / 1000)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()

    # a clean stop: SIGTERM, the server's shutdown flushes the DVC snapshot
    t_stop = time.perf_counter()
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(180)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    stop_s = time.perf_counter() - t_stop
    check = f"""
import json, subprocess, sys
from components.service import gallery_store
from components import gallery_snapshots
g = gallery_store().load()
status = subprocess.run([sys.executable, "-m", "dvc", "status", "gallery.dvc"], capture_output=True, text=True).stdout
print(json.dumps({{"ids": sorted(g.employees()["employee_id"]), "dirty": gallery_snapshots.is_dirty(),
                  "dvc_status": status.strip()}}))
"""
    out = subprocess.run([sys.executable, "-c", check], cwd=env["FACEGATE_REPO"],
                         env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                         check=True)
    on_disk = json.loads(out.stdout.strip().splitlines()[-1])
    lost = sorted(set(acked) - set(on_disk["ids"]))
    total = sum(len(v) for v in lat.values())
    return {
        "clients": clients, "seconds": seconds, "enrol_share": enrol_share, "think_ms": think_ms,
        "wall_s": round(wall, 1), "requests": total, "throughput_rps": round(total / wall, 2),
        "identify": {**percentiles(lat["identify"]), "statuses": statuses["identify"]},
        "enrol": {**percentiles(lat["enrol"]), "statuses": statuses["enrol"]},
        "acknowledged_enrolments": len(acked), "enrolled_on_disk": len(on_disk["ids"]) - 1, "lost": lost,
        "client_errors": errors[:10], "n_client_errors": len(errors),
        "stop_s": round(stop_s, 1), "gallery_dirty_after_stop": on_disk["dirty"],
        "dvc_status_after_stop": on_disk["dvc_status"],
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--enrol-share", type=float, default=0.2, help="share of requests that enrol (the rest identify)")
    ap.add_argument("--think-ms", type=float, default=0.0, help="pause of each client between requests")
    ap.add_argument("--faces", type=Path, default=None, help="faceapi-examples folder (default: datasets root)")
    ap.add_argument("--json", type=Path, default=None, help="write the result here too")
    args = ap.parse_args()
    if not 1 <= args.clients <= 64 or not 1 <= args.seconds <= 600:
        raise SystemExit("bounded: 1..64 clients, 1..600 seconds")
    from components.paths import datasets_root

    faces = args.faces or datasets_root() / "faceapi-examples"
    with tempfile.TemporaryDirectory(prefix="facegate-load-") as tmp:
        result = run(args.clients, args.seconds, args.enrol_share, args.think_ms, faces, Path(tmp))
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
