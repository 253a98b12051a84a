"""A Jupyter notebook written next to an analysis: the run through the Python API.

``RUN/analysis/hetsiren_analysis.ipynb`` loads the latent, clusters and PCA of the run (found
as the notebook's parent folder, so it keeps working when the run is moved), plots the
landscape, selects particles by cluster or with a lasso, and exports the selection for
RELION/cryoSPARC. Written as plain nbformat-4 JSON: writing it needs no Jupyter packages.
"""

from __future__ import annotations

import json
from pathlib import Path

from hetsiren.rundir import NOTEBOOK, atomic_write

__all__ = ["write_notebook"]


_CELLS: list[tuple[str, str]] = [
    ("markdown", """# HetSIREN analysis of this run

This notebook sits in the run's analysis folder and works on the run one folder up. It uses
the same functions as the command line (`hetsiren analyze`, `hetsiren export`): run the cells
in order, change the cluster numbers or draw a lasso, and export the particles you chose."""),
    ("code", """from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.path import Path as Polygon

from hetsiren.rundir import load_latent
from hetsiren.analysis.select import (Region, export_subset, load_labels, load_pca,
                                      select_clusters, select_region)

RUN = Path("..").resolve()          # the training run this analysis belongs to
z = load_latent(RUN)                # (N, zdim), row i = particle i of the run's particle file
labels = load_labels(RUN, z)        # KMeans cluster of every particle (from `hetsiren analyze`)
pca = load_pca(RUN, z)
xy = pca.transform(z)[:, :2]
k = int(labels.max()) + 1
print(f"{len(z)} particles, {z.shape[1]}-D latent, {k} clusters")"""),
    ("markdown", "## The landscape"),
    ("code", """ratio = pca.explained_variance_ratio
fig, ax = plt.subplots(figsize=(6, 5))
points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab20", s=4, alpha=0.6)
for c in range(k):
    centre = np.median(xy[labels == c], axis=0)
    ax.annotate(str(c), centre, weight="bold")
ax.set_xlabel(f"PC1 ({100 * ratio[0]:.0f}%)")
ax.set_ylabel(f"PC2 ({100 * ratio[1]:.0f}%)" if len(ratio) > 1 else "PC2")
populations = np.bincount(labels, minlength=k)
print("particles per cluster:", dict(enumerate(populations.tolist())))"""),
    ("markdown", """## Choose particles

By cluster: list the clusters you want. With a lasso: in a live notebook with an interactive
backend (`%matplotlib widget`), draw around the particles in the figure below; without one
(or when nothing is drawn) the box around cluster 0 stands in for the lasso."""),
    ("code", """chosen_clusters = [0]
by_cluster = select_clusters(labels, chosen_clusters)
print(f"clusters {chosen_clusters}: {len(by_cluster)} particles")

from matplotlib.widgets import LassoSelector

lasso_polygon = None


def _on_lasso(vertices):
    global lasso_polygon
    lasso_polygon = np.asarray(vertices)


fig, ax = plt.subplots(figsize=(6, 5))
ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab20", s=4, alpha=0.6)
ax.set_title("drag to draw a lasso")
lasso = LassoSelector(ax, _on_lasso)"""),
    ("code", """if lasso_polygon is None:   # nothing drawn: the bounding box of cluster 0
    lo, hi = xy[labels == 0].min(0), xy[labels == 0].max(0)
    lasso_polygon = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
region = Region(space="pca", axes=(1, 2), polygon=lasso_polygon)
by_lasso = select_region(region, z, RUN)
print(f"lasso: {len(by_lasso)} particles")"""),
    ("markdown", """## Export

Writes the chosen particles with every column of the input file (`.star` for RELION, `.cs`
for cryoSPARC), as `hetsiren export RUN --indices FILE -o OUT` does."""),
    ("code", """selection = np.intersect1d(by_cluster, by_lasso) if len(by_lasso) else by_cluster
indices_file = Path("notebook_selection.txt")
indices_file.write_text("\\n".join(map(str, selection.tolist())) + "\\n")
result = export_subset(RUN, "notebook_selection.star", indices=indices_file)
print(f"wrote {len(result.rows)} of {result.n_particles} particles to {result.path}")"""),
]


def _cell(kind: str, source: str, index: int) -> dict:
    cell = {"cell_type": kind, "id": f"cell-{index:02d}", "metadata": {},
            "source": source.splitlines(keepends=True)}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def write_notebook(analysis_dir: str | Path) -> Path:
    """Write ``analysis_dir/hetsiren_analysis.ipynb`` (the run is ``analysis_dir/..``)."""
    notebook = {
        "cells": [_cell(kind, text, i) for i, (kind, text) in enumerate(_CELLS)],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                    "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    text = json.dumps(notebook, indent=1) + "\n"
    path = Path(analysis_dir) / NOTEBOOK
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))
