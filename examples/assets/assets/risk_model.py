"""The risk model: online sensor statistics, their features, and a logistic regression over them.

What the risk service keeps per asset and sensor is an exponentially weighted mean and variance
(`SensorState`, alpha `ALPHA` = 0.1: a reading's weight halves after about 7 newer ones, and the
mean remembers roughly the last 2 / alpha - 1 = 19 readings) plus a slower mean (alpha
`SLOW_ALPHA` = 0.02, about 100 readings) to see a trend. From those, `features` gives three
numbers per sensor, measured against the sensor's healthy baseline (`BASELINES`):

- `z`: how many healthy standard deviations the mean is from the healthy mean (for pressure its
  absolute value: a drift either way is bad);
- `log_var`: the natural log of the variance over the healthy variance (0 when as noisy as a
  healthy sensor; vibration growing and pressure becoming erratic raise it);
- `trend`: the fast mean minus the slow mean, in healthy standard deviations (a rising
  temperature shows here before the mean is far off).

A sensor with no readings yet contributes zeros (healthy). The score is the logistic function of
a weighted sum of these nine features: the estimated probability that the asset fails within
the horizon it was trained for.

The weights come from `python -m assets.risk_model train` (run in examples/assets), which
simulates assets (`simulate`): healthy ones, each with its own operating point and noise, and
occasional spikes; and assets drifting to failure from a random onset, by one or more of
temperature rising, vibration growing (mean and spread), and pressure becoming erratic. The
state is updated reading by reading exactly as the service does; every 10 steps after a warm-up
of 20 the features are a sample, labelled 1 when the asset fails within the next `HORIZON` = 60
steps. The regression is fitted by full-batch gradient descent on the mean log loss with a small
L2 penalty, in pure Python, so the score reads as a probability. Assets are split 70/30 into
training and held-out sets. With seed 7 (600 assets, 13,200 samples, 1,500 epochs, about 30 s)
`risk_model.weights` records (accuracy at a score of 0.5):

    training:  accuracy 0.940, AUC 0.980
    held out:  accuracy 0.937, AUC 0.972

On 200 further simulated assets of each kind, followed reading by reading through the bands:
1 healthy asset left `low` at some point; 198 failing ones reached `medium` and 168 `high`
before failing, `high` a median of 59 steps ahead of the failure.

Bands (`band_for`): low below 0.3, medium from 0.3, high from 0.7. To move down a band the score
must fall `HYSTERESIS` (0.05) below the threshold it crossed, so that a score hovering at a
threshold does not flap between bands (each change is an event).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ALPHA = 0.1
"""Weight of a new reading in the fast mean and variance."""
SLOW_ALPHA = 0.02
"""Weight of a new reading in the slow mean, against which the trend is measured."""
FEATURE_LIMIT = 8.0
"""Features are clipped to +-8, so one absurd reading cannot saturate the score for long."""

MEDIUM = 0.3
HIGH = 0.7
HYSTERESIS = 0.05
BANDS = ("low", "medium", "high")

HORIZON = 60
"""Training label: the asset fails within this many steps (one reading per sensor a step)."""

MODEL_FILE = Path(__file__).with_name("risk_model.weights")
"""The trained model, JSON. Not named .json: `gossamer up` and `validate` read every .json file
under the manifests' folder as a manifest."""


@dataclass(frozen=True, slots=True)
class Baseline:
    """A healthy sensor: its unit, mean and standard deviation."""

    unit: str
    mean: float
    std: float


BASELINES: Mapping[str, Baseline] = {
    "temperature": Baseline("°C", 60.0, 2.0),
    "vibration": Baseline("mm/s", 2.0, 0.4),
    "pressure": Baseline("bar", 5.0, 0.15),
}
SENSORS = tuple(BASELINES)
FEATURE_NAMES = tuple(f"{s}.{f}" for s in SENSORS for f in ("z", "log_var", "trend"))


@dataclass(slots=True)
class SensorState:
    """One sensor of one asset: exponentially weighted mean and variance, a slow mean, the last
    reading and how many there were."""

    mean: float
    variance: float
    slow_mean: float
    last: float
    readings: int

    @classmethod
    def first(cls, sensor: str, value: float) -> SensorState:
        """The state after one reading: its value as mean, the healthy variance as a prior (one
        value says nothing of the spread)."""
        return cls(value, BASELINES[sensor].std ** 2, value, value, 1)

    def update(self, value: float) -> None:
        """Fold in one reading (West's incremental form of the weighted variance)."""
        diff = value - self.mean
        step = ALPHA * diff
        self.mean += step
        self.variance = (1.0 - ALPHA) * (self.variance + diff * step)
        self.slow_mean += SLOW_ALPHA * (value - self.slow_mean)
        self.last = value
        self.readings += 1


def observe(states: dict[str, SensorState], sensor: str, value: float) -> None:
    """Add a reading to an asset's states (`states` maps sensor to state)."""
    state = states.get(sensor)
    if state is None:
        states[sensor] = SensorState.first(sensor, value)
    else:
        state.update(value)


