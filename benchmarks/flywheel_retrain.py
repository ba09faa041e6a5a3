"""The flywheel's retraining, run (``facegate bench flywheel --retrain run``): on the first day the trigger
fires, the simulated employees consent, their confirmed captures are exported as the ``captures``
dataset and the real retraining chain (flows/retrain.py, passed in as ``chain``: benchmarks sit below
flows) runs in process, in a sandbox of its own so the repository's data, registry and gallery are
never touched:

- a git + DVC repository under the simulation's folder holding the entrance's gallery (the flywheel's
  enrolment store is ``<sandbox>/gallery``, so the chain's gallery stage rebuilds it), its own MLflow
  store and registry (empty: the chain's incumbent is the pretrained model in service, as in the
  flywheel), its own DVC remote and data folder;
- the access log and capture store are the flywheel's (``FACEGATE_ACCESS_LOG_URL``): the chain's export
  reads the captures the operator confirmed;
- a small, seeded, fast configuration (as tests/integration/test_deployment_loop.py shrinks the chain):
  ``LFW_IDENTITIES`` LFW identities of the training split (4-8 photos each, seeded order), head mode on
  cached frozen features, ``TRAIN`` (2 epochs of 4x2 batches), one augmented copy. The employees stay
  LFW identities no training split uses; the chain splits the captured employees by identity, so the
  ones held out for ``val_deploy_*`` are never trained on.

What comes back (``run_chain``'s row): the challenger's and the champion's ``val_deploy_*`` side by
side, the gate's decision and reason, whether the champion changed, and the chain's wall time.

What the chain does to the entrance, and the bench shows (benchmarks/results/flywheel-*-retrain*.json):
- the sandbox's registry starts empty, so whatever the gate decides a champion is registered (the
  pretrained incumbent, when it wins) and the gallery is rebuilt: re-embedded from the enrolment photos
  only (``reembed_all``), so the templates learnt from captures are gone until that evening's template
  update learns them again, the next day;
- the rebuilt gallery's tau is calibrated on the chain's held-out LFW slice, not the model's stored
  calibration (thousands of identities): a small slice gives a looser tau and a higher FPIR at the door
  (``--retrain-identities`` sizes it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from facegate.components.core.datasets import unit_hash
from facegate.components.core.paths import params_path, use_mlflow_store, weights_root
from facegate.components.lifecycle.data_version import ensure_repo
from facegate.components.service.access_log import ENV_URL

Chain = Callable[[], dict]  # the retraining chain in process: flows/retrain.py ``retrain_flow(force=True)``
LFW_IDENTITIES = 60  # training-split LFW identities: trained on beside the captures; their held-out part
# calibrates the rebuilt gallery (14, as in the tests, gave a tau loose enough for 80% FPIR at the door)
TRAIN = {"p": 4, "k": 2, "epochs": 2, "lr": 1e-4, "miner": "batch_hard"}
VAL_FRACTION = 0.4  # of identities held out (LFW's slice; captured employees for val_deploy_*)
DEPLOY_PREFIX = "val_deploy_"


def training_identities(
    photos: dict[str, list[Path]], train: set[str], seed: int, n: int = LFW_IDENTITIES
) -> list[str]:
    """``n`` identities of LFW's training split with 4-8 photos, in a seeded order."""
    fit = [name for name in train if 4 <= len(photos[name]) <= 8]
    return sorted(fit, key=lambda name: unit_hash(f"chain:{name}", seed))[:n]


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


