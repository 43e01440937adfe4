"""``python -m ablate.report [PATH ...]``: regenerate ``reports/tables.md`` and its figures.

PATHs are sweep folders (or single ``result.json`` files, or W&B run folders); the default is
everything under ``sweeps/``. ``--wandb-project entity/project`` adds the runs of an online W&B
project (``--wandb-filters`` takes W&B's MongoDB-style JSON filters).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ablate import atomic
from ablate.report import figures, load, tables
from ablate.report import issues as issues_lib

log = logging.getLogger("ablate.report")


def _scrub(text: str) -> str:
    """The W&B API key must never land in a written file, whatever a run's error text held."""
    key = os.environ.get("WANDB_API_KEY", "").strip()
    return text.replace(key, "<WANDB_API_KEY>") if len(key) >= 8 else text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ablate.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", metavar="PATH", default=["sweeps"],
                        help="sweep folders, result.json files or W&B run folders "
                             "(default: sweeps)")
    parser.add_argument("--out", default="reports/tables.md", type=Path,
                        help="markdown file to write (default: reports/tables.md)")
    parser.add_argument("--figures", type=Path, default=None,
                        help="folder for the plots (default: figures/ beside --out)")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    parser.add_argument("--wandb-offline", choices=("unmatched", "all", "none"),
                        default="unmatched",
                        help="W&B run folders found under PATH: read those no record describes "
                             "(default), all of them (checked against their records), or none")
    parser.add_argument("--wandb-project", metavar="ENTITY/PROJECT",
                        help="also load the runs of this online W&B project (needs a login)")
    parser.add_argument("--wandb-filters", metavar="JSON", type=json.loads, default=None,
                        help='W&B API filters, e.g. \'{"group": "table3/2026-12-01_10-00-00"}\'')
    parser.add_argument("--csv", type=Path, default=None,
                        help="also write the runs DataFrame (without histories) as CSV")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        print(f"ablate.report: no such file or folder: {', '.join(missing)} (run a sweep first, "
              "e.g. python -m ablate.run -m downsample=pool,stride,conv model=A,B,C "
              "experiment=quick)", file=sys.stderr)
        return 2
    frame, issues = load.load_runs(args.paths, wandb_offline=args.wandb_offline,
                                   wandb_project=args.wandb_project,
                                   wandb_filters=args.wandb_filters)
    if frame.empty:
        log.warning("no runs found under %s", ", ".join(args.paths))
    for kind, message in issues.sorted_messages():
        if kind not in issues_lib.INFO:
            log.warning("%s: %s", kind, message)
    links = {}
    if not args.no_figures:
        directory = args.figures or args.out.parent / "figures"
        links = figures.write_figures(frame, directory, link_from=args.out.parent)
    sources = [*args.paths, *([f"--wandb-project {args.wandb_project}"]
                              if args.wandb_project else [])]
    text = _scrub(tables.render(frame, issues, sources=sources, figure_links=links))
    atomic.write_atomic(args.out, text)
    if args.csv:
        table = frame.drop(columns=["history", "correct"])  # per-epoch and per-example arrays
        atomic.write_atomic(args.csv, _scrub(table.to_csv(index=False)))
    log.info("%d runs -> %s", len(frame), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
