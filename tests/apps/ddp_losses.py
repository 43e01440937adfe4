"""Trains this project's quick-preset module and data module for a few steps, in one process or
data-parallel over several (Lightning's DDP on gloo, its own launcher), and writes the loss of
every step, averaged over the processes, as JSON. ``tests/test_ddp.py`` compares the two.

    python tests/apps/ddp_losses.py OUT PROCESSES STEPS [override ...]

Lightning's launcher starts the other processes by running this command again; the extra
arguments it may add are ignored. Dropout is off: each process draws its own masks for its own
rows, so with dropout the two differ by construction, not by arithmetic.
"""

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from ablate import config
from hydra_plugins.ablate_sweeper import register_plugins


class StepLosses(pl.Callback):
    """Each step's loss (the processes' mean) and labels (every process's rows, in rank order)."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.labels: list[list[int]] = []
        self.rows: list[int] = []  # this process's rows per step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = trainer.strategy.reduce(outputs["loss"].detach(), reduce_op="mean")
        self.losses.append(float(loss))
        self.labels.append(trainer.strategy.all_gather(batch[1]).flatten().tolist())
        self.rows.append(len(batch[1]))


def main() -> None:
    out, processes, steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    overrides = [a for a in sys.argv[4:] if not a.startswith("hydra.")]
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    config.register()
    register_plugins()
    with initialize_config_module(config.CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config.CONFIG_NAME, overrides=["experiment=quick", "logger=none",
                                                     *overrides])
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module, datamodule = instantiate(cfg.module), instantiate(cfg.datamodule)
    for layer in module.network.modules():
        if isinstance(layer, torch.nn.Dropout):
            layer.p = 0.0
    initial = {k: v.clone() for k, v in module.network.state_dict().items()}
    losses = StepLosses()
    trainer = pl.Trainer(accelerator="cpu", devices=processes,
                         strategy="ddp" if processes > 1 else "auto", max_steps=steps,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, callbacks=[losses])
    trainer.fit(module, datamodule=datamodule)
    if trainer.is_global_zero:
        weights = torch.cat([v.flatten() for v in initial.values()])
        out.write_text(json.dumps({"losses": losses.losses, "world": trainer.world_size,
                                   "labels": losses.labels, "rows": losses.rows,
                                   "initial_sum": float(weights.double().sum()),
                                   "initial_first": weights[:8].tolist()}))


if __name__ == "__main__":
    main()
