"""``hardware=gpu``'s options rehearsed on this CPU: each runs one short quick-preset run for real
(inductor's C++ backend, channels_last kernels, bf16 autocast) and changes nothing that must not
change; what cannot run on a CPU is one line before anything trains."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from helpers import TINY, compose_config, load, result_files, run_cli

from ablate import hardware, identity, records
from ablate.errors import ConfigError

OPTIONS = {"compile": ["compile=true"], "channels_last": ["channels_last=true"],
           "bf16": ["trainer.precision=bf16-mixed", "trainer.accelerator=cpu"]}


def _run(workdir: Path, extra: list[str]) -> dict:
    done = run_cli([*TINY, "model=B", *extra], workdir)  # B: dropout too
    assert done.returncode == 0, done.stderr[-3000:]
    [path] = result_files(workdir)
    return load(path)


def _weights(record: dict) -> dict[str, tuple]:
    checkpoint = torch.load(Path(record["output_dir"]) / "checkpoints" / "last.ckpt",
                            weights_only=True, map_location="cpu")
    return {k: (tuple(v.shape), v.dtype) for k, v in checkpoint["state_dict"].items()}


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> dict:
    return _run(tmp_path_factory.mktemp("plain"), [])


@pytest.mark.slow
@pytest.mark.parametrize("option", list(OPTIONS))
def test_each_gpu_option_runs_on_cpu_and_changes_only_what_it_should(option, plain, tmp_path):
    record = _run(tmp_path, OPTIONS[option])
    assert record["status"] == "finished" and 0 <= record["metrics"]["test_error"] <= 1
    assert record.keys() == plain.keys()  # the same record fields
    # the plain run's cell, plus the option as typed (every override joins the cell); a run of
    # its own (another config_id); the same table protocol, except under bf16, whose precision
    # is a protocol key (it may change the result)
    cell = record["cell"]
    assert {k: v for k, v in cell.items() if k in plain["cell"]} == plain["cell"]
    assert {k for k in cell if k not in plain["cell"]} == {o.split("=")[0] for o in OPTIONS[option]}
    assert record["config_id"] != plain["config_id"]
    same_protocol = identity.protocol_of(record["config"]) == identity.protocol_of(plain["config"])
    assert same_protocol == (option != "bf16")
    # its checkpoint holds the plain network's weights, by name, shape and dtype (fp32 under
    # bf16 autocast; no compiled wrapper's names), so resume and the figures can read it
    assert _weights(record) == _weights(plain)
    if option == "compile":  # and a compiled run resumes from its own checkpoint
        path = Path(record["output_dir"]) / records.RESULT_FILE
        path.write_text(json.dumps({**record, "status": "failed", "interrupted": True,
                                    "error": "Interrupted"}))
        again = run_cli([f"resume_from={record['output_dir']}"], tmp_path)
        assert again.returncode == 0, again.stderr[-3000:]
        [resumed] = [load(p) for p in result_files(tmp_path) if p != path]
        assert resumed["config_id"] == record["config_id"] and resumed["resumed_epoch"] == 1


@pytest.mark.parametrize("extra, message", [
    (["hardware=gpu"], "trainer.accelerator=gpu but this machine has no CUDA GPU"),
    (["trainer.precision=16-mixed"], "trainer.precision=16-mixed needs a CUDA GPU"),
    (["compile=true"], "compile=true on a CPU needs a C++ compiler for inductor"),
])
def test_what_a_cpu_cannot_run_is_refused_naming_the_option(extra, message, monkeypatch,
                                                            tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cfg = compose_config([*TINY, *extra])
    if extra == ["compile=true"]:
        hardware.check(cfg)  # a compiler is on this machine's PATH: runs (tested above)
        monkeypatch.setenv("PATH", str(tmp_path))  # and where there is none
    with pytest.raises(ConfigError, match=re.escape(message)):
        hardware.check(cfg)


@pytest.mark.slow
def test_a_gpu_config_on_a_cpu_machine_is_one_line_before_anything_trains(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = run_cli([*TINY, "hardware=gpu"], tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(
        "ablate: invalid config: trainer.accelerator=gpu but this machine has no CUDA GPU")
    assert "Traceback" not in done.stderr
    assert result_files(tmp_path) == []
