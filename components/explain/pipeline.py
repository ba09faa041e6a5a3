"""One explain run: for each network of a model, one streaming pass over the sample, a grid per layer, and
one ``units.json`` for the model; or the same units of two versions side by side (``compare``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegate.components.explain.grids import compare_grids, render
from facegate.components.explain.images import ImageSet
from facegate.components.explain.networks import SEPARATOR, Network
from facegate.components.explain.units import Collected, collect

__all__ = ["ExplainOptions", "compare_units", "explain_units", "receptive_fields"]


@dataclass(frozen=True)
class ExplainOptions:
    units_per_layer: int | None  # None: every unit
    seed: int
    top_k: int = 9
    batch_size: int = 32
    patch_px: int = 48
    progress: bool = True


def _collect(
    net: Network,
    layers: Sequence[str],
    images: ImageSet,
    opts: ExplainOptions,
    units: Mapping[str, Sequence[int]] | None = None,
) -> Collected:
    return collect(
        net.module,
        layers,
        (net.image(x) for x in images),
        net.to_input,
        total=len(images),
        units_per_layer=opts.units_per_layer,
        seed=opts.seed,
        units=units,
        k=opts.top_k,
        batch_size=opts.batch_size,
        paths=net.paths,
        forward=net.forward,
        progress=opts.progress,
        model_name=net.name,
    )


def _loader(net: Network, images: ImageSet) -> Callable[[int], np.ndarray]:
    """Image ``i`` of the sample as ``net`` sees it (its part of a paired item)."""
    return lambda i: net.image(images.item(i))


def receptive_fields(doc: dict) -> dict[str, int]:
    """``{"net:layer": receptive field side in input pixels}`` of an explain or compare document."""
    return {
        f"{net}{SEPARATOR}{layer}": v["receptive_field_px"]
        if isinstance(v["receptive_field_px"], int)
        else max(v["receptive_field_px"])
        for net, sub in doc["networks"].items()
        for layer, v in sub["layers"].items()
    }


def explain_units(
    networks: Sequence[Network],
    layers: Mapping[str, Sequence[str]],
    images: ImageSet,
    out_dir: str | Path,
    opts: ExplainOptions,
    meta: dict | None = None,
) -> dict:
    """Grids ``<net>_<layer>.png`` and ``units.json`` in ``out_dir``; returns the JSON document."""
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    doc: dict = {
        **(meta or {}),
        "images": images.description,
        "n_images": len(images),
        "seed": opts.seed,
        "units_per_layer": opts.units_per_layer,
        "top_k": opts.top_k,
        "networks": {},
    }
    for net in networks:
        if not layers.get(net.name):
            continue
        result = _collect(net, layers[net.name], images, opts)
        doc["networks"][net.name] = render(
            result,
            _loader(net, images),
            out_dir,
            patch=opts.patch_px,
            prefix=f"{net.name}_",
            name=images.name,
            write_json=False,
            label=f"{net.name}{SEPARATOR}",
        )
    doc["receptive_fields_px"] = receptive_fields(doc)
    doc["seconds"] = round(time.perf_counter() - t0, 2)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "units.json").write_text(json.dumps(doc, indent=1))
    return doc


def compare_units(
    networks_a: Sequence[Network],
    networks_b: Sequence[Network],
    labels: tuple[str, str],
    layers: Mapping[str, Sequence[str]],
    images: ImageSet,
    out_dir: str | Path,
    opts: ExplainOptions,
    meta: dict | None = None,
) -> dict:
    """The same sampled units of two versions of one model, over the same images: per layer
    ``compare_<net>_<layer>.png`` (A left, B right) and ``compare.json``."""
    out_dir = Path(out_dir)
    by_name_b = {n.name: n for n in networks_b}
    doc: dict = {
        **(meta or {}),
        "models": list(labels),
        "images": images.description,
        "n_images": len(images),
        "seed": opts.seed,
        "networks": {},
    }
    for net_a in networks_a:
        net_b = by_name_b.get(net_a.name)
        if net_b is None or not layers.get(net_a.name):
            continue
        res_a = _collect(net_a, layers[net_a.name], images, opts)
        res_b = _collect(net_b, layers[net_a.name], images, opts, units={ly: r.units for ly, r in res_a.layers.items()})
        doc["networks"][net_a.name] = compare_grids(
            res_a,
            res_b,
            _loader(net_a, images),
            out_dir,
            labels=labels,
            patch=opts.patch_px,
            name=images.name,
            prefix=f"{net_a.name}_",
            write_json=False,
            label=f"{net_a.name}{SEPARATOR}",
        )
    doc["receptive_fields_px"] = receptive_fields(doc)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.json").write_text(json.dumps(doc, indent=1))
    return doc
