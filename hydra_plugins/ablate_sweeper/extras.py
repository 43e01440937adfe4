"""The optional packages each launcher needs, checked before anything is launched: without
them ``hydra/launcher=ray_local`` passed its dry run and then failed every job with "No module
named 'ray'", and ``hydra/launcher=slurm`` failed to compose with Hydra's "Could not load
'hydra/launcher/submitit_slurm'". Both now name the pip command that fixes them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

SUBMITIT = ("slurm", ("submitit", "hydra_plugins.hydra_submitit_launcher"))
# launcher (a word of its _target_ or of its config name) -> (extra, modules it imports)
EXTRAS = {"ray": ("ray", ("ray", "hydra_plugins.hydra_ray_launcher")), "submitit": SUBMITIT,
          "slurm": SUBMITIT}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(launcher: str) -> str | None:
    """What to install for ``launcher`` (its ``_target_`` or config name); None if nothing."""
    for word, (extra, modules) in EXTRAS.items():
        absent = [m for m in modules if not _installed(m)] if word in launcher.lower() else []
        if absent:
            return (f"the launcher {launcher} needs {', '.join(absent)}, which is not installed: "
                    f"pip install -e \".[{extra}]\" (or pip install \"ablate[{extra}]\")")
    return None


def launcher_hint(arguments: Sequence[str]) -> str | None:
    """For a command line that chose a launcher (``hydra/launcher=...``): what it lacks."""
    from ablate.config import values_given

    launchers = [str(value) for _, value in values_given(arguments, "hydra/launcher")]
    return missing(launchers[-1]) if launchers else None  # the last one wins, as in Hydra
