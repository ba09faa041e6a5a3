"""Benchmark results -> ``docs/benchmarks.md`` and the README's headline table.

Why: a figure is typed once, by the benchmark that measured it, into a JSON file committed under
``benchmarks/results/``; every table a reader sees is generated from those files, so a number in the
docs always names the run (date, commit, load average, file) it came from, and nobody edits one by hand.

    python -m facegate.benchmarks.report [--results benchmarks/results] [--docs docs/benchmarks.md] [--readme README.md]

Naming convention of a result file (what ``facegate bench KIND --json OUT`` should be given)::

    benchmarks/results/<kind>-<YYYYMMDD>[T<HHMM>]-<commit>[-<note>].json
    e.g. lfw-20261201-91b28bd.json, lfw-20261201-91b28bd-masked.json, identify-20261201T1934-91b28bd.json

``kind`` is the ``facegate bench`` verb (lfw, identify, detect, face-detectors, gallery, calibration,
style, duplicates) or a script's name (api-load, pipeline-profile, gpu-paths, distributed); ``commit`` is the short
hash of the code that ran. Tolerated as well: a ``benchmark`` key in the JSON names the kind, ``date``
(YYYY-MM-DD or YYYYMMDD) and ``commit`` / ``git_commit`` keys override the name's; a name like
``lfw-masked-...`` is kind ``lfw`` with note ``masked``. A file that cannot be read is listed, not fatal.

Benchmarks layer: the standard library and ``facegate.components.core`` only (no numpy, no torch), so
the report runs in a second on a fresh checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from facegate.components.core.paths import repo_root

START, END = "<!-- headline:start -->", "<!-- headline:end -->"
NAME = re.compile(
    r"^(?P<kind>[a-z][a-z0-9_]*(?:-[a-z][a-z0-9_]*)*?)-(?P<date>\d{8})(?:T(?P<time>\d{4,6}))?"
    r"(?:-(?P<commit>[0-9a-f]{7,40}))?(?:-(?P<note>[A-Za-z0-9_.-]+))?$"
)
COMMANDS = {
    "lfw": "facegate bench lfw",
    "identify": "facegate bench identify",
    "detect": "facegate bench detect",
    "face-detectors": "facegate bench face-detectors",
    "gallery": "facegate bench gallery",
    "calibration": "facegate bench calibration",
    "style": "facegate bench style",
    "duplicates": "facegate bench duplicates",
    "pad": "facegate bench pad",
    "flywheel": "facegate bench flywheel",
    "units": "facegate explain units",
    "api-load": "python -m facegate.benchmarks.api_load",
    "gpu-paths": "python -m facegate.benchmarks.gpu_paths",
    "pipeline-profile": "python -m facegate.benchmarks.pipeline_profile",
    "distributed": "python -m facegate.flows.distributed_bench",
}
LOAD_KEYS = (
    ("speed_loadavg_1min", None),
    ("identify_loadavg_1min", None),
    ("identify_loadavg", None),
    ("loadavg_start", "loadavg_end"),
    ("loadavg_before", "loadavg_after"),
    ("loadavg_1min_at_start", "loadavg_1min_at_end"),
    ("load_average", None),
)


@dataclass
class Run:
    """One result file: where it is, what it measured, when and on which code."""

    path: Path
    kind: str
    date: str = ""  # YYYY-MM-DD, "" when neither the name nor the JSON says
    time: str = ""
    commit: str = ""
    note: str = ""
    data: dict = field(default_factory=dict)

    @property
    def order(self) -> tuple[str, str, str]:
        return self.date, self.time, self.path.name


def _iso(date: str) -> str:
    digits = date.replace("-", "")
    return f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}" if re.fullmatch(r"\d{8}", digits) else ""


def parse_name(stem: str) -> dict:
    """``kind``, ``date``, ``time``, ``commit``, ``note`` from a file name (no suffix); a name outside the
    convention gives its first word as the kind and nothing else."""
    m = NAME.match(stem)
    if not m:
        return {"kind": stem.split("-")[0].replace("_", "-"), "date": "", "time": "", "commit": "", "note": ""}
    kind, note = m["kind"].replace("_", "-"), m["note"] or ""
    if kind not in COMMANDS:  # lfw-masked -> lfw + note masked
        known = [k for k in COMMANDS if kind.startswith(k + "-")]
        if known:
            base = max(known, key=len)
            note = "-".join(x for x in (kind[len(base) + 1 :], note) if x)
            kind = base
    return {"kind": kind, "date": _iso(m["date"]), "time": m["time"] or "", "commit": m["commit"] or "", "note": note}


def load_runs(folder: Path) -> tuple[list[Run], list[str]]:
    """Every ``*.json`` under ``folder`` (recursively), oldest first, and one line per unreadable file."""
    runs, problems = [], []
    for path in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"{path.name}: not readable JSON ({type(exc).__name__})")
            continue
        if not isinstance(data, dict):
            problems.append(f"{path.name}: not a JSON object")
            continue
        meta = parse_name(path.stem)
        if isinstance(data.get("benchmark"), str):
            meta["kind"] = data["benchmark"].replace("_", "-")
        if isinstance(data.get("date"), str) and _iso(data["date"][:10]):
            meta["date"] = _iso(data["date"][:10])
        commit = data.get("commit") or data.get("git_commit")
        if isinstance(commit, str) and commit:
            meta["commit"] = commit[:12]
        runs.append(Run(path=path, data=data, **meta))
    return sorted(runs, key=lambda r: r.order), problems


# ------------------------------------------------------------------------------------ cells


def value(data: dict, key: str):
    """``data[a][b]`` for ``key`` "a.b" (keys with dots of their own are tried whole first); None if absent."""
    if key in data:
        return data[key]
    head, _, rest = key.partition(".")
    return value(data[head], rest) if rest and isinstance(data.get(head), dict) else None


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def num(key: str, digits: int = 3, scale: float = 1.0, suffix: str = "") -> Callable[[dict], str]:
    def cell(data: dict) -> str:
        v = _number(value(data, key))
        return "" if v is None else f"{v * scale:.{digits}f}{suffix}"

    return cell


def _seeds_map(data: dict) -> str:
    """``bench detect --seeds N``, the figure to quote: the mean over the seeds, the lowest and the spread."""
    m = value(data, "summary.map50")
    if not isinstance(m, dict) or _number(m.get("mean")) is None:
        return ""
    n = len(data.get("seeds") or [])
    return f"{m['mean']:.3f} mean of {n} seeds (lowest {m['min']:.3f}, std {m['std']:.3f})"


def pct(key: str, std: str | None = None) -> Callable[[dict], str]:
    def cell(data: dict) -> str:
        v, s = _number(value(data, key)), _number(value(data, std)) if std else None
        if v is None:
            return ""
        return f"{100 * v:.2f}%" + (f" ± {100 * s:.2f}" if s is not None else "")

    return cell


def text(*keys: str, sep: str = "/") -> Callable[[dict], str]:
    def cell(data: dict) -> str:
        return sep.join(str(v) for v in (value(data, k) for k in keys) if v not in (None, ""))

    return cell


def load_average(data: dict) -> str:
    """The 1-minute load average beside the figures (before -> after when both were kept)."""

    def one_min(key: str, v) -> list[float]:
        if isinstance(v, list) and v and all(isinstance(y, list) and y for y in v):  # [[1, 5, 15 min], ...]
            return [x for x in (_number(y[0]) for y in v) if x is not None]
        if isinstance(v, list):
            nums = [x for x in (_number(y) for y in v) if x is not None]
            return nums if key.endswith("_1min") else nums[:1]
        return [x for x in (_number(v),) if x is not None]

    for before, after in LOAD_KEYS:
        if before in data:
            seen = one_min(before, data[before]) + (one_min(after, data.get(after)) if after else [])
            if seen:
                return " -> ".join(f"{x:.2f}" for x in seen)
    return ""


def _model(data: dict) -> str:
    return text("backbone", "mode")(data)


def _face_detectors(data: dict) -> str:
    rows = data.get("detectors") if isinstance(data.get("detectors"), dict) else {}
    return "; ".join(
        f"{name} {_number(r.get('face_ap50')):.3f}"
        for name, r in rows.items()
        if isinstance(r, dict) and _number(r.get("face_ap50")) is not None
    )


def _gallery_sizes(data: dict) -> str:
    rows = data.get("summary") if isinstance(data.get("summary"), list) else []
    out = []
    for r in rows:
        if isinstance(r, dict) and _number(r.get("n_identities")) is not None:
            qps, p99 = _number(r.get("exact_batch_qps")), _number(r.get("exact_single_p99_ms"))
            out.append(
                f"{int(r['n_identities']):,}: "
                + (f"{qps:,.0f} q/s" if qps is not None else "?")
                + (f", p99 {p99:.1f} ms" if p99 is not None else "")
            )
    return "; ".join(out)


def _duplicate_sizes(data: dict) -> str:
    """Per gallery size: false refusals of strangers over target and returning people caught, the 1:1
    check of before in brackets."""
    out = []
    for r in data.get("sizes") if isinstance(data.get("sizes"), list) else []:
        one = r.get("one_to_one") if isinstance(r, dict) and isinstance(r.get("one_to_one"), dict) else None
        if one is None or _number(r.get("size")) is None:
            continue
        over, caught = _number(r.get("false_refusal_over_target")), _number(r.get("true_duplicates_caught"))
        old_over, old_caught = _number(one.get("false_refusal_over_target")), _number(one.get("true_duplicates_caught"))
        if None not in (over, caught, old_over, old_caught):
            out.append(
                f"{int(r['size']):,}: {over:.2f}x ({old_over:.1f}x), caught {100 * caught:.1f}% "
                f"({100 * old_caught:.1f}%)"
            )
    return "; ".join(out)


def _goals(data: dict) -> str:
    goals = data.get("goals") if isinstance(data.get("goals"), dict) else {}
    return f"{sum(bool(v) for v in goals.values())}/{len(goals)}" if goals else ""


Column = tuple[str, Callable[[dict], str]]
COLUMNS: dict[str, list[Column]] = {
    "lfw": [
        ("model", _model),
        ("protocol", text("protocol")),
        ("flip TTA", text("flip_tta")),
        ("accuracy", pct("accuracy_mean", "accuracy_std")),
        ("AUC", num("auc", 4)),
        ("TAR@FAR 1e-3", num("tar_at_far_1e-3")),
        ("TAR@FAR 1e-4", num("tar_at_far_1e-4")),
        ("pipeline images/s", num("pipeline_images_per_s", 1)),
        ("CPU ms/image", num("pipeline_cpu_ms_per_image", 1)),
    ],
    "identify": [
        ("model", _model),
        ("gallery", num("gallery_size", 0)),
        ("rank-1", num("rank1")),
        ("DIR@FPIR 1e-2", num("dir_at_fpir_1e-2")),
        ("FPIR at tau", num("fpir_at_tau_identify", 4)),
        ("FNIR at tau", num("fnir_at_tau_identify", 4)),
        ("p50 ms", num("identify_ms_p50", 1)),
        ("p99 ms", num("identify_ms_p99", 1)),
        ("CPU ms p50", num("identify_cpu_ms_p50", 1)),
    ],
    "detect": [
        ("variant", text("variant")),
        ("mAP@0.5", num("map50")),
        ("mAP@[.5:.95]", num("map50_95")),
        ("pycocotools mAP@0.5", num("pycocotools_map50")),
        ("face AP@0.5", num("face_ap50")),
        ("dlib HOG face AP@0.5", num("hog_face_ap50")),
        ("images/s", num("images_per_s", 1)),
        ("weakest class", text("weakest_class")),
    ],
    "face-detectors": [("held-out images", num("val_images", 0)), ("face AP@0.5 per detector", _face_detectors)],
    "gallery": [
        ("exact search by gallery size", _gallery_sizes),
        ("1M goal met", text("goal_met_at_1m")),
        ("wall s", num("wall_s", 0)),
    ],
    "calibration": [
        ("chosen", text("chosen.normalisation")),
        ("worst achieved/target", num("chosen.worst_ratio", 2)),
        ("in service", text("deployment.normalisation")),
        ("in service worst", num("deployment.worst_ratio", 2)),
        ("within 2x", text("deployment.within_2x")),
        ("wall s", num("wall_s", 0)),
    ],
    "duplicates": [
        ("model", text("model")),
        ("false refusals/target, caught, by size (1:1 check)", _duplicate_sizes),
        ("goal met", text("goal_met")),
        ("wall s", num("wall_s", 0)),
    ],
    "style": [
        ("cost reduction", pct("loss_reduction")),
        ("style cost ratio", num("style_cost_ratio", 0)),
        ("seconds", num("seconds", 1)),
        ("goals met", _goals),
    ],
    "api-load": [
        ("clients", num("clients", 0)),
        ("think ms", num("think_ms", 0)),
        ("requests/s", num("throughput_rps", 1)),
        ("identify p50 ms", num("identify.p50_ms", 1)),
        ("identify p99 ms", num("identify.p99_ms", 1)),
        ("enrol p50 ms", num("enrol.p50_ms", 1)),
        ("lost", text("lost", sep=",")),
        ("server CPU ms/request", num("server_cpu_ms_per_request", 1)),
    ],
}


def generic_columns(runs: Iterable[Run], limit: int = 8) -> list[Column]:
    """For a kind without a table of its own: its first ``limit`` top-level numbers, as the runs name them."""
    keys: list[str] = []
    for run in runs:
        for k, v in run.data.items():
            if not k.startswith("_") and _number(v) is not None and "loadavg" not in k and k not in keys:
                keys.append(k)
    return [(k, num(k)) for k in keys[:limit]]


# ------------------------------------------------------------------------------------ tables


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_escape(c) for c in row) + " |" for row in rows]


def link(run: Run, page: Path) -> str:
    """The run's file as a markdown link relative to the page that shows it."""
    rel = os.path.relpath(run.path.resolve(), page.resolve().parent).replace(os.sep, "/")
    return f"[{run.path.name}]({rel})"


