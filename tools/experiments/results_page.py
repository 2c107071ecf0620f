#!/usr/bin/python3
"""results_page.py OUT: OUT/index.md, every claim's results.md under OUT/NAME in one page
(the figures linked from their folders)."""
import os
import sys

out = sys.argv[1]
parts = ["# twotower: the paper's claims, reproduced", ""]
for name in ["lrn", "pool", "towers", "relu_tanh", "dropout", "pca", "views"]:
    p = os.path.join(out, name, "results.md")
    if not os.path.isfile(p):
        parts += [f"## {name}", "", "not run yet", ""]
        continue
    with open(p) as f:
        text = f.read().replace("](figure.png)", f"]({name}/figure.png)")
    parts += ["#" + text if text.startswith("# ") else text, ""]
with open(os.path.join(out, "index.md"), "w") as f:
    f.write("\n".join(parts))
print(f"results_page: wrote {os.path.join(out, 'index.md')}")
