"""``make test`` runs the tests that start Flower processes one after another on one worker
(tests/conftest.py); the scheduler finds them from the files' text, which must agree with the
``flower`` marks pytest itself sees."""

from __future__ import annotations

import pytest

from tests.conftest import flower_tests, is_flower


def test_the_scheduler_finds_exactly_the_flower_tests(request: pytest.FixtureRequest) -> None:
    flower = flower_tests()
    seen = 0
    for item in request.session.items:
        by_text = is_flower(item.nodeid, flower)
        assert by_text == (item.get_closest_marker("flower") is not None), item.nodeid
        seen += by_text
    assert seen >= 1 or not any(i.get_closest_marker("flower") for i in request.session.items)
