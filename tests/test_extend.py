"""README "Your own ablation", performed: its files are written into a temporary folder outside
the package (taken from the README itself, so the text and the test cannot drift apart), and
each extension (a downsampling mode, a model, a dataset) is trained from there."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from helpers import REPO, TINY, load, result_files, run_cli

pytestmark = pytest.mark.slow

SECTION = "## Your own ablation"


def _section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(SECTION)
    return text[start:text.index("\n## ", start + 1)]


@pytest.fixture(scope="module")
def my_ablation(tmp_path_factory) -> Path:
    """The README's files, written where the README says, outside this package."""
    root = tmp_path_factory.mktemp("outside")
    blocks = re.findall(r"```\w+ file=(\S+)\n(.*?)```", _section(), flags=re.S)
    assert len(blocks) == 5
    for name, body in blocks:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    assert not (REPO / "conf" / "model" / "D.yaml").exists()  # really outside the package
    return root / "my_ablation"


def _readme_command() -> list[str]:
    [command] = re.findall(r"```bash\n(python -m ablate\.run .*?)\n```", _section())
    return shlex.split(command)[3:]  # after "python -m ablate.run"


@pytest.mark.parametrize(("extension", "cell", "name"), [
    (["downsample=pool2x2"], {"downsample": "pool2x2", "model": "C"}, "Pool2x2-CNN-C"),
    (["model=D"], {"model": "D", "downsample": "conv"}, "All-CNN-D"),
    (["dataset=stripes"], {"dataset": "stripes"}, "All-CNN-C"),
])
def test_each_extension_trains_from_a_folder_outside_the_package(my_ablation, extension, cell,
                                                                 name):
    searchpath = f"hydra.searchpath=[file://{my_ablation / 'conf'}]"
    done = run_cli([searchpath, *TINY, *extension], my_ablation)
    assert done.returncode == 0, done.stderr[-3000:]
    [record] = map(load, result_files(my_ablation))
    for path in result_files(my_ablation):  # the next case starts from an empty folder
        path.unlink()
    assert record["status"] == "finished" and record["name"] == name
    assert {key: record["cell"][key] for key in cell} == cell
    if "dataset=stripes" in extension:
        assert record["metrics"]["test_error"] <= 1.0 and record["images"]["test"] == 120


def test_the_readme_command_plans_every_job_of_its_grid(my_ablation):
    arguments = [a.replace("$PWD", str(my_ablation)) for a in _readme_command()]
    done = run_cli([*arguments, "hydra.sweeper.dry_run=true"], my_ablation)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "model (2: C, D) x downsample (2: pool, pool2x2) = 4 cells" in done.stdout
    assert "invalid" not in done.stdout
