"""Sweeps: the grid planned, earlier runs skipped or resumed, failures isolated and summarised.

``state`` reads what runs left on disk and decides what a new launch does with each; ``index``
finds them all without reading every record on every launch;
``estimate`` prices a run before it starts; ``plan`` holds the jobs and the text printed before
and after. The Hydra side (a Sweeper and a Ray launcher) lives in ``hydra_plugins/ablate_sweeper``
and only wires these to Hydra. Nothing here imports torch.
"""

from ablate.sweep.index import past_runs, scan
from ablate.sweep.plan import unique_dir
from ablate.sweep.state import decide

__all__ = ["decide", "past_runs", "scan", "unique_dir"]
