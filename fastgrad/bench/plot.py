"""``--plot DIR``: PNG charts (needs matplotlib, an optional dependency)."""
import os

from .peers import PEERS


def have_matplotlib():
    """True when matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except Exception:
        return False
    return True


def write_plots(doc, directory):
    """Write scaling (log-log) and kernel bandwidth charts; return the paths."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    results = [r for r in doc["results"] if r["status"] == "ok"]
    paths = []

    for workload in ("deep", "wide"):
        series = {}
        for r in results:
            if r["suite"] == "scaling" and r["workload"] == workload:
                series.setdefault(r["peer"], []).append(
                    (r["params"]["n"], r["stats"]["phases"]["bwd"]["median"]))
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(7, 5))
        for peer in [p for p in PEERS if p in series]:
            pts = series[peer]
            pts.sort()
            ax.loglog([p[0] for p in pts], [p[1] for p in pts], marker="o", label=peer)
        ax.set_xlabel("N")
        ax.set_ylabel("backward time (s)")
        ax.set_title(f"scaling: {workload} backward")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        path = os.path.join(directory, f"scaling_{workload}.png")
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)

    kern = [r for r in results if r["suite"] == "kernels"]
    if kern:
        labels = list(dict.fromkeys(r["label"].replace("kernels ", "") for r in kern))
        seen = {r["peer"] for r in kern}
        peers = [p for p in PEERS if p in seen]  # same order as the tables
        width = 0.8 / max(len(peers), 1)
        fig, ax = plt.subplots(figsize=(max(8, len(labels) * 0.9), 5))
        for i, peer in enumerate(peers):
            by_label = {r["label"].replace("kernels ", ""): r for r in kern
                        if r["peer"] == peer}
            ys = [by_label[lb]["gbps"].get("total", by_label[lb]["gbps"]["fwd"])
                  if lb in by_label else 0 for lb in labels]
            ax.bar([j + i * width for j in range(len(labels))], ys, width, label=peer)
        for c in doc.get("stream_ceiling") or []:
            ax.axhline(c["gbps"], linestyle="--", color="gray")
            ax.text(len(labels) - 0.5, c["gbps"], f" {c['method']}", va="bottom",
                    ha="right", fontsize=8)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))])
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("GB/s (fused-minimum bytes)")
        ax.set_title("kernels: bandwidth vs measured ceiling")
        ax.legend(fontsize=8)
        path = os.path.join(directory, "kernels_gbps.png")
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths
