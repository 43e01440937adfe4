"""What the README promises about installing: the console script, its shell completion, and a
launcher whose package is missing failing at plan time with the pip command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, cli_env

BLOCK_RAY = '''
import importlib.abc, sys

class _NoRay(importlib.abc.MetaPathFinder):
    """This interpreter has no Ray: as on a machine installed without the [ray] extra."""
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith(("ray.", "hydra_plugins.hydra_ray_launcher")):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, _NoRay())
'''


def _console_script(bin_dir: Path) -> Path:
    """The ``ablate`` command as pip writes it from ``[project.scripts]``."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    entry = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["ablate"]
    module, function = entry.split(":")
    script = bin_dir / "ablate"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {function}\n"
                      f"sys.exit({function}())\n")
    script.chmod(0o755)
    return script


@pytest.mark.slow
def test_the_console_script_completes_config_groups_in_bash(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    _console_script(tmp_path)
    env = cli_env({"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"})
    # what the README says to put in ~/.bashrc, then what bash does on <TAB> after "downs"
    script = ('eval "$(ablate --shell-completion install=bash)"\n'
              'COMP_LINE="ablate downs"; COMP_POINT=${#COMP_LINE}; COMP_WORDS=(ablate downs); '
              'COMP_CWORD=1\n'
              'hydra_bash_completion; echo "${COMPREPLY[@]}"\n')
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert "downsample=" in done.stdout, done.stdout + done.stderr


@pytest.mark.slow
def test_a_launcher_without_its_package_fails_at_plan_time_with_the_pip_command(tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(BLOCK_RAY)
    (tmp_path / "work").mkdir()
    env = {"PYTHONPATH": os.pathsep.join([str(shim), str(REPO)])}
    done = subprocess.run(
        [sys.executable, "-m", "ablate.run", "-m", "+sweep=quick", "hydra/launcher=ray_local",
         "hydra.sweeper.dry_run=true"],
        cwd=tmp_path / "work", env={**cli_env(), **env}, capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert 'pip install -e ".[ray]"' in done.stderr
    assert not list((tmp_path / "work").glob("sweeps/**/result.json"))


def test_the_ray_launcher_is_fine_where_ray_is_installed():
    from hydra_plugins.ablate_sweeper.extras import missing

    pytest.importorskip("ray")
    assert missing("hydra_plugins.ablate_sweeper.ray_launcher.AblateRayLauncher") is None

