"""The Lightning side of packed seeds: K ``Classifier``s of one cell trained as one module.

Each seed keeps its own module, data module and generator; this module trains their networks
packed (``ablate.pack``) on a batch of every seed's own data (its order, its augmentation) per
step, and logs each seed's metrics under its own name (``train_loss/seed1``), which
:func:`seed_history` splits back into the rows a plain run's history holds. A seed whose loss
stops being finite is noted as diverged and trains on harmlessly (no weight joins it to another
seed); training stops once every seed has diverged.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.plugins import CheckpointIO
from torch import nn

from ablate import pack
from ablate.data.module import TensorDataModule
from ablate.module import Classifier, configure_network


class PackedBatches:
    """Every seed's next training batch, stacked: ``([K, B, C, H, W], [K, B])``."""

    def __init__(self, loaders: Sequence[Any]) -> None:
        self.loaders = list(loaders)

    def __len__(self) -> int:
        return min(len(loader) for loader in self.loaders)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batches in zip(*self.loaders, strict=False):
            yield (torch.stack([images for images, _ in batches]),
                   torch.stack([labels for _, labels in batches]))


class PackedDataModule(pl.LightningDataModule):
    """The seeds' own data modules behind one: training batches from each, validation batches
    from the first (the validation split depends on ``split_seed``, the same for every seed)."""

    def __init__(self, members: Sequence[TensorDataModule]) -> None:
        super().__init__()
        self.members = list(members)

    def setup(self, stage: str | None = None) -> None:
        for member in self.members:
            member.trainer = self.trainer  # its device, and the epoch its batch order is for
            member.setup(stage)

    def train_dataloader(self) -> PackedBatches:
        return PackedBatches([member.train_dataloader() for member in self.members])

    def val_dataloader(self) -> Any:
        return self.members[0].val_dataloader()


class PackedClassifier(pl.LightningModule):
    """The seeds' ``Classifier``s trained as one; their own networks get the weights back at
    the end (:meth:`unpack`). ``seeds`` name the metrics; ``rng_states``: each seed's random
    states (``{"cpu": ..., "cuda": ...}``) as its own run's would be when training starts."""

    def __init__(self, members: Sequence[Classifier], seeds: Sequence[int],
                 rng_states: Sequence[dict[str, torch.Tensor | None]]) -> None:
        super().__init__()
        self.members, self.seeds = list(members), list(seeds)
        self.rng_states = list(rng_states)
        placeholders = [torch.Generator() for _ in self.members]  # set in on_fit_start
        self.network = pack.pack([member.network for member in self.members], placeholders)
        self.channels_last = self.members[0].channels_last
        self.network.channels_last = self.channels_last  # its stacked input, as Classifier's
        self.compile_network = self.members[0].compile_network
        self._compiled: nn.Module | None = None
        k = len(self.members)
        self.register_buffer("_loss_sum", torch.zeros(k), persistent=False)
        self.register_buffer("_correct", torch.zeros(k), persistent=False)
        self._seen = self._steps = 0
        # seed -> (epoch, what its own run would have raised in it)
        self.diverged: dict[int, tuple[int, str]] = {}

    def configure_model(self) -> None:
        configure_network(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self._compiled or self.network)(x)

    def on_fit_start(self) -> None:
        """Dropout masks are drawn on the device the activations are on, each seed's from the
        state its own run's generator for that device has (the CPU's, or CUDA's)."""
        kind = "cuda" if self.device.type == "cuda" else "cpu"
        generators = []
        for state in self.rng_states:
            if state.get(kind) is None:
                raise RuntimeError(f"no {kind} random state for a packed seed's dropout")
            generator = torch.Generator(device=self.device)
            generator.set_state(state[kind])
            generators.append(generator)
        for module in self.network.body:
            if isinstance(module, pack.SeedDropout):
                module.generators = generators

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        scores = self(x)
        losses = pack.seed_losses(scores, y)
        self._loss_sum += losses.detach()
        self._correct += (scores.detach().argmax(-1) == y).sum(dim=1)
        self._seen += y.shape[1]
        self._steps += 1
        return losses.sum()

    def on_train_epoch_end(self) -> None:
        if self._seen == 0:
            return
        losses = (self._loss_sum / self._steps).tolist()
        errors = (1.0 - self._correct / self._seen).tolist()
        for seed, loss, error in zip(self.seeds, losses, errors, strict=True):
            if seed in self.diverged:
                continue
            if not torch.isfinite(torch.tensor(loss)):
                self.diverged[seed] = (self.current_epoch, f"training loss became {loss} in "
                                       f"epoch {self.current_epoch}")
                continue
            self.log(f"train_loss/seed{seed}", loss)
            self.log(f"train_error/seed{seed}", error)
        if len(self.diverged) == len(self.seeds):
            self.trainer.should_stop = True
        self._loss_sum.zero_()
        self._correct.zero_()
        self._seen = self._steps = 0

    def on_validation_epoch_start(self) -> None:
        k = len(self.seeds)
        self._val = [torch.zeros(k, device=self.device), torch.zeros(k, device=self.device), 0]

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        k = len(self.seeds)
        scores = self(x.unsqueeze(0).expand(k, *x.shape))
        losses = torch.stack([F.cross_entropy(s, y) for s in scores])
        self._val[0] += losses * len(y)
        self._val[1] += (scores.argmax(-1) == y).sum(dim=1)
        self._val[2] += len(y)

    def on_validation_epoch_end(self) -> None:
        loss_sum, correct, seen = self._val
        if not seen:
            return
        for k, seed in enumerate(self.seeds):
            if seed not in self.diverged:
                self.log(f"val_loss/seed{seed}", loss_sum[k] / seen)
                self.log(f"val_error/seed{seed}", 1.0 - correct[k] / seen)

    def configure_optimizers(self):
        # The seeds' optimisers are one: SGD acts on each weight alone, so one optimiser over
        # the packed weights is K optimisers over the seeds' weights.
        return self.members[0].optimization(self.network.parameters())

    def unpack(self) -> None:
        """Each seed's trained weights into its own module."""
        self.network.unpack([member.network for member in self.members])

    def seed_checkpoint(self, checkpoint: dict[str, Any], k: int) -> dict[str, Any]:
        """Seed ``k``'s part of a packed checkpoint, as its own run's checkpoint would hold it:
        its weights and momentum, its history, its dropout generator as the random state; the
        loop and schedule state, shared, as they are."""
        shared = ("state_dict", "optimizer_states", "ablate_history", "ablate_rng")
        mine = {key: copy.deepcopy(value) for key, value in checkpoint.items()
                if key not in shared}
        layout = self.network.seed_rows()
        sizes = [rows for _, rows in layout]
        mine["state_dict"] = {
            f"network.{name}": checkpoint["state_dict"][f"network.body.{name}"][
                k * rows:(k + 1) * rows].clone() for name, rows in layout}
        mine["optimizer_states"] = [
            {"param_groups": copy.deepcopy(optimizer["param_groups"]),
             "state": {i: {key: _part(value, sizes[i], k) for key, value in entry.items()}
                       for i, entry in optimizer["state"].items()}}
            for optimizer in checkpoint.get("optimizer_states", [])]
        mine["ablate_history"] = seed_history(checkpoint.get("ablate_history", []),
                                              self.seeds[k], self.diverged.get(self.seeds[k]))
        generator = next((m.generators[k] for m in self.network.body
                          if isinstance(m, pack.SeedDropout)), None)
        if generator is not None:  # where this seed's dropout draws stand, for a lone resume
            own = generator.get_state()
            if generator.device.type == "cuda":  # every device's state, as RandomState keeps
                states = torch.cuda.get_rng_state_all()
                states[generator.device.index or 0] = own
                mine["ablate_rng"] = {"cpu": torch.get_rng_state(), "cuda": states}
            else:
                mine["ablate_rng"] = {"cpu": own}
        return mine


