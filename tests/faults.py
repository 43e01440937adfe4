"""Faults injected through the config, for the sweep tests (on PYTHONPATH beside helpers.py).

``datamodule._target_=faults.FaultyDataModule`` swaps in a data module that fails on purpose
for some seeds while ``fault_file`` exists: delete the file and the same config runs cleanly,
which is how the tests show a failed cell being rerun on relaunch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from ablate.data.module import TensorDataModule

# What a seed's run suffers: ``s<seed>: raise|diverge|poison|exit|hold`` in ``faults``.
MODES = ("raise", "diverge", "poison", "exit", "hold")


class FaultyDataModule(TensorDataModule):
    def __init__(self, *args, fault_file: str, faults: Mapping[str, str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fault_file = fault_file
        self.faults = dict(faults)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        mode = self.faults.get(f"s{self.seed}") if Path(self.fault_file).exists() else None
        if mode == "raise":
            raise RuntimeError(f"injected fault for seed {self.seed}")
        if mode == "diverge":  # the training loss becomes NaN: the run is recorded as diverged
            module = self.trainer.lightning_module
            step = module.training_step
            module.training_step = lambda *args, **kwargs: step(*args, **kwargs) * float("nan")
        if mode == "poison":  # NaN images: its loss is NaN from the first step, packed or not
            x, y = self.tensors["train"]
            self.tensors["train"] = (x * float("nan"), y)
        if mode == "exit":  # the process dies with no record, as under the OOM killer
            os._exit(13)
        if mode == "hold":  # after its first epoch (and checkpoint) the run waits while the
            module = self.trainer.lightning_module  # file exists: a test's signal always finds
            step, flag = module.training_step, Path(self.fault_file)  # it training

            def held(*args, **kwargs):
                while module.current_epoch >= 1 and flag.exists():
                    time.sleep(0.02)
                return step(*args, **kwargs)

            module.training_step = held