def features(states: Mapping[str, SensorState]) -> list[float]:
    """The model's inputs for one asset, in the order of FEATURE_NAMES."""
    values: list[float] = []
    for sensor in SENSORS:
        state = states.get(sensor)
        if state is None:
            values += (0.0, 0.0, 0.0)
            continue
        base = BASELINES[sensor]
        z = (state.mean - base.mean) / base.std
        if sensor == "pressure":
            z = abs(z)
        log_var = math.log(max(state.variance, 1e-12) / base.std**2)
        trend = (state.mean - state.slow_mean) / base.std
        values += (_clip(z), _clip(log_var), _clip(trend))
    return values


def _clip(value: float) -> float:
    return max(-FEATURE_LIMIT, min(FEATURE_LIMIT, value))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@dataclass(frozen=True, slots=True)
class RiskModel:
    """Logistic regression weights over FEATURE_NAMES."""

    weights: tuple[float, ...]
    bias: float

    def score(self, states: Mapping[str, SensorState]) -> float:
        """The estimated probability of failure within the horizon, 0 to 1."""
        return self.score_features(features(states))

    def score_features(self, values: Sequence[float]) -> float:
        """The score of a feature vector."""
        return _sigmoid(self.bias + sum(w * x for w, x in zip(self.weights, values, strict=True)))

    @classmethod
    def load(cls, path: Path = MODEL_FILE) -> RiskModel:
        """The trained model; ValueError when the file was trained on other features or
        baselines than this code computes (retrain it)."""
        data = json.loads(path.read_text(encoding="utf-8"))
        if tuple(data["features"]) != FEATURE_NAMES:
            raise ValueError(f"{path}: trained on features {data['features']}, not these")
        baselines = {name: Baseline(**value) for name, value in data["baselines"].items()}
        if baselines != dict(BASELINES):
            raise ValueError(f"{path}: trained on other sensor baselines; retrain it")
        if data["alpha"] != ALPHA or data["slowAlpha"] != SLOW_ALPHA:
            raise ValueError(f"{path}: trained with other smoothing factors; retrain it")
        weights = tuple(float(w) for w in data["weights"])
        if len(weights) != len(FEATURE_NAMES):
            raise ValueError(f"{path}: {len(weights)} weights for {len(FEATURE_NAMES)} features")
        return cls(weights, float(data["bias"]))


def band_for(score: float, previous: str | None = None) -> str:
    """low / medium / high; moving down needs the score HYSTERESIS below the threshold."""
    up = "high" if score >= HIGH else "medium" if score >= MEDIUM else "low"
    if previous is None or BANDS.index(up) >= BANDS.index(previous):
        return up
    down = score + HYSTERESIS
    return "high" if down >= HIGH else "medium" if down >= MEDIUM else "low"


# Simulation and training.


@dataclass(frozen=True, slots=True)
class AssetProfile:
    """A simulated asset: its healthy operating point, and how (if at all) it degrades."""

    means: Mapping[str, float]
    noise: Mapping[str, float]
    onset: int | None
    """The step degradation starts at (None: healthy); the asset fails at the last step."""
    temperature_rise: float
    vibration_growth: float
    pressure_spread: float

    @classmethod
    def draw(cls, rng: random.Random, steps: int, failing: bool) -> AssetProfile:
        """A healthy asset, or one that fails at the end of `steps` by one or more modes."""
        means = {s: b.mean + rng.gauss(0.0, 0.5 * b.std) for s, b in BASELINES.items()}
        noise = {s: b.std * rng.uniform(0.8, 1.2) for s, b in BASELINES.items()}
        if not failing:
            return cls(means, noise, None, 0.0, 0.0, 0.0)
        modes = [m for m in ("temperature", "vibration", "pressure") if rng.random() < 0.5]
        modes = modes or [rng.choice(SENSORS)]
        return cls(
            means,
            noise,
            rng.randint(int(steps * 0.2), int(steps * 0.6)),
            rng.uniform(12.0, 24.0) if "temperature" in modes else 0.0,
            rng.uniform(1.5, 3.0) if "vibration" in modes else 0.0,
            rng.uniform(3.0, 6.0) if "pressure" in modes else 0.0,
        )

    def reading(self, rng: random.Random, sensor: str, step: int, steps: int) -> float:
        """The value `sensor` reads at `step`."""
        severity = 0.0
        if self.onset is not None and step > self.onset:
            severity = ((step - self.onset) / (steps - self.onset)) ** 1.5
        mean, noise = self.means[sensor], self.noise[sensor]
        if sensor == "temperature":
            mean += severity * self.temperature_rise
        elif sensor == "vibration":
            mean *= 1.0 + severity * self.vibration_growth
            noise *= 1.0 + severity * 2.0 * (self.vibration_growth > 0)
        else:
            noise *= 1.0 + severity * self.pressure_spread
        value = rng.gauss(mean, noise)
        if rng.random() < 0.01:  # a glitch: healthy assets have them too
            value += rng.choice((-4.0, 4.0)) * BASELINES[sensor].std
        return value


