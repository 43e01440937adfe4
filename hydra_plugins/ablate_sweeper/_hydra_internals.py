"""The only private APIs of Hydra and hydra-ray-launcher that this project uses, in one place.

Why they are needed, and why nothing public serves:

- ``BasicSweeper``: Hydra's grid expansion (``split_arguments``, ``_parse_config``, batching).
  ``hydra.plugins.sweeper.Sweeper`` is only the abstract interface; re-implementing the grid
  grammar (``choice``, ``range``, ``glob``, sweeps in ``hydra.sweeper.params``) would copy it.
- ``BasicLauncher``: Hydra's default launcher (jobs one after another in this process), only to
  recognise it: the sweeper then hands it one job at a time, to report each as it ends.
- ``get_overrides_dirname``: how Hydra writes ``hydra.job.override_dirname`` from a job's
  overrides. The sweeper's fast composition (``_composer.py``) applies value overrides itself
  and must write that field exactly as a full composition would; copying the function would let
  the two drift apart on a Hydra upgrade.
- ``launch_job_on_ray``: hydra-ray-launcher's remote job runner (it sets up Hydra's globals and
  logging in the worker and returns a ``JobReturn``); its public launcher class offers no way
  to give each job its own ``ray.remote`` options, which the GPU packing needs.

The leading underscore keeps Hydra's plugin scan from executing this module again (it re-runs
every other module it finds). Import it only after that scan (``Plugins.instance()``): the scan
re-runs Hydra's core plugin modules too, and a ``BasicSweeper`` taken before it is stale.

All are pinned by ``hydra-core>=1.3.2,<1.4`` and ``hydra-ray-launcher>=1.2.2``; if an upgrade
moves them, this module is the one place to change.
"""

from typing import Any

from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

__all__ = ["BasicLauncher", "BasicSweeper", "get_overrides_dirname", "launch_job_on_ray"]


def launch_job_on_ray(*args: Any, **kwargs: Any) -> Any:
    """hydra-ray-launcher's remote job runner (imported on use: Ray is an optional extra)."""
    from hydra_plugins.hydra_ray_launcher._launcher_util import launch_job_on_ray as launch

    return launch(*args, **kwargs)
