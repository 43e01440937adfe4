"""``python -m ablate.visualize RUN_DIR [RUN_DIR ...] [--out DIR]``: see ablate.visualize.

Exit status 2 for anything the user can fix (a missing or unfinished run, runs of different
datasets, a layer or unit that does not exist); nothing is written in that case.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ablate.visualize import units
from ablate.visualize.loading import VisualizeError
from ablate.visualize.pipeline import DEFAULT_LAYERS, Options, visualize


def main(argv: list[str] | None = None) -> int:
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="python -m ablate.visualize", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Guided backprop, deconvnet and backprop maps, higher-layer units, "
                    "first-layer filters and a deletion test for finished runs.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="output folders of finished runs (result.json + checkpoints/)")
    parser.add_argument("--out", type=Path, default=Path("reports"),
                        help="folder for visualizations.md and figures/")
    parser.add_argument("--images", type=int, default=defaults.images,
                        help="first N test images for the maps and the deletion test")
    parser.add_argument("--rows", type=int, default=defaults.rows,
                        help="how many of them the region figure shows")
    parser.add_argument("--layers", nargs="+", default=list(DEFAULT_LAYERS),
                        help=f"conv layers by name (conv1, conv2, ...) or role "
                             f"({', '.join(units.ROLES)})")
    parser.add_argument("--units", nargs="+", type=int, default=None,
                        help="channel indices to show in every chosen layer (%(default)s: the "
                             "most active ones)")
    parser.add_argument("--unit-count", type=int, default=defaults.unit_count,
                        help="how many most active units without --units")
    parser.add_argument("--top-k", type=int, default=defaults.top_k,
                        help="top test images per unit")
    parser.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=True,
                        help="also log the figures to each run's W&B run, where its record has "
                             "one")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    options = Options(images=args.images, rows=args.rows, layers=tuple(args.layers),
                      units=tuple(args.units) if args.units is not None else None,
                      unit_count=args.unit_count, top_k=args.top_k)
    try:
        visualize(args.run_dirs, args.out, options, wandb=args.wandb)
    except VisualizeError as error:
        print(f"ablate.visualize: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
