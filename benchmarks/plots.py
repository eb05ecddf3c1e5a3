"""The results plots in docs/plots/, drawn from benchmarks/results/*.json (``python benchmarks/tables.py``
redraws them with the tables; needs matplotlib: ``pip install -e ".[plots]"``).

- accuracy_vs_bits.png: per GLUE task, the dev metric of the main runs against E-W-A precision.
- speed_vs_size.png: the BERT-base classifier's CPU time against its size, FP32 / int8 PyTorch and
  the packed engine.

``plots.json`` beside them holds the plotted numbers, so a test can check the PNGs are current
without matplotlib.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tables  # noqa: E402

OUT = tables.ROOT / "docs" / "plots"
BITS_AXIS = ("1-1-1", "1-1-2", "1-1-4", "32-32-32")  # x positions, fewest bits first
SERIES = (("bit", "BiT"), ("bibert", "BiBERT"), ("baseline", "baseline"))


def accuracy_vs_bits_data() -> dict:
    """{task: {"metric", "teacher": best, "series": {method: [[bits, best, final], ...]}}} from the
    summary's runs (one-stage schedules; the fp row is the teacher)."""
    out: dict = {}
    for (task, method, sched), r in sorted(tables.summary_records().items()):
        entry = out.setdefault(task, {"metric": r["metric"], "teacher": None, "series": {}})
        if method == "fp":
            entry["teacher"] = [round(r["best"], 2), round(r["final"], 2)]
        elif sched in BITS_AXIS:
            entry["series"].setdefault(method, []).append([sched, round(r["best"], 2), round(r["final"], 2)])
    for entry in out.values():
        for points in entry["series"].values():
            points.sort(key=lambda p: BITS_AXIS.index(p[0]))
    return out


def speed_vs_size_data() -> list[dict]:
    """[{"name", "size_mb", "ms"}]: one sentence on one thread, BERT-base shape, from the bench records."""
    sizes = tables.bert_base_sizes_mb()
    points = []
    for bits, name in tables.BENCH_OF_BITS.items():
        rec = tables._load(name)
        row = tables.bench_row(rec)
        if not points:  # the PyTorch baselines, from the first record
            points += [{"name": "FP32 PyTorch", "size_mb": round(sizes["fp32"], 2), "ms": round(row["fp32"]["median_s"] * 1e3, 2)},
                       {"name": "int8 dynamic PyTorch", "size_mb": round(sizes["int8"], 2),
                        "ms": round(row["int8"]["median_s"] * 1e3, 2)}]
        points.append({"name": f"packed {bits}", "size_mb": round(rec["model"]["packed_bytes"] / 2**20, 2),
                       "ms": round(row["engine"]["median_s"] * 1e3, 2)})
    return points


def data() -> dict:
    return {"accuracy_vs_bits": accuracy_vs_bits_data(), "speed_vs_size": speed_vs_size_data()}


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(parents=True, exist_ok=True)
    d = data()
    acc = d["accuracy_vs_bits"]
    fig, axes = plt.subplots(1, len(acc), figsize=(4 * len(acc), 3.4), squeeze=False)
    for ax, (task, entry) in zip(axes[0], acc.items()):
        for method, label in SERIES:
            points = entry["series"].get(method)
            if points:
                ax.plot([BITS_AXIS.index(p[0]) for p in points], [p[1] for p in points], "o-", label=label)
        if entry["teacher"]:
            ax.axhline(entry["teacher"][0], color="grey", ls="--", lw=1)
            ax.plot(BITS_AXIS.index("32-32-32"), entry["teacher"][0], "s", color="grey", label="FP32 teacher")
        ax.set_xticks(range(len(BITS_AXIS)), ["1-1-1", "1-1-2", "1-1-4", "FP32"])
        ax.set_title(f"{tables.TASK_NAMES.get(task, task)} (dev {entry['metric']}, best)")
        ax.set_xlabel("precision (embeddings-weights-activations bits)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("MiniLM-L6 students on GLUE: accuracy against bits", fontsize=10)
    fig.tight_layout()
    fig.savefig(OUT / "accuracy_vs_bits.png", dpi=110, metadata={"Software": None})
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for p in d["speed_vs_size"]:
        ax.scatter(p["size_mb"], p["ms"], s=40)
        ax.annotate(f"{p['name']}\n{p['ms']:.1f} ms, {p['size_mb']:.0f} MB", (p["size_mb"], p["ms"]),
                    textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("model size (MB, log)")
    ax.set_ylabel("CPU ms per sentence (log)")
    ax.set_title("BERT-base, seq 128, 1 thread: time against size", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.margins(0.35)
    fig.tight_layout()
    fig.savefig(OUT / "speed_vs_size.png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    (OUT / "plots.json").write_text(json.dumps(d, indent=1) + "\n")


if __name__ == "__main__":
    main()