def kind_table(kind: str, runs: list[Run], page: Path) -> list[str]:
    columns = COLUMNS.get(kind) or generic_columns(runs)
    header = ["date", "commit", "load avg (1 min)", *[c[0] for c in columns], "file"]
    newest_first = sorted(runs, key=lambda r: r.order, reverse=True)
    rows = [
        [
            r.date or "?",
            r.commit or "?",
            load_average(r.data),
            *[fn(r.data) for _, fn in columns],
            link(r, page) + (f" ({r.note})" if r.note else ""),
        ]
        for r in newest_first
    ]
    return markdown_table(header, rows)


@dataclass(frozen=True)
class Headline:
    figure: str
    kind: str
    cell: Callable[[dict], str]
    accept: Callable[[dict], bool] = lambda data: True
    command: str = ""  # what to run when no file has it (default: the kind's command)


def served_and_full(served: Callable[[dict], str], full: Callable[[dict], str]) -> Callable[[dict], str]:
    """The figure as served (the confidence cascade, when the run scored it), the full model's in brackets."""

    def cell(data: dict) -> str:
        a, b = served(data), full(data)
        return f"{a} (full model {b})" if a and b and a != b else (a or b)

    return cell


def ms_pair(p50: str, p99: str) -> Callable[[dict], str]:
    return lambda d: f"{num(p50, 1)(d)} / {num(p99, 1)(d)} ms" if num(p50)(d) else ""


