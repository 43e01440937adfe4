"""What the trained networks look at: the paper's guided backpropagation and its relatives.

``python -m ablate.visualize RUN_DIR [RUN_DIR ...] --out reports`` (or :func:`visualize`)
writes ``reports/visualizations.md`` with image-region maps (backprop, deconvnet, guided
backprop), reconstructions of higher-layer units, first-layer filters and a deletion test.
This side reads records and checkpoints and builds networks from their config; it never
imports the training side (module, runner, sweeps).
"""

from ablate.visualize.loading import LoadedRun, VisualizeError, load_run
from ablate.visualize.pipeline import Options, visualize

__all__ = ["LoadedRun", "Options", "VisualizeError", "load_run", "visualize"]
