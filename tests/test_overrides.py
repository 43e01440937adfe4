"""Overrides are read by Hydra's parser: keys without prefixes, values as written."""

import pytest
from hydra.errors import HydraException

from ablate import overrides
from ablate.status import ENDED, Outcome, Status


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("lr=0.1", "lr", "0.1"),
        ("+lr=0.1", "lr", "0.1"),
        ("++trainer.max_epochs=3", "trainer.max_epochs", "3"),
        ("~logger", "logger", None),
        ("hydra/launcher=ray_local", "hydra/launcher", "ray_local"),
        ("x='a=b'", "x", "'a=b'"),
        ("seed=0,1,2", "seed", "0,1,2"),
        ("invariance.shifts=[1,2,8]", "invariance.shifts", "[1,2,8]"),
    ],
)
def test_keys_and_values_as_hydra_reads_them(text, key, value):
    assert overrides.key(text) == key
    assert overrides.value(text) == value


def test_find_takes_the_last_and_without_drops_by_key():
    assert overrides.find(["lr=0.1", "model=A", "+lr=0.2"], "lr") == "0.2"
    assert overrides.find(["model=A"], "lr") is None
    assert overrides.without(["+resume_from=/x", "lr=1", "~logger"], ["resume_from", "logger"]) == [
        "lr=1"
    ]


def test_an_override_hydra_refuses_is_refused_here_too():
    with pytest.raises(HydraException):
        overrides.key("a=b=c")


def test_statuses_keep_their_words():
    assert [str(s) for s in ENDED] == ["finished", "failed", "diverged"]
    assert Status("interrupted") is Status.INTERRUPTED and Outcome.SKIPPED == "skipped"
