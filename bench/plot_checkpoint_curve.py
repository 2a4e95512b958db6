#!/usr/bin/env python3
"""Plot one-step PSNR against total training steps from bench/checkpoint_psnr.sh CSVs.

Usage: plot_checkpoint_curve.py OUT.png LABEL=CSV[+OFFSET] [LABEL=CSV[+OFFSET] ...] [LABEL@DB ...]
OFFSET is added to each row's steps (e.g. +1500 for a fine-tuning run that started from a
1500-step checkpoint). LABEL@DB draws a horizontal reference line at DB (e.g. a classical
method's PSNR on the same data). Needs matplotlib.
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for spec in argv[2:]:
        if "=" not in spec and "@" in spec:
            label, db = spec.rsplit("@", 1)
            ax.axhline(float(db), color="grey", ls=":", lw=1.2)
            ax.annotate(f"{label} {float(db):.2f} dB", (0.01, float(db)), xycoords=("axes fraction", "data"),
                        xytext=(0, 3), textcoords="offset points", fontsize=8, color="dimgrey")
            continue
        label, rest = spec.split("=", 1)
        path, _, offset = rest.partition("+")
        offset = int(offset or 0)
        with open(path, newline="") as f:
            rows = sorted(csv.DictReader(f), key=lambda r: int(r["steps"]))
        steps = [int(r["steps"]) + offset for r in rows]
        line = ax.plot(steps, [float(r["psnr"]) for r in rows], "o-", ms=3, label=f"{label}, one-step")[0]
        ax.plot(steps, [float(r["psnr_dc"]) for r in rows], "s--", ms=3, color=line.get_color(),
                label=f"{label}, one-step + data consistency")
    ax.set_xlabel("training steps (batch 8)")
    ax.set_ylabel("PSNR dB, 24 validation slices")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(argv[1])


if __name__ == "__main__":
    main(sys.argv)
