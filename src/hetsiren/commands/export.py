"""Export a subset of a run's particles to RELION (.star) or cryoSPARC (.cs).

Every column of the input file and its optics block are kept; only the chosen rows are
written. Choose particles by cluster (numbered from 0 as `analyze` writes them), by a file of
0-based indices, or by a latent-space region (JSON box/polygon); criteria given together are
intersected. Image stack paths are written relative to the output file's folder (as
hetsiren and cryoDRGN resolve them); RELION resolves relative paths from
the folder it runs in, so pass --absolute-paths when RELION will read the file from elsewhere.

examples:
  hetsiren export run --clusters 3,7 -o state37.star
  hetsiren export run --clusters 0 -o state0.cs --add-latent
  hetsiren export run --indices picked.txt -o picked.star
  hetsiren export run --region region.json -o region.star

region files (JSON; PCs are 1-based and as `analyze` computed them, null leaves a bound open;
the report's lasso downloads one):
  {"space": "pca", "pcs": [1, 2], "polygon": [[x1, y1], [x2, y2], [x3, y3]]}
  {"space": "pca", "pcs": [1], "min": [0.5], "max": [null]}
  {"space": "umap", "polygon": [[x1, y1], ...]}        (after `hetsiren analyze --umap`)
  {"space": "latent", "min": [a1, ..., a_zdim], "max": [b1, ..., b_zdim]}
"""

from __future__ import annotations

import argparse

from hetsiren.errors import UserInputError


def _cluster_list(text: str) -> list[int]:
    try:
        return [int(c) for c in text.replace(" ", "").split(",") if c]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected cluster numbers separated by commas, e.g. 3,7; got {text!r}") from None


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="training run directory")
    p.add_argument("-o", "--output", required=True, help="output .star or .cs")
    p.add_argument("--clusters", type=_cluster_list, help="cluster numbers, e.g. 3,7")
    p.add_argument("--indices", help="file of 0-based particle indices (.npy or text)")
    p.add_argument("--region", help="JSON latent-space box or polygon (format below)")
    p.add_argument("--k", type=int, help="clusters to use when the run has no stored labels")
    p.add_argument("--add-latent", action="store_true", help="write z as extra columns")
    p.add_argument("--particles", help="the run's particle file, if it moved")
    p.add_argument("--datadir", help="folder of the image stacks")
    p.add_argument("--absolute-paths", action="store_true",
                   help="write absolute image stack paths (default: relative to the output)")


def main(args: argparse.Namespace) -> int:
    from hetsiren.analysis.select import export_subset

    if args.clusters is not None and not args.clusters:
        raise UserInputError("--clusters needs at least one cluster number")
    result = export_subset(args.run, args.output, clusters=args.clusters, indices=args.indices,
                           region=args.region, add_latent=args.add_latent,
                           particles=args.particles, datadir=args.datadir, k=args.k,
                           absolute_stack_paths=args.absolute_paths)
    print(f"wrote {len(result.rows)} of {result.n_particles} particles to {result.path}")
    return 0
