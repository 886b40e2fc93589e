"""The suite's own sharing between xdist workers (tests/conftest.py): the `timing` tests
must all go to one worker. Nothing else notices if they do not: the run passes, only with
tests that race real processes against a clock competing for the CPU."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TIMING_GROUP, _groups_file


@pytest.mark.timing
def test_a_timing_test_is_in_the_timing_group_of_this_run(request: pytest.FixtureRequest) -> None:
    config = request.config
    if not getattr(config.option, "loadgroup", False):  # xdist sets it on a loadgroup worker
        pytest.skip("not an xdist worker of a `--dist loadgroup` run (the suite's default)")
    path = _groups_file(config)
    assert path.exists(), f"no worker wrote the groups of this run to {path}"
    assert json.loads(path.read_text())[request.node.nodeid] == TIMING_GROUP