HEADLINES = [
    Headline(
        "LFW verification accuracy (View 2, 10 folds)",
        "lfw",
        served_and_full(pct("cascade.accuracy_mean", "cascade.accuracy_std"), pct("accuracy_mean", "accuracy_std")),
        lambda d: d.get("protocol", "plain") == "plain",
    ),
    Headline(
        "LFW accuracy, masked protocol",
        "lfw",
        pct("accuracy_mean", "accuracy_std"),
        lambda d: d.get("protocol") == "masked",
        "facegate bench lfw --masked",
    ),
    Headline("TAR at FAR 1e-3 (LFW)", "lfw", num("tar_at_far_1e-3"), lambda d: d.get("protocol", "plain") == "plain"),
    Headline("rank-1, open-set one-shot (LFW)", "identify", served_and_full(num("cascade_rank1"), num("rank1"))),
    Headline(
        "DIR at FPIR 1e-2 (LFW)", "identify", served_and_full(num("cascade_dir_at_fpir_1e-2"), num("dir_at_fpir_1e-2"))
    ),
    Headline("identify latency p50 / p99", "identify", ms_pair("identify_ms_p50", "identify_ms_p99")),
    Headline(
        "OpenCV YuNet + SFace, same frames, same run: p50 / p99",
        "identify",
        ms_pair("anchor_opencv_ms_p50", "anchor_opencv_ms_p99"),
    ),
    Headline("face-mask detector mAP@0.5 (held-out)", "detect", lambda d: _seeds_map(d) or num("map50")(d)),
    Headline(
        "presentation attacks: BPCER at APCER 1% / IAPMR under enforce",
        "pad",
        lambda d: f"{num('bpcer100', 4)(d)} / {num('iapmr_enforce', 4)(d)}" if num("bpcer100")(d) else "",
    ),
    Headline("pipeline images/s (load, detect, align, embed)", "lfw", num("pipeline_images_per_s", 1)),
]