def _part(value: Any, size: int, k: int) -> Any:
    """Seed ``k``'s rows of an optimiser's per-weight state (its momentum); scalars as they are."""
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        return value[k * size:(k + 1) * size].clone()
    return copy.deepcopy(value)


class SeedCheckpoints(CheckpointIO):
    """Writes every packed checkpoint as one plain checkpoint per seed, each into its seed's own
    folder under the same name (``checkpoints/last.ckpt``): a packed seed resumes alone, as
    its own run would. ``identities``: each seed's ``ConfigStamp`` identity."""

    def __init__(self, inner: CheckpointIO, module: PackedClassifier, folders: Sequence[Path],
                 identities: Sequence[dict[str, Any]]) -> None:
        self.inner, self.module = inner, module
        # resolved, as ModelCheckpoint resolves its folder (a sweep under a symlink)
        self.folders = [Path(folder).resolve() for folder in folders]
        self.identities = list(identities)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        written = Path(path).resolve()
        first = self.folders[0]
        for k, folder in enumerate(self.folders):
            mine = self.module.seed_checkpoint(checkpoint, k)
            mine["ablate_identity"] = self.identities[k]
            mine["callbacks"] = _moved(mine.get("callbacks", {}), str(first), str(folder))
            self.inner.save_checkpoint(mine, folder / written.relative_to(first),
                                       storage_options)

    def load_checkpoint(self, path: Any, map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        return self.inner.load_checkpoint(path, map_location=map_location,
                                          weights_only=weights_only)

    def remove_checkpoint(self, path: Any) -> None:
        for folder in self.folders:
            self.inner.remove_checkpoint(folder / Path(path).resolve().relative_to(self.folders[0]))


def _moved(value: Any, old: str, new: str) -> Any:
    """``value`` with every path under the first seed's folder moved under ``new``."""
    if isinstance(value, str):
        return new + value[len(old):] if value.startswith(old) else value
    if isinstance(value, dict):
        return {key: _moved(item, old, new) for key, item in value.items()}
    return value


def seed_history(rows: Sequence[dict[str, Any]], seed: int,
                 diverged: tuple[int, str] | None = None) -> list[dict[str, Any]]:
    """A seed's own history (as its plain run's ``EpochHistory`` holds it) from the packed one;
    a diverged seed's ends before the epoch it diverged in, as its run's would."""
    suffix = f"/seed{seed}"
    history = []
    for row in rows:
        if diverged is not None and row["epoch"] >= diverged[0]:
            break
        own = {key.removesuffix(suffix): value for key, value in row.items()
               if key.endswith(suffix)}
        history.append({**{k: v for k, v in row.items() if "/seed" not in k},
                        **dict(sorted(own.items()))})
    return history
