"""Rebuild a finished run from its record and checkpoint: the only place that knows the layout.

Everything the visualisations need (the trained network, the test images as the network sees
them, the same images as a person sees them, the input value that stands for "no information")
comes out of :func:`load_run`. Should the config layout of a record move, this is the one
function to adapt.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ablate import records
from ablate.status import Status


class VisualizeError(ValueError):
    """A run, layer or unit that cannot be visualised; the message names the valid choices."""


@dataclass(frozen=True)
class LoadedRun:
    """One finished run, ready to be probed: network in eval mode, test split on the CPU.

    ``test_x`` is what the network was evaluated on (preprocessed); ``images`` are the same
    test images in [0, 1] before preprocessing, for display. ``input_mean`` is the training
    split's per-channel mean in the network's input space: the value a deleted pixel takes.
    """

    run_dir: Path
    record: records.Record
    name: str
    network: torch.nn.Sequential
    test_x: torch.Tensor
    test_y: torch.Tensor
    images: torch.Tensor
    input_mean: torch.Tensor

    @property
    def dataset(self) -> str:
        return str(self.record.cell.get("dataset", "?"))


def read_finished_record(run_dir: str | os.PathLike[str]) -> records.Record:
    """The run's record, refusing anything that is not a finished run with a checkpoint."""
    run_dir = Path(run_dir)
    record_path = run_dir / records.RESULT_FILE
    if not record_path.is_file():
        raise VisualizeError(
            f"{run_dir} has no {records.RESULT_FILE}; pass the output folder of a finished run "
            f"(the folder holding {records.RESULT_FILE} and {records.CHECKPOINT_FILE})")
    try:
        record = records.load(record_path)
    except records.RecordError as error:
        raise VisualizeError(f"{error}; rerun that cell or leave it out") from error
    if record.status != Status.FINISHED:
        reason = str(record.error or "no error recorded").splitlines()[0][:200]
        raise VisualizeError(
            f"{run_dir}: run status is '{record.status}' ({reason}); only finished runs "
            "have weights worth visualising: leave it out or rerun it")
    if not (run_dir / records.CHECKPOINT_FILE).is_file():
        raise VisualizeError(
            f"{run_dir} has no {records.CHECKPOINT_FILE}; the run kept no weights (was the "
            "checkpoint deleted?): rerun it or pass another run folder")
    return record


def load_run(run_dir: str | os.PathLike[str]) -> LoadedRun:
    """Network with trained weights and the run's own test data, rebuilt from its record."""
    import hydra.utils

    run_dir = Path(run_dir)
    record = read_finished_record(run_dir)
    config = record.config
    missing = [key for key in ("network", "datamodule") if key not in config]
    if missing:
        raise VisualizeError(
            f"{run_dir}/{records.RESULT_FILE}: config lacks {', '.join(missing)}; the record was "
            "not written by ablate.run")
    # init is dropped: the weights come from the checkpoint, and a random init would only
    # spend the global RNG.
    network = hydra.utils.instantiate(config["network"], name=record.name or "network",
                                      init=None)
    checkpoint = run_dir / records.CHECKPOINT_FILE
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same advice
        raise VisualizeError(f"{checkpoint}: not a readable checkpoint ({error}); rerun the run, "
                             "or pass another run folder") from error
    state = saved.get("state_dict", {}) if isinstance(saved, dict) else {}
    weights = {key[len("network."):]: value for key, value in state.items()
               if key.startswith("network.")}  # Lightning's keys: network.<i>.weight
    if not weights:
        raise VisualizeError(f"{checkpoint}: holds no 'network.*' weights (keys: "
                             f"{sorted(state)[:5]}); it is not a checkpoint of ablate.run")
    try:
        network.load_state_dict(weights)
    except RuntimeError as error:
        raise VisualizeError(
            f"{run_dir}: checkpoint does not fit the network its record describes ({error}); "
            "was the checkpoint copied from another run?"
        ) from error
    network.eval().requires_grad_(False)
    datamodule = hydra.utils.instantiate(config["datamodule"])
    datamodule.setup()
    test_x, test_y = (t.cpu() for t in datamodule.tensors["test"])
    train_x = datamodule.tensors["train"][0].cpu()
    images = datamodule.source().resized(datamodule.image_size).test_x
    if images.shape[-2:] != test_x.shape[-2:]:  # an eval-time canvas (large augmentation):
        low = test_x.amin(dim=(1, 2, 3), keepdim=True)  # show the input, min-max scaled per image
        high = test_x.amax(dim=(1, 2, 3), keepdim=True)
        images = (test_x - low) / (high - low).clamp_min(1e-12)
    return LoadedRun(run_dir=run_dir, record=record, name=str(record.name or run_dir.name),
                     network=network, test_x=test_x, test_y=test_y, images=images.cpu(),
                     input_mean=train_x.mean(dim=(0, 2, 3)))
