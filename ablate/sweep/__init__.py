"""Sweeps: the grid planned, earlier runs skipped or resumed, failures isolated and summarised.

``state`` reads what runs left on disk and decides what a new launch does with each;
``estimate`` prices a run before it starts; ``plan`` holds the jobs and the text printed before
and after. The Hydra side (a Sweeper and a Ray launcher) lives in ``hydra_plugins/ablate_sweeper``
and only wires these to Hydra. Nothing here imports torch.
"""

from ablate.sweep.plan import unique_dir
from ablate.sweep.state import decide, scan

__all__ = ["decide", "scan", "unique_dir"]
