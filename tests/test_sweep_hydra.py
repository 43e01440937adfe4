"""Hydra's own plugin test suites, run against this project's sweeper and Ray launcher: what
every Hydra sweeper and launcher must do (batches, job directories, overrides, configs, the
returns) holds for them too."""

from __future__ import annotations

import pytest
from helpers import REPO
from hydra.test_utils.launcher_common_tests import (
    BatchedSweeperTestSuite,
    IntegrationTestSuite,
    LauncherTestSuite,
)

import hydra_plugins.ablate_sweeper  # noqa: F401 - the plugins, as Hydra's scan finds them


@pytest.fixture(autouse=True)
def hydras_own_version_base():
    """Hydra's suites run its test apps without a version_base (1.1's defaults: a job changes
    into its directory); another test file on the same worker may have left 1.3 set."""
    from hydra import version

    version.setbase("1.1")


@pytest.fixture(autouse=True)
def plugins_on_the_path(monkeypatch):
    """Hydra's integration suite runs its own apps as scripts, which never call
    ``ablate.run.main``'s registration: they find the plugins by Hydra's scan of
    ``hydra_plugins`` on ``sys.path``, as under a regular (not editable) install."""
    import os

    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))


@pytest.mark.parametrize("launcher_name, overrides", [
    ("basic", ["hydra/sweeper=ablate", "hydra.sweeper.max_batch_size=2"]),
    ("basic", ["hydra/sweeper=ablate", "hydra.sweeper.max_batch_size=2",
               "hydra.sweeper.resume=false"]),
])
class TestAblateSweeperBatches(BatchedSweeperTestSuite):
    pass


# one batch: with the basic launcher the sweeper otherwise hands over one job at a time
@pytest.mark.parametrize("launcher_name, overrides", [
    ("basic", ["hydra/sweeper=ablate", "hydra.sweeper.max_batch_size=100"]),
])
class TestAblateSweeperWithTheBasicLauncher(LauncherTestSuite):
    pass


@pytest.mark.slow  # a Ray runtime, and a fresh worker process for every job
@pytest.mark.parametrize("launcher_name, overrides", [
    ("ablate_ray", ["hydra/sweeper=basic", "++hydra.launcher.ray.init.num_cpus=2"]),
])
class TestAblateRayLauncher(LauncherTestSuite):
    pass


class _SuiteHelpers:
    """The integration suite's own helpers, for classes that take some of its tests only."""

    get_test_app_working_dir = IntegrationTestSuite.get_test_app_working_dir
    get_test_scratch_dir = IntegrationTestSuite.get_test_scratch_dir
    generate_custom_cmd = IntegrationTestSuite.generate_custom_cmd


# Hydra's integration suite (task names, sweep and job directories, the original working
# directory) with this project's sweeper, which decides every job's overrides; all but
# to_absolute_path_multirun, which compares the app's whole output, where this sweeper prints
# its plan and summary too (the Ray class below runs it, with Hydra's sweeper)
@pytest.mark.usefixtures("hydra_restore_singletons")
@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [
    ({}, ["-m", "hydra/sweeper=ablate", "hydra/hydra_logging=disabled",
          "hydra/job_logging=disabled"]),
])
class TestAblateSweeperIntegration(_SuiteHelpers):
    test_custom_task_name = IntegrationTestSuite.test_custom_task_name
    test_custom_sweeper_run_workdir = IntegrationTestSuite.test_custom_sweeper_run_workdir
    test_get_orig_dir_multirun = IntegrationTestSuite.test_get_orig_dir_multirun


# ... and the Ray launcher on one of its apps: a job composed again in a fresh Ray worker finds
# its directory and the original one (the other cases run the same path; each would start Ray;
# tests/test_ray.py covers the launcher itself)
@pytest.mark.slow
@pytest.mark.usefixtures("hydra_restore_singletons")
@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [
    ({}, ["-m", "hydra/launcher=ablate_ray", "++hydra.launcher.ray.init.num_cpus=2",
          "hydra/hydra_logging=disabled", "hydra/job_logging=disabled"]),
])
class TestAblateRayLauncherIntegration(_SuiteHelpers):
    test_get_orig_dir_multirun = IntegrationTestSuite.test_get_orig_dir_multirun