class Sandbox:
    """The chain's own repository, state and datasets root under ``folder``."""

    def __init__(self, folder: Path, lfw_root: Path, people: dict[str, list[Path]], overrides: dict) -> None:
        self.repo, self.datasets = folder / "repo", folder / "datasets"
        self.repo.mkdir(parents=True)
        for name, paths in people.items():
            for p in paths:
                _link(p, self.datasets / "lfw" / name / p.name)
        _link(lfw_root / "pairs.txt", self.datasets / "lfw" / "pairs.txt")
        params = yaml.safe_load(params_path().read_text())
        for section, values in overrides.items():
            params.setdefault(section, {}).update(values)
        params["ingest"]["datasets"] = [
            {"name": "lfw", "kind": "lfw", "path": "lfw"},
            {"name": "captures", "kind": "captures", "path": "exports/captures"},
        ]
        params["ingest"]["val_fraction"] = VAL_FRACTION
        params["train"].update(TRAIN)
        params["augment"]["copies"] = 1
        params["retrain"].update({"dataset": "lfw", "captures_dataset": "captures"})
        (self.repo / "params.yaml").write_text(yaml.safe_dump(params))
        (self.repo / ".gitignore").write_text("/.facegate/\n/data/\n/gallery/\n")
        self.weights = weights_root()
        self.gallery = self.repo / "gallery"
        self._git("init", "-q")
        with self.env():
            ensure_repo(self.repo)
        self._git("add", ".")
        self._git("commit", "-qm", "flywheel sandbox")

    def _git(self, *args: str) -> None:
        git = ["git", "-c", "user.name=flywheel", "-c", "user.email=flywheel@sim", "-c", "commit.gpgsign=false"]
        subprocess.run([*git, *args], cwd=self.repo, check=True, capture_output=True)

    @contextmanager
    def env(self, access_url: str | None = None) -> Iterator[None]:
        """The process pointed at the sandbox (repository, state, datasets, params, the flywheel's access log)."""
        values = {
            "FACEGATE_REPO": str(self.repo),
            "FACEGATE_HOME": str(self.repo / ".facegate"),
            "FACEGATE_DATASETS": str(self.datasets),
            "FACEGATE_PARAMS": str(self.repo / "params.yaml"),
            "FACEGATE_WEIGHTS": str(self.weights),
        }
        if access_url:
            values[ENV_URL] = access_url
        unset = ("MLFLOW_TRACKING_URI", "FACEGATE_DVC_REMOTE", "FACEGATE_GALLERY", "FACEGATE_MLFLOW_ARTIFACTS")
        saved = {k: os.environ.get(k) for k in (*values, *unset)}
        os.environ.update(values)
        for k in unset:
            os.environ.pop(k, None)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def deploy_metrics(metrics: dict | None) -> dict:
    return {k: round(float(v), 4) for k, v in sorted((metrics or {}).items()) if k.startswith(DEPLOY_PREFIX)}


def run_chain(chain: Chain, sandbox: Sandbox, access_url: str, before: str, log: Callable[[str], None]) -> dict:
    """The chain in the sandbox; its result and the gate's reason (the parent MLflow run's tag)."""
    t0 = time.perf_counter()
    with sandbox.env(access_url):
        result = chain()
        import mlflow  # heavy: only a run with its chain reads the run back

        use_mlflow_store()
        tags = mlflow.get_run(result["run_id"]).data.tags if result.get("run_id") else {}
    wall = round(time.perf_counter() - t0, 1)
    challenger, champion = result.get("challenger_metrics") or {}, result.get("incumbent_metrics") or {}
    row = {
        "status": "skipped" if result.get("skipped") else "run",
        "skip_reason": result.get("skip_reason"),
        "data_version": result.get("data_version"),
        "captures_exported": int(tags.get("captures_exported", 0) or 0),
        "challenger_version": result.get("challenger_version"),
        "incumbent": result.get("incumbent"),
        "val_deploy": {
            k.removeprefix(DEPLOY_PREFIX): {"challenger": v, "champion": deploy_metrics(champion).get(k)}
            for k, v in deploy_metrics(challenger).items()
        },
        "gate_metric": result.get("gate_metric") or tags.get("gate_metric"),
        "gate_decision": "promote" if result.get("promoted") else "keep champion",
        "gate_reason": result.get("gate_reason") or tags.get("gate_reason"),
        "gate_deploy_guard": tags.get("gate_deploy_guard"),
        "challenger_metrics": {k: round(float(v), 4) for k, v in sorted(challenger.items())},
        "champion_metrics": {k: round(float(v), 4) for k, v in sorted(champion.items())},
        "champion_before": before,
        "champion_version_after": result.get("champion_version"),
        "champion_changed": bool(result.get("promoted")),
        "gallery_version": result.get("gallery_version"),
        "chain_wall_s": wall,
    }
    log(f"retraining: {row['gate_decision']} ({row['gate_reason']}); val_deploy {row['val_deploy']} ({wall} s)")
    return row