def headline_rows(runs: list[Run], page: Path) -> list[list[str]]:
    """Per headline figure, the newest run of its kind that has it."""
    rows = []
    for h in HEADLINES:
        found = [r for r in runs if r.kind == h.kind and h.accept(r.data) and h.cell(r.data)]
        if found:
            r = max(found, key=lambda r: r.order)
            rows.append([h.figure, h.cell(r.data), load_average(r.data), r.date or "?", r.commit or "?", link(r, page)])
        else:
            rows.append([h.figure, "no run yet", "", "", "", f"`{h.command or COMMANDS[h.kind]}`"])
    return rows


def headline_block(runs: list[Run], page: Path, results: Path) -> str:
    where = os.path.relpath(results.resolve(), page.resolve().parent).replace(os.sep, "/")
    header = ["figure", "value", "load avg (1 min)", "date", "commit", "result file"]
    if not runs:
        lines = [
            f"No results yet: run a benchmark with `--json {where}/<kind>-<YYYYMMDD>-<commit>.json`,",
            "then `python -m facegate.benchmarks.report`.",
            "",
            *markdown_table(header, [["no results yet", "", "", "", "", ""]]),
        ]
    else:
        newest = max(runs, key=lambda r: r.order)
        lines = [
            f"Newest run {newest.date or '?'} at commit {newest.commit or '?'}; each row is the newest "
            f"run that measured it, from `{where}/` (generated by `python -m facegate.benchmarks.report`, "
            "do not edit between the markers).",
            "",
            *markdown_table(header, headline_rows(runs, page)),
        ]
    return "\n".join(lines)


