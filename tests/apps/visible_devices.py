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
    (out / "started").touch()
    # keep the slot until `together` jobs have started (at most 120 s): they then held their
    # GPUs at the same time, however slowly the machine started them
    together, met = int(cfg.get("together", 0)), True
    while together and len(list(out.parent.glob("*/started"))) < together:
        if time.time() - started > 120:
            met = False
            break
        time.sleep(0.1)
    (out / "visible.json").write_text(json.dumps({
        "cell": cfg.cell, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "pid": os.getpid(), "started": started, "ended": time.time(), "together": met}))


if __name__ == "__main__":
    main()
