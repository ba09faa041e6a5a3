"""Training-curve plots (per-epoch loss and mining statistics) as PNG files for MLflow."""

from __future__ import annotations

from pathlib import Path


def plot_training_curves(history: list[dict], path: Path | str) -> Path:
    from matplotlib.figure import Figure  # heavy: plotting only where a figure is written

    fig = Figure(figsize=(9, 3.2))
    keys = [("loss", "triplet loss"), ("active_fraction", "active triplets"), ("mean_d_ap", "d(A,P) / d(A,N)")]
    epochs = [h["epoch"] for h in history]
    for i, (key, title) in enumerate(keys):
        ax = fig.add_subplot(1, 3, i + 1)
        ax.plot(epochs, [h.get(key, float("nan")) for h in history], marker="o", label=key)
        if key == "mean_d_ap":
            ax.plot(epochs, [h.get("mean_d_an", float("nan")) for h in history], marker="o", label="mean_d_an")
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
