"""The typed run record: what today's runs wrote still loads; what does not validate is refused
with the file and the field named, never read with a silent default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ablate import records
from ablate.errors import RecordError
from ablate.status import Status

FIXTURE = Path(__file__).parent / "fixtures" / "record_v2.json"


def test_a_record_written_by_main_at_1b5613b_loads_and_round_trips():
    record = records.load(FIXTURE)
    assert record.status is Status.FINISHED and record.finished
    assert record.schema == 2 and record.name == "All-CNN-C" and record.params == 86266
    assert record.cell["model"] == "C"
    assert record.metrics["test_error"] == pytest.approx(0.8914, abs=1e-4)
    assert record.history[0]["epoch"] == 0
    assert record.images == {"test": 359, "train": 1294, "val": 144}
    on_disk = json.loads(FIXTURE.read_text())
    assert {k: v for k, v in record.to_json().items() if k in on_disk} == on_disk
    assert records.Record.from_json(record.to_json()) == record


def test_a_minimal_record_of_schema_1_loads_with_absent_fields_empty():
    record = records.Record.from_json({"status": "failed", "cell": {"model": "A"}})
    assert record.status is Status.FAILED and record.metrics == {} and record.params is None


@pytest.mark.parametrize(("change", "named"), [
    ({"params": "many"}, "'params'"),
    ({"metrics": {"test_error": "0.001"}}, "test_error"),
    ({"metrics": {"test_error": -5}}, "test_error"),
    ({"metrics": {"test_error": 42}}, "test_error"),
    ({"metrics": {"test_error": True}}, "test_error"),
    ({"cell": {"model": "C", "lr": "abc"}}, "lr"),
    ({"status": "running"}, "'status'"),
    ({"colour": "blue"}, "'colour' is unknown"),
    ({"epochs": -1}, "'epochs'"),
])
def test_a_malformed_field_is_refused_naming_the_file_and_the_field(tmp_path, change, named):
    path = tmp_path / "result.json"
    path.write_text(json.dumps({**json.loads(FIXTURE.read_text()), **change}))
    with pytest.raises(RecordError) as raised:
        records.load(path)
    assert str(path) in str(raised.value) and named in str(raised.value)


@pytest.mark.parametrize("content", ["", "{trunc", "[]", '{"status": "finished"}'])
def test_a_damaged_file_is_refused(tmp_path, content):
    path = tmp_path / "result.json"
    path.write_text(content)
    with pytest.raises(RecordError, match=str(path)):
        records.load(path)


def test_only_known_fields_are_set_and_only_ended_states_written(tmp_path):
    record = records.Record(cell={}, output_dir=str(tmp_path))
    with pytest.raises(TypeError, match="no field 'colour'"):
        record.note(colour="blue")
    with pytest.raises(ValueError, match="running"):
        record.end(Status.RUNNING)
    path = record.end(Status.DIVERGED, error="loss is nan")
    assert records.load(path).status is Status.DIVERGED


def test_the_fixtures_config_id_and_cell_id_are_what_main_at_1b5613b_computed():
    """Relaunching an older grid finds its finished runs: the identity of a run did not move
    when records.py was split."""
    from helpers import compose_config

    from ablate import identity

    on_disk = json.loads(FIXTURE.read_text())
    # the quick preset has since started the classifier's bias at 1 (issue 23): a new network,
    # so a new id; without that one key, the config and its id are what they were
    overrides = [*on_disk["overrides"], "~network.classifier_bias"]
    assert identity.config_id(compose_config(overrides)) == on_disk["config_id"]
    assert identity.cell_id(on_disk["cell"]) == on_disk["cell_id"]
