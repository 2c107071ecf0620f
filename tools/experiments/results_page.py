#!/usr/bin/python3
"""results_page.py OUT [--docs FILE]: OUT/index.md, every claim's results.md under OUT/NAME
in one page (the figures linked from their folders). With --docs FILE (docs/EXPERIMENTS.md)
the same page is written there, after the text of FILE up to its line "<!-- results -->"
(kept as it is), with each figure copied beside it as experiments/NAME.png and each claim's
wall time."""
import json
import os
import shutil
import sys

NAMES = ["lrn", "pool", "towers", "relu_tanh", "dropout", "pca", "views"]
MARK = "<!-- results -->"


def done_wall(marker):
    """The wall seconds of the sitting that finished a run, from its .done marker."""
    try:
        with open(marker) as f:
            return float(json.load(f)["wall_seconds_last_sitting"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def page(out, fig_of):
    parts = []
    for name in NAMES:
        p = os.path.join(out, name, "results.md")
        if not os.path.isfile(p):
            parts += [f"## {name}", "", "not run yet", ""]
            continue
        with open(p) as f:
            text = f.read().replace("](figure.png)", f"]({fig_of(name)})")
        rj = os.path.join(out, name, "results.json")
        if os.path.isfile(rj):
            with open(rj) as f:
                r = json.load(f)
            runs = ", ".join(f"{x['run']} {x['train_seconds']:.0f} s" for x in r["runs"])
            if r.get("trained_this_sitting") == []:
                # a sitting that only summarised finished runs: the sittings that finished
                # them, from their .done markers
                walls = [done_wall(os.path.join(out, name, x["run"] + ".done"))
                         for x in r["runs"]]
                took = (f"; the sittings that finished them took "
                        f"{sum(walls) / 60:.1f} min of wall time in all"
                        if all(w is not None for w in walls) else "")
                text = text.rstrip("\n") + ("\n\nThe last sitting only summarised runs "
                                            f"finished earlier{took} (training time per "
                                            f"run: {runs}).\n")
            else:
                text = text.rstrip("\n") + (f"\n\nWall time of the last sitting: "
                                            f"{r['wall_seconds_this_sitting'] / 60:.1f} min "
                                            f"(training time per run: {runs}).\n")
        parts += ["#" + text if text.startswith("# ") else text, ""]
    return parts


def main():
    args = sys.argv[1:]
    docs = None
    if "--docs" in args:
        i = args.index("--docs")
        docs = args[i + 1]
        del args[i:i + 2]
    out = args[0]
    parts = ["# twotower: the paper's claims, reproduced", ""]
    parts += page(out, lambda n: f"{n}/figure.png")
    with open(os.path.join(out, "index.md"), "w") as f:
        f.write("\n".join(parts))
    print(f"results_page: wrote {os.path.join(out, 'index.md')}")
    if docs:
        head = open(docs).read().split(MARK)[0] if os.path.isfile(docs) else ""
        figs = os.path.join(os.path.dirname(docs), "experiments")
        os.makedirs(figs, exist_ok=True)
        for n in NAMES:
            src = os.path.join(out, n, "figure.png")
            if os.path.isfile(src):
                shutil.copyfile(src, os.path.join(figs, n + ".png"))
        with open(docs, "w") as f:
            f.write(head + MARK + "\n\n" + "\n".join(page(out, lambda n: f"experiments/{n}.png")))
        print(f"results_page: wrote {docs} and its figures in {figs}")


if __name__ == "__main__":
    main()
