"""The HorizontalPodAutoscaler's arithmetic: proposals, tolerance, stabilization, rate, bounds."""

from __future__ import annotations

import pytest

from gossamer.resources.kinds.autoscaling import HPAScalingRules
from gossamer.runtime.scaling import (
    DOWN_DEFAULT,
    UP_DEFAULT,
    Policy,
    Recommender,
    Rules,
    proposal,
    quantity,
    rules_from,
)


def test_a_proposal_is_the_load_over_the_target_per_replica_rounded_up() -> None:
    assert proposal(2, [30.0, 30.0], target=10.0) == 6
    assert proposal(3, [1.0, 1.0, 1.0], target=10.0) == 1
    assert proposal(2, [], target=10.0) == 2  # no reading: nothing changes


def test_within_ten_percent_of_the_target_nothing_changes() -> None:
    assert proposal(2, [10.5, 10.5], target=10.0) == 2
    assert proposal(2, [11.5, 11.5], target=10.0) == 3


def test_scale_up_is_immediate_and_scale_down_waits_for_its_window() -> None:
    rec = Recommender()
    assert rec.decide(0.0, 1, 4, 1, 10) == 4
    # The load drops: the highest proposal of the last 300 s still stands.
    assert rec.decide(15.0, 4, 1, 1, 10) == 4
    assert rec.decide(299.0, 4, 1, 1, 10) == 4
    assert rec.decide(301.0, 4, 1, 1, 10) == 1


def test_the_default_scale_up_is_at_most_double_or_four_more_per_15_s() -> None:
    rec = Recommender()
    assert rec.decide(0.0, 1, 20, 1, 50) == 5  # +4 pods beats +100% from 1
    assert rec.decide(5.0, 5, 20, 1, 50) == 5  # the 15 s period is used up
    assert rec.decide(16.0, 5, 20, 1, 50) == 10  # +100% of 5 beats +4


def test_bounds_and_a_disabled_direction() -> None:
    rec = Recommender(down=Rules(0.0, "Disabled", ()))
    assert rec.decide(0.0, 2, 9, 1, 3) == 3
    assert rec.decide(1.0, 3, 1, 1, 3) == 3  # scale-down disabled
    low = Recommender(down=Rules(0.0, "Max", (Policy("Pods", 1, 60.0),)))
    assert low.decide(0.0, 5, 1, 2, 9) == 4  # one pod per minute
    assert low.decide(30.0, 4, 1, 2, 9) == 4
    assert low.decide(61.0, 4, 1, 2, 9) == 3


def test_rules_from_the_manifest_fill_what_they_do_not_say() -> None:
    given = HPAScalingRules.model_validate({"stabilizationWindowSeconds": 0})
    assert rules_from(given, DOWN_DEFAULT) == Rules(0.0, "Max", DOWN_DEFAULT.policies)
    custom = HPAScalingRules.model_validate(
        {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 30}], "selectPolicy": "Min"}
    )
    assert rules_from(custom, UP_DEFAULT) == Rules(0.0, "Min", (Policy("Pods", 2, 30.0),))
    assert rules_from(None, UP_DEFAULT) is UP_DEFAULT


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", 0.5), ("2", 2.0), ("1.5", 1.5), ("128Mi", 128 * 2**20), ("1G", 1e9), (3, 3.0)],
)
def test_quantities(text: str | int, value: float) -> None:
    assert quantity(text) == pytest.approx(value)
