"""A Hydra app that only says where it ran: the GPUs Ray made visible to its job. Launched by
``tests/test_placement.py`` through this project's Ray launcher; it trains nothing, so that
the placement of many jobs can be tested in seconds."""

import json
import os
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hydra_plugins.ablate_sweeper import register_plugins

register_plugins()


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    started = time.time()
    time.sleep(float(cfg.get("hold", 0)))  # keep the slot: every job holds its GPU at once
    (out / "visible.json").write_text(json.dumps({
        "cell": cfg.cell, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "pid": os.getpid(), "started": started, "ended": time.time()}))


if __name__ == "__main__":
    main()