def benchmarks_page(runs: list[Run], problems: list[str], page: Path) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python -m facegate.benchmarks.report` from the JSON files in `benchmarks/results/`:",
        "do not edit by hand. Every run is a row, newest first, with the date and commit it ran on and the",
        "1-minute load average it recorded (timings on a shared machine move with the neighbours' load:",
        "compare systems side by side in one run, not across rows). The README's headline table comes",
        "from the same files.",
        "",
        "A result file is named `<kind>-<YYYYMMDD>[T<HHMM>]-<commit>[-<note>].json`, e.g.",
        "`lfw-20261201-91b28bd.json` or `lfw-20261201-91b28bd-masked.json`; `kind` is the `facegate bench`",
        "verb or the script's name (a `benchmark` key in the JSON wins). To add a run:",
        "",
        "```bash",
        "out=benchmarks/results/lfw-$(date +%Y%m%d)-$(git rev-parse --short HEAD).json",
        ".venv/bin/facegate bench lfw --json $out && .venv/bin/python -m facegate.benchmarks.report",
        "```",
        "",
    ]
    if not runs:
        lines += ["## Results", "", *markdown_table(["kind", "runs"], [["no results yet", "0"]]), ""]
    known = list(COLUMNS)
    kinds = sorted({r.kind for r in runs}, key=lambda k: (known.index(k) if k in known else len(known), k))
    for kind in kinds:
        of_kind = [r for r in runs if r.kind == kind]
        command = f" (`{COMMANDS[kind]}`)" if kind in COMMANDS else ""
        lines += [f"## {kind}{command}", "", *kind_table(kind, of_kind, page), ""]
    if problems:
        lines += ["## Files not read", "", *[f"- {p}" for p in problems], ""]
    return "\n".join(lines)


def replace_headline(readme: str, block: str) -> str:
    """``readme`` with everything between the headline markers replaced by ``block``."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {START} ... {END} markers")
    return readme[: start + len(START)] + "\n" + block + "\n" + readme[end:]


def write_report(results: Path, docs: Path, readme: Path | None) -> list[Run]:
    runs, problems = load_runs(results)
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(benchmarks_page(runs, problems, docs))
    if readme is not None:
        readme.write_text(replace_headline(readme.read_text(), headline_block(runs, readme, results)))
    return runs


def main(argv: list[str] | None = None) -> int:
    root = repo_root()
    parser = argparse.ArgumentParser(prog="python -m facegate.benchmarks.report", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=root / "benchmarks" / "results")
    parser.add_argument("--docs", type=Path, default=root / "docs" / "benchmarks.md")
    parser.add_argument("--readme", type=Path, default=root / "README.md")
    parser.add_argument("--no-readme", action="store_true", help="leave the README alone")
    args = parser.parse_args(argv)
    try:
        runs = write_report(args.results, args.docs, None if args.no_readme else args.readme)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{len(runs)} result file(s) from {args.results} -> {args.docs}"
        + ("" if args.no_readme else f" and {args.readme}'s headline table")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
