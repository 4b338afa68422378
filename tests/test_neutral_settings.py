"""A result setting added with a neutral default re-keys nothing until it is changed."""

from __future__ import annotations

import pytest

from mediswift.settings import Section, result, schedule


class Before(Section):
    lr: float = result(1e-3, "peak learning rate")
    workers: int = schedule(2, "processes")


class After(Before):
    # Added later: 0.0 is what every unit trained before it did.
    label_smoothing: float = result(0.0, "label smoothing (0: none)", neutral=True)


class AfterNotNeutral(Before):
    label_smoothing: float = result(0.0, "label smoothing (0: none)")


def test_a_neutral_setting_at_its_default_keeps_the_key():
    assert After().result_settings() == Before().result_settings()
    assert After().stage_settings() == Before().stage_settings()


def test_a_neutral_setting_changed_is_keyed():
    assert After(label_smoothing=0.1).result_settings() == {"lr": 1e-3, "label_smoothing": 0.1}


def test_a_setting_not_declared_neutral_re_keys_when_added():
    assert AfterNotNeutral().result_settings() != Before().result_settings()


def test_a_neutral_setting_needs_a_default():
    with pytest.raises(ValueError, match="neutral setting needs the default"):
        result(description="no default", neutral=True)