def simulate(
    profile: AssetProfile, rng: random.Random, steps: int
) -> Iterator[tuple[int, dict[str, SensorState]]]:
    """Feed an asset's readings through the online state; yields (step, states) after each
    step (the same dict, updated in place)."""
    states: dict[str, SensorState] = {}
    for step in range(steps):
        for sensor in SENSORS:
            observe(states, sensor, profile.reading(rng, sensor, step, steps))
        yield step, states


@dataclass(frozen=True, slots=True)
class Sample:
    """One training example: an asset's features at a step, and whether it fails soon."""

    asset: int
    features: tuple[float, ...]
    label: int


def generate(seed: int, assets: int, steps: int = 240, every: int = 10) -> list[Sample]:
    """Half healthy and half failing simulated assets, sampled every `every` steps."""
    rng = random.Random(seed)
    samples: list[Sample] = []
    for asset in range(assets):
        profile = AssetProfile.draw(rng, steps, failing=asset % 2 == 1)
        for step, states in simulate(profile, rng, steps):
            if step < 20 or step % every:
                continue
            label = int(profile.onset is not None and step >= steps - HORIZON)
            samples.append(Sample(asset, tuple(features(states)), label))
    return samples


def fit(
    samples: Sequence[Sample], *, epochs: int = 1500, rate: float = 0.5, l2: float = 1e-4
) -> RiskModel:
    """Logistic regression by full-batch gradient descent (mean log loss plus an L2 penalty)."""
    width = len(samples[0].features)
    weights = [0.0] * width
    bias = 0.0
    for _ in range(epochs):
        grad = [0.0] * width
        grad_bias = 0.0
        for sample in samples:
            z = bias + sum(w * x for w, x in zip(weights, sample.features, strict=True))
            error = _sigmoid(z) - sample.label
            grad_bias += error
            for i, x in enumerate(sample.features):
                grad[i] += error * x
        for i in range(width):
            weights[i] -= rate * (grad[i] / len(samples) + l2 * weights[i])
        bias -= rate * grad_bias / len(samples)
    return RiskModel(tuple(weights), bias)


def accuracy(model: RiskModel, samples: Sequence[Sample]) -> float:
    """The share of samples on the right side of a score of 0.5."""
    right = sum((model.score_features(s.features) >= 0.5) == bool(s.label) for s in samples)
    return right / len(samples)


def auc(model: RiskModel, samples: Sequence[Sample]) -> float:
    """The chance that a random positive scores above a random negative (ties count half)."""
    ranked = sorted((model.score_features(s.features), s.label) for s in samples)
    positives = sum(label for _, label in ranked)
    negatives = len(ranked) - positives
    rank_sum = 0.0
    i = 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        average_rank = (i + 1 + j) / 2  # ranks i+1 .. j share their mean
        rank_sum += average_rank * sum(label for _, label in ranked[i:j])
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def train(seed: int = 7, assets: int = 600, epochs: int = 1500) -> dict[str, object]:
    """Simulate, split by asset 70/30, fit, measure: the contents of the model file."""
    samples = generate(seed, assets)
    held_out = {a for a in range(assets) if random.Random(seed + a).random() < 0.3}
    training = [s for s in samples if s.asset not in held_out]
    testing = [s for s in samples if s.asset in held_out]
    model = fit(training, epochs=epochs)
    return {
        "features": list(FEATURE_NAMES),
        "weights": [round(w, 6) for w in model.weights],
        "bias": round(model.bias, 6),
        "alpha": ALPHA,
        "slowAlpha": SLOW_ALPHA,
        "baselines": {
            name: {"unit": b.unit, "mean": b.mean, "std": b.std} for name, b in BASELINES.items()
        },
        "bands": {"medium": MEDIUM, "high": HIGH, "hysteresis": HYSTERESIS},
        "training": {
            "seed": seed,
            "assets": assets,
            "samples": len(samples),
            "horizon": HORIZON,
            "epochs": epochs,
            "accuracy": round(accuracy(model, training), 3),
            "auc": round(auc(model, training), 3),
            "heldOutAccuracy": round(accuracy(model, testing), 3),
            "heldOutAuc": round(auc(model, testing), 3),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m assets.risk_model")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("train", help="simulate histories, fit, write the model")
    command.add_argument("--seed", type=int, default=7)
    command.add_argument("--assets", type=int, default=600)
    command.add_argument("--epochs", type=int, default=1500)
    command.add_argument("--output", type=Path, default=MODEL_FILE)
    args = parser.parse_args(argv)
    result = train(args.seed, args.assets, args.epochs)
    args.output.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", "utf-8")
    print(f"{args.output}: {json.dumps(result['training'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
