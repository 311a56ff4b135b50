"""The asset solution's risk model: online statistics, bands, training, and the committed weights."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

MODULE_FILE = Path(__file__).resolve().parents[3] / "examples/assets/assets/risk_model.py"


def _load() -> ModuleType:
    # The examples are not an installed package; the model module imports only the stdlib.
    spec = importlib.util.spec_from_file_location("examples_assets_risk_model", MODULE_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


rm = _load()
STEPS = 240


def _canonical(failing: dict[str, float] | None = None) -> Any:
    """An asset at the healthy baselines; `failing` gives its degradation (onset at step 80)."""
    means = {s: b.mean for s, b in rm.BASELINES.items()}
    noise = {s: b.std for s, b in rm.BASELINES.items()}
    if failing is None:
        return rm.AssetProfile(means, noise, None, 0.0, 0.0, 0.0)
    return rm.AssetProfile(
        means,
        noise,
        80,
        failing.get("temperature", 0.0),
        failing.get("vibration", 0.0),
        failing.get("pressure", 0.0),
    )


def _bands(model: Any, profile: Any, seed: int) -> list[str]:
    rng = random.Random(seed)
    band = None
    seen = []
    for _step, states in rm.simulate(profile, rng, STEPS):
        band = rm.band_for(model.score(states), band)
        seen.append(band)
    return seen


def test_the_committed_weights_load_and_record_how_well_they_did() -> None:
    model = rm.RiskModel.load()
    assert len(model.weights) == len(rm.FEATURE_NAMES) == 9
    training = json.loads(rm.MODEL_FILE.read_text())["training"]
    assert training["accuracy"] >= 0.9 and training["auc"] >= 0.95, training
    assert training["heldOutAccuracy"] >= 0.9 and training["heldOutAuc"] >= 0.95, training


def test_a_model_file_for_other_features_is_refused(tmp_path: Path) -> None:
    data = json.loads(rm.MODEL_FILE.read_text())
    data["features"] = data["features"][:-1]
    stale = tmp_path / "stale.weights"
    stale.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="features"):
        rm.RiskModel.load(stale)


@pytest.mark.parametrize("seed", range(10))
def test_a_healthy_history_stays_low(seed: int) -> None:
    assert set(_bands(rm.RiskModel.load(), _canonical(), seed)) == {"low"}


@pytest.mark.parametrize(
    "failing",
    [
        {"temperature": 18.0},
        {"vibration": 2.5},
        {"pressure": 5.0},
        {"temperature": 14.0, "vibration": 2.0, "pressure": 4.0},
    ],
    ids=["temperature-rising", "vibration-growing", "pressure-erratic", "all-three"],
)
def test_a_drifting_history_reaches_high_before_it_fails(failing: dict[str, float]) -> None:
    bands = _bands(rm.RiskModel.load(), _canonical(failing), seed=3)
    assert bands[79] == "low"  # before the onset
    assert bands[-1] == "high"
    assert "medium" in bands[: bands.index("high")]


def test_bands_change_upwards_at_the_thresholds_and_downwards_below_them() -> None:
    assert rm.band_for(0.29) == "low"
    assert rm.band_for(0.3) == "medium"
    assert rm.band_for(0.7) == "high"
    assert rm.band_for(0.9, "low") == "high"
    assert rm.band_for(0.66, "high") == "high"
    assert rm.band_for(0.64, "high") == "medium"
    assert rm.band_for(0.26, "medium") == "medium"
    assert rm.band_for(0.24, "medium") == "low"
    assert rm.band_for(0.1, "high") == "low"


def test_the_weighted_mean_and_variance_follow_their_definition() -> None:
    values = [10.0, 12.0, 11.0, 15.0, 9.0, 10.5]
    state = rm.SensorState.first("temperature", values[0])
    for value in values[1:]:
        state.update(value)
    # The same statistics from explicit weights: the first value (and the prior variance)
    # keeps (1 - alpha)^n, each later one alpha (1 - alpha)^(n - i).
    a, n = rm.ALPHA, len(values) - 1
    weights = [(1 - a) ** n] + [a * (1 - a) ** (n - i) for i in range(1, n + 1)]
    mean = sum(w * v for w, v in zip(weights, values, strict=True))
    assert state.mean == pytest.approx(mean)
    assert state.readings == 6 and state.last == 10.5
    assert state.variance > 0
    steady = rm.SensorState.first("pressure", 5.0)
    for _ in range(200):
        steady.update(5.0)
    assert steady.variance < 1e-9  # a sensor stuck on one value


def test_features_are_zero_for_missing_sensors_and_clipped() -> None:
    assert rm.features({}) == [0.0] * 9
    states = {"temperature": rm.SensorState.first("temperature", 1000.0)}
    values = rm.features(states)
    assert values[0] == rm.FEATURE_LIMIT
    assert values[3:] == [0.0] * 6
    pressure = rm.features({"pressure": rm.SensorState.first("pressure", 4.7)})
    assert pressure[6] == pytest.approx(2.0)  # drifting either way counts


def test_gradient_descent_separates_separable_samples_and_auc_ranks() -> None:
    rng = random.Random(1)
    samples = [
        rm.Sample(i, tuple(rng.gauss(3.0 if i % 2 else -3.0, 1.0) for _ in range(2)), i % 2)
        for i in range(200)
    ]
    model = rm.fit(samples, epochs=200, rate=0.5)
    assert rm.accuracy(model, samples) > 0.98
    assert rm.auc(model, samples) > 0.99
    flipped = rm.RiskModel(tuple(-w for w in model.weights), -model.bias)
    assert rm.auc(flipped, samples) < 0.01
    ties = rm.RiskModel((0.0, 0.0), 0.0)
    assert rm.auc(ties, samples) == pytest.approx(0.5)
