"""The learned twin: a probabilistic model of a profile's score over its parameter grid, learned from canaries.

Every analysed canary step measures two configurations at the same time: the canary's and the stable one's
(the stable variant is free data, and its spread gives the noise). Each becomes an observation: the grid
point, the mean score, the variance of that mean, and each metric's mean. Observations of one grid point
are pooled (precision-weighted), so the stable configuration measured at every step is known precisely.

The model is a Gaussian process (scikit-learn's `GaussianProcessRegressor`) over the grid coordinates (index /
(size − 1) per parameter, so log2 parameters are on their log scale), fitted to what the prior mean does not
explain. With a prior (below) the kernel is Matérn 5/2 with one length scale per parameter: the prior carries the
shape and the kernel its misfit. Without one the kernel is the sum of each parameter's main effect (`AdditiveMatern`:
a Matérn 5/2 of one parameter at a time, weighed by how close the other parameters are) and a smaller Matérn 5/2 of
all of them (the interactions): a parameter's effect measured in one context is then expected at nearby settings of
the others, less surely further away, which is what stops a proposer from trying a value that failed next to the
stable configuration again (on the built-in grids main effects explain 78–94 % of the variance of the log score)
without ruling it out where the others differ (HDE's best window grows with the chunk size). A white-noise term
takes what the per-point variances miss.

- a measured twin (the built-in workload's surface, `spec.twin`): prior(x) = a · twin(x) + b, with a and b fitted
  to the observations by least squares shrunk towards (1, 0) (so a twin of another link speed, or of another
  machine, is rescaled by the data, and ignored, a ≈ 0, when it explains nothing);
- a family of measured twins: the same twin under its workload's other live conditions (`add_condition`; a faster
  link, another request rate), each weighed by the marginal likelihood of the observations, the prediction the
  mixture of the likeliest (`_weigh_family`): a live workload unlike the twinned one is recognised;
- a similar stored model (same parameter names and types: another component's or another cluster's learned
  twin), used the same way through its posterior mean;
- otherwise a constant (the observations' mean).

`predict` gives the mean and the standard deviation of the score at any grid points; `metric` models one
metric (a guard's) the same way, for the pessimistic screening of guards. The state (observations, prior
name) is plain JSON: it is stored with the model (proposers/store.py) and warm-starts the next run; the next cycle
of a continuous run takes it as a prior instead (`forget_measurements`).
Scores are modelled relative to `scale` (the first stable measurement's magnitude), so the kernel's bounds
mean the same for every profile.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, partial

import numpy as np

from ..models.space import TuningSpace

MAX_SURPRISES = 200  # the prediction checks kept (the latest)
MAX_EXPECTED = 20  # predictions waiting for their configuration's first measurement
MIN_VARIANCE = 1e-8  # relative to scale²: a floor for a variance of the mean measured as zero
PRIOR_SCALE_SD = 0.5  # prior sd of the measured twin's scale factor (1: the twin is right)
TWIN_DISCREPANCY = 0.35  # the prior's misfit assumed away from data, as a fraction of the prior's own spread
# A score beyond this is a broken query, not a measurement (its square overflows a float): it is not modelled, or
# one such value as the first measurement set a scale under which every later measurement overflowed (OverflowError
# at each analysed canary step).
MAX_MAGNITUDE = 1e100
LOG_FLOOR = 1e-3  # a prior below a thousandth of the scale is this on a log scale


@dataclass
class Observation:
    index: tuple[int, ...]
    mean: float  # score
    variance: float  # of the mean
    n: int
    metrics: dict[str, float] = field(default_factory=dict)

    def dump(self) -> dict:
        return {"i": list(self.index), "m": self.mean, "v": self.variance, "n": self.n, "k": self.metrics}

    @classmethod
    def load(cls, raw: Mapping) -> Observation:
        return cls(
            tuple(int(i) for i in raw["i"]),
            float(raw["m"]),
            float(raw["v"]),
            int(raw["n"]),
            {str(k): float(v) for k, v in (raw.get("k") or {}).items()},
        )


PriorMean = Callable[[np.ndarray], np.ndarray]  # grid indices (N, d) -> prior score (N,)
LENGTH_SCALE = 0.4  # prior median of every length scale, in grid coordinates (the grid spans 1)
LENGTH_SCALE_SPREAD = 0.6  # sd of log(length scale) in the prior
AMPLITUDE_SPREAD = 1.0  # sd of log(amplitude) around the observed spread
AMPLITUDE_FLOOR = 0.01  # the least relative variance assumed before data (a 10 % spread of the score)
# While there are too few points to fit the kernel (parameters + 2, + FIXED_KERNEL_EXTRA without a prior), and no
# prior: what is not measured may differ from what is by ±30 % (a factor of 1.35 on the log scale). With the spread
# of two or three nearby canaries instead, the twin was sure after two failures that nothing anywhere was better,
# and stopped.
FEW_POINTS_VARIANCE = 0.3**2
METRIC_PRIOR_CV = 0.15  # how far a measured twin's metric may be off where nothing was measured (relative sd)
INTERACTION_SHARE = 0.3  # without a prior: the share of the amplitude the interaction kernel starts with
# Without a prior, how far (in grid coordinates, over two other parameters; √((d − 1)/2) times that over d − 1) a
# parameter's main effect carries to other settings of the others: half of its weight at a distance of 0.52. HDE's
# best window grows with the chunk size and ACP's best quorum depends on the timeout: an effect measured at one
# chunk size or timeout held everywhere kept the twin from the better region. bench/live_tuning.py, no prior, 20
# canaries, with FIXED_KERNEL_EXTRA below, on seeds 100–131 / 200–231 / 300–395: HDE 0.880 / 0.913 / 0.906 →
# 0.935 / 0.927 / 0.920 of the optimum, ACP 0.957 / 0.951 / 0.949 → 0.959 / 0.961 / 0.962, harmful canaries
# within ±0.3. The outcome is sensitive to it (0.4 to 0.7 on the first two sets: HDE 0.872–0.921, ACP 0.930–0.970;
# 0.4 / 0.6 on the third: HDE 0.877 / 0.915, ACP 0.953 / 0.955), so it is a fixed value, not a fitted one.
CONTEXT_LENGTH = 0.5
# Without a prior the kernel stays fixed until this many points more than parameters + 2: fitted on six points,
# the kernel's amplitude fell to the spread of those six, the twin saw ±5 % where nothing was measured and
# stopped after four canaries (ACP, seven of 32 runs at 0.63 of the optimum).
FIXED_KERNEL_EXTRA = 2
FAMILY_NOMINAL_MASS = 0.5  # prior probability that the live workload is the twinned one (the rest: other conditions)
FAMILY_MEMBERS = 4  # the likeliest conditions whose models the prediction mixes
FAMILY_MIN_WEIGHT = 0.02  # a condition less likely than this is left out of the mixture


def _map_optimizer(centre: np.ndarray, spread: np.ndarray):
    """Fit the kernel's hyperparameters by maximum a posteriori, not maximum likelihood.

    With a few dozen points the likelihood is flat enough that it picks a length scale of 4 (the parameter
    "does not matter") or of 0.05 (every point its own island), and the twin becomes confident where it knows
    nothing. Log-normal priors on the length scales (around 0.4 of the grid) and on the amplitude (around the
    observed spread) keep the posterior honest; the white-noise term keeps its bounds alone. `centre` and `spread`
    are the log-normal priors of the first hyperparameters in scikit-learn's order (theta).
    """
    from scipy.optimize import minimize

    def optimizer(objective, theta, bounds):
        def penalised(t):
            value, gradient = objective(t, eval_gradient=True)
            k = len(centre)
            z = (t[:k] - centre) / spread
            penalty = 0.5 * float(np.sum(z**2))
            grad = np.array(gradient, dtype=float)
            grad[:k] += z / spread
            return value + penalty, grad

        result = minimize(penalised, theta, jac=True, method="L-BFGS-B", bounds=bounds)
        return result.x, float(result.fun)

    return optimizer


def _amplitude_prior(amplitude: float, dimensions: int) -> tuple[np.ndarray, np.ndarray]:
    """(centre, spread) of log(amplitude) and log(length scales) for one Matérn kernel's theta."""
    centre = np.concatenate([[math.log(amplitude)], np.full(dimensions, math.log(LENGTH_SCALE))])
    spread = np.concatenate([[AMPLITUDE_SPREAD], np.full(dimensions, LENGTH_SCALE_SPREAD)])
    return centre, spread


def _matern52(r: np.ndarray, decay: np.ndarray | None = None) -> np.ndarray:
    """Matérn 5/2 at scaled distances r; `decay` is exp(−√5 r) where the caller needs it too (its gradient)."""
    if decay is None:
        decay = np.exp(-math.sqrt(5.0) * r)
    return (1.0 + math.sqrt(5.0) * r + 5.0 / 3.0 * r**2) * decay


@cache
def _additive_matern():
    """The `AdditiveMatern` kernel class (scikit-learn is imported on first use, like the rest of the model)."""
    from sklearn.gaussian_process.kernels import Hyperparameter, Kernel, NormalizedKernelMixin, StationaryKernelMixin

    class AdditiveMatern(StationaryKernelMixin, NormalizedKernelMixin, Kernel):
        """Main effects that fade with context: k(x, y) = (1/d) Σ_j m(|x_j − y_j| / ℓ_j) · m(‖x₋ⱼ − y₋ⱼ‖ / L).

        m is a Matérn 5/2, ℓ_j one length scale per parameter (fitted), x₋ⱼ the other parameters and L the context
        length (fixed). With L = ∞ it is the plain sum of main effects. scikit-learn has no kernel of one feature."""

        def __init__(self, length_scale=1.0, length_scale_bounds=(1e-5, 1e5), context=math.inf):
            self.length_scale = length_scale
            self.length_scale_bounds = length_scale_bounds
            self.context = context

        @property
        def hyperparameter_length_scale(self):
            return Hyperparameter(
                "length_scale", "numeric", self.length_scale_bounds, len(np.atleast_1d(self.length_scale))
            )

        def __call__(self, X, Y=None, eval_gradient=False):
            X = np.atleast_2d(X)
            Y = X if Y is None else np.atleast_2d(Y)
            distance = np.abs(X[:, None, :] - Y[None, :, :])
            r = distance / np.atleast_1d(np.asarray(self.length_scale, dtype=float))
            decay = np.exp(-math.sqrt(5.0) * r)
            # how alike the contexts are: the distance in every parameter but j, for each j
            others = np.sqrt(np.maximum(np.sum(distance**2, axis=2, keepdims=True) - distance**2, 0.0))
            context = _matern52(others / self.context)
            K = (_matern52(r, decay) * context).mean(axis=2)
            if not eval_gradient:
                return K
            if self.hyperparameter_length_scale.fixed:
                return K, np.empty((X.shape[0], X.shape[0], 0))
            # d m(r) / d log ℓ = (5/3) r² (1 + √5 r) e^(−√5 r), per parameter
            return K, (5.0 / 3.0) * r**2 * (1.0 + math.sqrt(5.0) * r) * decay * context / X.shape[1]

        def __repr__(self):
            return (
                f"AdditiveMatern(length_scale={np.round(np.atleast_1d(self.length_scale), 3).tolist()}, "
                f"context={self.context:.3g})"
            )

    return AdditiveMatern


def ConstantKernelLike(variance: float, dimensions: int):
    """The fixed kernel of a metric's correction (amplitude × Matérn 5/2), as `_metric_from_prior` fits it."""
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern

    return ConstantKernel(variance, "fixed") * Matern(
        length_scale=np.full(dimensions, LENGTH_SCALE), length_scale_bounds="fixed", nu=2.5
    )


def mixture_moments(parts: list[tuple[float, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of a mixture of normals (weight, mean, sd): the variance within and between."""
    mean = sum(w * m for w, m, _ in parts)
    second = sum(w * (sd**2 + m**2) for w, m, sd in parts)
    return mean, np.sqrt(np.maximum(second - mean**2, 0.0))


class LearnedTwin:
    def __init__(self, space: TuningSpace, prior: PriorMean | None = None, prior_name: str = "none") -> None:
        self.space = space
        self.sizes = np.array([len(p.grid()) for p in space.parameters])
        self.prior, self.prior_name = prior, prior_name
        self.observations: list[Observation] = []
        self.scale: float | None = None
        self.log = False  # working units on a log scale (decided at each fit)
        self._model = None  # the fitted GP (None: refit before the next prediction)
        self._calibration = (1.0, 0.0)  # (a, b) of the prior's rescaling, in scale units
        self._calibration_cov = np.zeros((2, 2))
        self._trend: Callable[[np.ndarray], np.ndarray] = lambda points: np.zeros(len(points))
        self._metric_models: dict[str, object] = {}
        # (measured − predicted) / sd at each canaried configuration's first measurement (the latest MAX_SURPRISES)
        self.surprises: list[float] = []
        self._expected: dict[tuple[int, ...], tuple[float, float, bool, float]] = {}  # (mean, sd, log, scale)
        # name -> the measured twin's surface of that metric at grid indices (guards are screened on it)
        self.metric_priors: dict[str, PriorMean] = {}
        # The twin measured under other live conditions (`add_condition`): (label, score prior, metric priors), the
        # nominal twin first. With more than one, the model is their Bayesian model average (`_weigh_family`).
        self.family: list[tuple[str, PriorMean, dict[str, PriorMean]]] = []
        self.weights: dict[str, float] = {}  # each condition's posterior weight at the last fit
        self._members: list[tuple[float, LearnedTwin]] = []  # (weight, a learned twin on that prior) of the kept ones

    # --- coordinates ------------------------------------------------------------------------------------
    def index_of(self, config: Mapping[str, object]) -> tuple[int, ...]:
        return tuple(p.index_of(config[p.name]) for p in self.space.parameters)

    def config_at(self, index) -> dict:
        return {p.name: p.grid()[int(i)] for p, i in zip(self.space.parameters, index)}

    def coordinates(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(indices, dtype=float) / np.maximum(self.sizes - 1, 1)

    # --- data ---------------------------------------------------------------------------------------------
    def add(
        self,
        config: Mapping[str, object],
        mean: float | None,
        std: float | None,
        n: int,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        if mean is None or not math.isfinite(mean) or abs(mean) > MAX_MAGNITUDE or n <= 0:
            return
        if self.scale is None:
            self.scale = max(abs(mean), 1e-9)
        spread = std if std is not None and math.isfinite(std) and std <= MAX_MAGNITUDE else 0.0
        variance = max(spread**2 / max(n, 1), MIN_VARIANCE * self.scale**2)
        index = self.index_of(config)
        expected = self._expected.pop(index, None)
        if expected is not None and all(o.index != index for o in self.observations):
            self._check(expected, float(mean), variance)
        self.observations.append(Observation(index, float(mean), variance, n, dict(metrics or {})))
        self._model = None
        self._metric_models.clear()

    def retract(self, count: int) -> None:
        """Drop the last `count` observations: a later analysis of the same canary step replaces them (its window,
        from the step's start, holds their samples too; kept, they would be counted twice)."""
        if count > 0:
            del self.observations[-count:]
            self._model = None
            self._metric_models.clear()

    def forget_measurements(self) -> None:
        """Drop every observation and what was fitted on them (a new cycle: they may no longer hold); the prior,
        the twin family and the checks of earlier predictions stay."""
        self.observations = []
        self._expected.clear()
        self._model = None
        self._metric_models.clear()
        self._members, self.weights = [], {}

    # --- how honest the uncertainty is ------------------------------------------------------------------------
    def expect(self, index) -> None:
        """Remember the prediction at a configuration about to be canaried (from the model the choice was made on),
        to check it against the configuration's first measurement: an out-of-sample test of the learned twin."""
        if not self.observations:
            return
        mean, sd = self.predict_working(np.array([index]))
        self._expected[tuple(int(i) for i in index)] = (float(mean[0]), float(sd[0]), self.log, self.scale or 1.0)
        while len(self._expected) > MAX_EXPECTED:
            self._expected.pop(next(iter(self._expected)))

    def _check(self, expected: tuple[float, float, bool, float], mean: float, variance: float) -> None:
        """How far off the prediction was, in its own standard deviations (the measurement's noise included), in
        the working units it was made in."""
        predicted, sd, log, scale = expected
        if log and mean <= 0:
            return  # outside those units
        observed = math.log(max(mean / scale, LOG_FLOOR)) if log else mean / scale
        noise = variance / mean**2 if log else variance / scale**2
        self.surprises.append(round((observed - predicted) / math.sqrt(sd**2 + noise + 1e-12), 4))
        self.surprises = self.surprises[-MAX_SURPRISES:]

    @property
    def calibration(self) -> float | None:
        """The root mean square of those checks, None before any: about 1 when the twin's uncertainty is honest,
        above 1 when it is overconfident, below 1 when it is too cautious. A diagnostic, not a correction:
        `bench/live_tuning.py` measures 2.1–2.3 on HDE and ACP without a prior (0.6 on PBA's flat surface) and
        0.2–0.7 with the measured twin of the live workload. Widening or narrowing the posterior by it (tried:
        shrunk towards 1 by three pseudo-checks, capped at 0.5–4; also a fixed 1.5× and 2×) moved the optimum found
        and the harmful canaries along the same trade-off, not beyond it."""
        if not self.surprises:
            return None
        return float(math.sqrt(np.mean(np.square(self.surprises))))

    @property
    def size(self) -> int:
        return len(self.observations)

    def pooled(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distinct grid points, their precision-weighted mean score and its variance."""
        groups: dict[tuple[int, ...], list[Observation]] = {}
        for o in self.observations:
            groups.setdefault(o.index, []).append(o)
        indices, means, variances = [], [], []
        for index, group in groups.items():
            weights = np.array([1.0 / o.variance for o in group])
            indices.append(index)
            means.append(float(np.sum(weights * np.array([o.mean for o in group])) / np.sum(weights)))
            variances.append(float(1.0 / np.sum(weights)))
        return np.array(indices, dtype=float).reshape(-1, len(self.sizes)), np.array(means), np.array(variances)

    def metrics_measured(self, index) -> dict[str, float]:
        """The mean of each metric measured at grid point `index` (empty where nothing was measured)."""
        point = tuple(int(i) for i in index)
        values: dict[str, list[float]] = {}
        for o in self.observations:
            if o.index == point:
                for name, value in o.metrics.items():
                    values.setdefault(name, []).append(value)
        return {name: float(np.mean(v)) for name, v in values.items()}

    def noise_std(self) -> float | None:
        """A single sample's score spread, as the stable measurements show it (for the detectable improvement)."""
        spreads = [math.sqrt(o.variance * o.n) for o in self.observations if o.n > 1]
        return float(np.median(spreads)) if spreads else None

    # --- the model -------------------------------------------------------------------------------------------
    def _prior_at(self, indices: np.ndarray) -> np.ndarray:
        """The prior mean at grid points, in working units."""
        if self.prior is None:
            return np.zeros(len(indices))
        return self.to_working(np.asarray(self.prior(indices), dtype=float))

    # --- working units: score / scale, or its logarithm when every score seen is positive -------------------
    def to_working(self, scores) -> np.ndarray:
        relative = np.asarray(scores, dtype=float) / (self.scale or 1.0)
        if self.log:
            return np.log(np.maximum(relative, LOG_FLOOR))
        return relative

    def from_working(self, values) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        return (np.exp(values) if self.log else values) * (self.scale or 1.0)

    def _fit(self) -> None:
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import Sum, WhiteKernel

        indices, means, variances = self.pooled()
        # Relative to the best score seen: the floors below mean the same whether the score grew tenfold or not.
        self.scale = max(float(np.max(np.abs(means))), 1e-9)
        # A score that stays positive is modelled on a log scale: a parameter's effect is then a factor, the same
        # wherever the others are (a rate 10× below its optimum varies 10× less in absolute terms), so one
        # kernel fits the whole grid and the improvements it predicts are relative, as the canary judges them.
        self.log = bool(np.all(means > 0))
        y = self.to_working(means)
        var = variances / np.maximum(means, 1e-12) ** 2 if self.log else variances / self.scale**2
        if len(self.family) > 1:
            self._weigh_family(indices, y, var)
            return
        prior = self._prior_at(indices)
        self._calibration_cov = np.zeros((2, 2))
        if self.prior is not None:
            # Rescale the prior to the data, y ≈ a·prior + b, by Bayesian least squares with a ~ N(1, PRIOR_SCALE_SD²)
            # (the twin may be off by its scale: another link, another machine) and a flat b; the posterior
            # uncertainty of (a, b) adds to the prediction, so a twin that two points cannot confirm stays uncertain.
            w = 1.0 / (var + AMPLITUDE_FLOOR)
            design = np.stack([prior, np.ones_like(prior)], axis=1)
            precision = np.diag([1.0 / PRIOR_SCALE_SD**2, 1e-6])
            lhs = design.T @ (design * w[:, None]) + precision
            rhs = design.T @ (w * y) + precision @ np.array([1.0, 0.0])
            self._calibration_cov = np.linalg.inv(lhs)
            a, b = self._calibration_cov @ rhs
            self._calibration = (float(a), float(b))
            residual = y - (a * prior + b)
        else:
            # No prior: a constant, the observations' weighted mean. (Tried and dropped: a linear trend, which
            # extrapolated the first promotions' direction across the grid, also as a Bayesian linear kernel; a
            # constant at the stable or the best score, which made every unmeasured point look as good.)
            level = float(np.average(y, weights=1.0 / (var + 0.01)))
            self._trend = lambda points, level=level: np.full(len(points), level)
            self._calibration = (0.0, 0.0)
            residual = y - self._trend(self.coordinates(indices))
        distinct = len(y)
        spread = float(np.var(residual)) if distinct > 1 else 0.0
        # How far the prior may be off before the data say how far it is: a twin measured under other conditions
        # (another link, another load) can be wrong by tens of per cent anywhere it was not checked.
        floor = AMPLITUDE_FLOOR if self.prior is None else max(AMPLITUDE_FLOOR, self._discrepancy() ** 2)
        d = len(self.sizes)
        kernel, optimizer = self._kernel(d, distinct, spread, floor)
        model = GaussianProcessRegressor(
            kernel=kernel, alpha=var, optimizer=optimizer, n_restarts_optimizer=1, normalize_y=False, random_state=0
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(self.coordinates(indices), residual)
        if isinstance(model.kernel_, Sum) and isinstance(model.kernel_.k2, WhiteKernel):
            model.kernel_ = model.kernel_.k1  # predict the score itself: the white term is noise, not uncertainty
        self._model = model

    def add_condition(self, label: str, prior: PriorMean, metric_priors: Mapping[str, PriorMean]) -> None:
        """Add the twin measured under another live condition (e.g. `dirty_fraction=0.18`) to the family."""
        if not self.family and self.prior is not None:
            self.family.append(("the default conditions", self.prior, dict(self.metric_priors)))
        self.family.append((label, prior, dict(metric_priors)))
        self._model = None

    @property
    def resembles(self) -> str | None:
        """The condition whose twin best explained the canaries at the last fit (the last proposal), with its weight;
        None without a family or before a fit. (It does not fit: the status is read without the proposer's lock.)"""
        if len(self.family) < 2 or not self.weights:
            return None
        label, weight = max(self.weights.items(), key=lambda item: item[1])
        return f"{label} (weight {weight:.2f} of {len(self.family)} conditions)"

    def _weigh_family(self, indices: np.ndarray, y: np.ndarray, var: np.ndarray) -> None:
        """Weigh each condition's twin by how well it explains the observations, and fit a model on each likely one.

        A live workload that differs from the twinned one (a faster link, fewer dirty pages) moves the optimum
        where the nominal twin is confidently low, and a rescaled twin plus a smooth misfit cannot follow it (the
        misfit is as rough as the surface). The twin measured under a condition like the live one can: its
        posterior weight is its prior mass (half for the default conditions, the other half shared) times the
        marginal likelihood of the observations under y ~ N(prior, K + noise + H B Hᵀ), the same rescaling
        (H = [prior, 1], B = diag(`PRIOR_SCALE_SD`², 10)) and a Matérn misfit of the nominal twin's discrepancy.
        The prediction is the mixture of the `FAMILY_MEMBERS` likeliest (each a full learned twin on its prior):
        where the conditions disagree it is uncertain, so a canary there is worth its information."""
        from sklearn.gaussian_process.kernels import Matern

        x = self.coordinates(indices)
        amplitude = max(AMPLITUDE_FLOOR, self._discrepancy() ** 2)  # `self.prior` is the nominal twin's
        misfit = amplitude * Matern(length_scale=np.full(len(self.sizes), LENGTH_SCALE), nu=2.5)(x)
        others = max(len(self.family) - 1, 1)
        log_weights = []
        for i, (_, prior, _) in enumerate(self.family):
            mean = self.to_working(np.asarray(prior(indices), dtype=float))
            design = np.stack([mean, np.ones_like(mean)], axis=1)
            cov = misfit + np.diag(var + 1e-4) + design @ np.diag([PRIOR_SCALE_SD**2, 10.0]) @ design.T
            residual = y - mean
            _, logdet = np.linalg.slogdet(cov)
            mass = FAMILY_NOMINAL_MASS if i == 0 else (1.0 - FAMILY_NOMINAL_MASS) / others
            log_weights.append(-0.5 * float(residual @ np.linalg.solve(cov, residual)) - 0.5 * logdet + math.log(mass))
        weights = np.exp(np.array(log_weights) - max(log_weights))
        weights /= weights.sum()
        self.weights = {label: round(float(w), 4) for (label, _, _), w in zip(self.family, weights)}
        kept = [int(i) for i in np.argsort(-weights)[:FAMILY_MEMBERS] if weights[i] >= FAMILY_MIN_WEIGHT]
        total = float(weights[kept].sum())
        self._members = []
        for i in kept:
            label, prior, metric_priors = self.family[i]
            member = LearnedTwin(self.space, prior, label)
            member.metric_priors = metric_priors
            member.observations = self.observations
            member._fit()
            self._members.append((float(weights[i]) / total, member))
        top = self._members[0][1]
        # The guards are screened on the likeliest condition's metrics; `sample` draws from its model.
        self.metric_priors = top.metric_priors
        self._calibration, self._calibration_cov, self._model = top._calibration, top._calibration_cov, top._model

    def _kernel(self, d: int, distinct: int, spread: float, floor: float):
        """The kernel (and its hyperparameter fit) for `distinct` points whose residuals vary by `spread`."""
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        def matern(bounds):
            return Matern(length_scale=np.full(d, LENGTH_SCALE), length_scale_bounds=bounds, nu=2.5)

        # too few points to tell length scales (or noise) apart: a fixed kernel
        few = distinct < d + 2 + (0 if self.prior is not None else FIXED_KERNEL_EXTRA)
        if self.prior is not None:
            if few:  # the amplitude covers what was seen; the measured variances (alpha) are the noise
                return ConstantKernel(max(2.0 * spread, floor), "fixed") * matern("fixed"), None
            amplitude = max(spread, floor)
            kernel = ConstantKernel(amplitude, (AMPLITUDE_FLOOR, 1e2)) * matern((0.05, 5.0))
            return kernel + WhiteKernel(1e-4, (1e-8, 1e-2)), _map_optimizer(*_amplitude_prior(amplitude, d))
        main, interaction = 1.0 - INTERACTION_SHARE, INTERACTION_SHARE
        additive = partial(_additive_matern(), context=CONTEXT_LENGTH * math.sqrt(max(d - 1, 1) / 2.0))
        if few:
            amplitude = max(2.0 * spread, floor, FEW_POINTS_VARIANCE)
            kernel = ConstantKernel(amplitude * main, "fixed") * additive(np.full(d, LENGTH_SCALE), "fixed")
            return kernel + ConstantKernel(amplitude * interaction, "fixed") * matern("fixed"), None
        amplitude = max(spread, floor)
        kernel = (
            ConstantKernel(amplitude * main, (AMPLITUDE_FLOOR * 0.01, 1e2))
            * additive(np.full(d, LENGTH_SCALE), (0.05, 5.0))
            + ConstantKernel(amplitude * interaction, (AMPLITUDE_FLOOR * 0.01, 1e2)) * matern((0.05, 5.0))
            + WhiteKernel(1e-4, (1e-8, 1e-2))  # what the measured variances miss (drift between windows)
        )
        centres, spreads = zip(_amplitude_prior(amplitude * main, d), _amplitude_prior(amplitude * interaction, d))
        return kernel, _map_optimizer(np.concatenate(centres), np.concatenate(spreads))

    def _base(self, indices: np.ndarray) -> np.ndarray:
        """The prior mean (rescaled twin, or the linear trend) at grid points, in scale units."""
        if self.prior is not None:
            a, b = self._calibration
            return a * self._prior_at(indices) + b
        return self._trend(self.coordinates(indices))

    def predict_working(self, indices, relative_to=None) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation at grid points `indices` (N, d), in working units (`to_working`).

        With `relative_to` (a grid point: the stable configuration), the prior's rescaling counts only with the
        difference of the prior between each point and that one: a twin off by a factor is off by it at both,
        which says nothing about which of the two is better."""
        indices = np.asarray(indices, dtype=float).reshape(-1, len(self.sizes))
        if not self.observations:
            return self._unmeasured(indices, relative_to)
        if self._model is None:
            self._fit()
        if len(self.family) > 1 and self._members:
            return mixture_moments(self.mixture(indices, relative_to))
        base = self._base(indices)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mu, sd = self._model.predict(self.coordinates(indices), return_std=True)
        variance = sd**2
        if self.prior is not None:  # the uncertainty of the prior's rescaling
            features = np.stack([self._prior_at(indices), np.ones(len(indices))], axis=1)
            if relative_to is not None:
                features = features - np.array([self._prior_at(np.asarray(relative_to, float)[None, :])[0], 1.0])
            variance = variance + np.einsum("ni,ij,nj->n", features, self._calibration_cov, features)
        return base + mu, np.sqrt(np.maximum(variance, 0.0))

    def mixture(self, indices, relative_to=None) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """(weight, mean, sd) in working units of each condition's model the prediction mixes (one, weight 1,
        without a family): an expectation under the posterior (an improvement, a probability) is their weighted
        sum, exactly, where a single normal of the mixture's mean and variance would exaggerate its tails."""
        indices = np.asarray(indices, dtype=float).reshape(-1, len(self.sizes))
        if self.observations and self._model is None:
            self._fit()
        if len(self.family) > 1 and self._members:
            return [(w, *member.predict_working(indices, relative_to)) for w, member in self._members]
        return [(1.0, *self.predict_working(indices, relative_to))]

    def _unmeasured(self, indices: np.ndarray, relative_to) -> tuple[np.ndarray, np.ndarray]:
        """Before any observation: the prior as it is, uncertain by its scale factor and by the least amplitude."""
        if self.prior is None:
            return np.zeros(len(indices)), np.ones(len(indices))
        raw = np.asarray(self.prior(indices), dtype=float)
        if self.scale is None:  # relative to the prior's own magnitude until the first measurement sets it
            reference = raw if relative_to is None else np.asarray(self.prior(np.asarray(relative_to, float)[None, :]))
            self.scale = max(float(np.max(np.abs(reference))), 1e-9)
        prior = self._prior_at(indices)
        spread = prior - (0.0 if relative_to is None else self._prior_at(np.asarray(relative_to, float)[None, :])[0])
        return prior, np.sqrt(max(AMPLITUDE_FLOOR, self._discrepancy() ** 2) + (PRIOR_SCALE_SD * spread) ** 2)

    def _discrepancy(self) -> float:
        """The prior's misfit assumed where nothing was measured: a fraction of how much the prior itself varies
        over the grid (a twin whose surface spans a factor of ten may be off by a factor; one that is flat
        within a few per cent is not off by thirty), in working units."""
        rng = np.random.default_rng(0)
        sample = np.stack([rng.integers(0, n, 2048) for n in self.sizes], axis=1)
        return TWIN_DISCREPANCY * float(np.std(self._prior_at(sample)))

    def predict(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """Mean (the median, on a log scale) and standard deviation of the score at grid points, in score units."""
        mean, sd = self.predict_working(indices)
        if self.log:
            score = self.from_working(mean)
            return score, score * sd  # to first order
        return self.from_working(mean), sd * (self.scale or 1.0)

    def metric(self, name: str, indices) -> tuple[np.ndarray, np.ndarray] | None:
        """Mean and standard deviation of one metric (a guard's), or None without data or prior for it.

        With the measured twin's surface of the metric as prior (`metric_priors`), the data correct the prior's
        ratio to the live metric; without data the prior stands, uncertain by `METRIC_PRIOR_CV`."""
        points = [(o.index, o.metrics[name], o.variance) for o in self.observations if name in o.metrics]
        prior = self.metric_priors.get(name)
        if prior is not None:
            return self._metric_from_prior(name, prior, points, np.asarray(indices, dtype=float))
        if len({p[0] for p in points}) < 1:
            return None
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        model = self._metric_models.get(name)
        xs = np.array([p[0] for p in points], dtype=float)
        values = np.array([p[1] for p in points])
        level = max(float(np.mean(np.abs(values))), 1e-9)
        if model is None:
            kernel = ConstantKernel(0.25, (1e-4, 1e2)) * Matern(
                length_scale=np.full(len(self.sizes), 0.4), length_scale_bounds=(0.08, 10.0), nu=2.5
            ) + WhiteKernel(1e-3, (1e-8, 1e-1))
            enough = len({p[0] for p in points}) >= len(self.sizes) + 2
            model = GaussianProcessRegressor(
                kernel=kernel,
                alpha=1e-4,
                optimizer="fmin_l_bfgs_b" if enough else None,
                normalize_y=False,
                random_state=0,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(self.coordinates(xs), values / level - 1.0)
            self._metric_models[name] = model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mu, sd = model.predict(self.coordinates(np.asarray(indices, dtype=float)), return_std=True)
        return (mu + 1.0) * level, sd * level

    def metric_change(self, name: str, indices, stable_index) -> tuple[np.ndarray, np.ndarray] | None:
        """With the measured twin's surface of the metric as prior: each candidate's relative change of the metric
        against the stable configuration (candidate / stable − 1) and its standard deviation. The twin being off
        by a common factor cancels out; what is uncertain is how its shape is off between the two points (the
        correction's posterior covariance). None without such a prior."""
        prior = self.metric_priors.get(name)
        if prior is None:
            return None
        from scipy.linalg import solve_triangular

        points = [(o.index, o.metrics[name], o.variance) for o in self.observations if name in o.metrics]
        candidates = np.asarray(indices, dtype=float)
        stable = np.asarray(stable_index, dtype=float)[None, :]
        mean, _ = self._metric_from_prior(name, prior, points, np.vstack([candidates, stable]))
        model = self._metric_models.get(name)
        xc, xs = self.coordinates(candidates), self.coordinates(stable)
        if model is None:  # no data: the correction's prior covariance
            kernel = ConstantKernelLike(METRIC_PRIOR_CV**2, len(self.sizes))
            var_c, var_s, cov = kernel.diag(xc), kernel.diag(xs)[0], kernel(xc, xs)[:, 0]
        else:
            k = model.kernel_
            vc = solve_triangular(model.L_, k(model.X_train_, xc), lower=True)
            vs = solve_triangular(model.L_, k(model.X_train_, xs), lower=True)
            var_c = k.diag(xc) - np.sum(vc**2, axis=0)
            var_s = float(k.diag(xs)[0] - np.sum(vs**2))
            cov = k(xc, xs)[:, 0] - np.sum(vc * vs, axis=0)
        ratio = mean[:-1] / max(abs(mean[-1]), 1e-12)
        sd = ratio * np.sqrt(np.maximum(var_c + var_s - 2.0 * cov, 0.0))
        return ratio - 1.0, sd

    def _metric_from_prior(self, name, prior, points, indices) -> tuple[np.ndarray, np.ndarray]:
        """The prior's surface times a smooth correction learned from the measured ratios (1 where unmeasured)."""
        base = np.abs(np.asarray(prior(indices.astype(int)), dtype=float)) + 1e-12
        if not points:
            return base, METRIC_PRIOR_CV * base
        from sklearn.gaussian_process import GaussianProcessRegressor

        model = self._metric_models.get(name)
        if model is None:
            xs = np.array([p[0] for p in points], dtype=float)
            ratios = np.array([p[1] for p in points]) / (np.abs(prior(xs.astype(int))) + 1e-12)
            level = float(np.median(ratios))  # the twin may be off by a factor everywhere (another machine, load)
            kernel = ConstantKernelLike(METRIC_PRIOR_CV**2, len(self.sizes))
            model = GaussianProcessRegressor(kernel=kernel, alpha=1e-4, optimizer=None, normalize_y=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(self.coordinates(xs), ratios / level - 1.0)
            model.level = level
            self._metric_models[name] = model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mu, sd = model.predict(self.coordinates(indices), return_std=True)
        return base * model.level * (1.0 + mu), base * model.level * sd

    def sample(self, indices, rng: np.random.Generator, count: int = 1) -> np.ndarray:
        """Posterior samples of the score at `indices` (count, N): a plausible world for planning on."""
        indices = np.asarray(indices, dtype=float).reshape(-1, len(self.sizes))
        mean, _ = self.predict(indices)
        if len(self.family) > 1 and self._members:
            return self._members[0][1].sample(indices, rng, count)
        if self._model is None:
            return np.repeat(mean[None, :], count, axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            draws = self._model.sample_y(
                self.coordinates(indices), n_samples=count, random_state=int(rng.integers(2**31))
            )
        base = self._base(indices)
        return self.from_working(base[:, None] + draws).T

    # --- persistence -------------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "prior": self.prior_name,
            "scale": self.scale,
            "observations": [o.dump() for o in self.observations],
            "surprises": self.surprises,
            "expected": [[list(i), *e] for i, e in self._expected.items()],
        }

    def restore(self, state: Mapping) -> None:
        self.scale = state.get("scale")
        self.observations = [Observation.load(o) for o in state.get("observations") or []]
        self.surprises = [float(z) for z in state.get("surprises") or []]
        self._expected = {
            tuple(int(i) for i in e[0]): (float(e[1]), float(e[2]), bool(e[3]), float(e[4]))
            for e in state.get("expected") or []
        }
        self._model = None


class EnsembleTwin(LearnedTwin):
    """The same learned twin with a deep ensemble instead of the Gaussian process (the alternative benchmarked).

    Five small networks (two hidden layers of 32, tanh), each trained on a bootstrap resample of the pooled
    observations from its own initialisation; the mean and spread of their predictions are the twin's mean and
    uncertainty (plus the prior's rescaling, as for the GP). Kept for `bench/live_tuning.py`'s comparison.
    """

    MEMBERS, STEPS = 5, 300

    def _fit(self) -> None:
        import torch

        indices, means, variances = self.pooled()
        self.scale = max(float(np.max(np.abs(means))), 1e-9)
        self.log = False
        y = means / self.scale
        prior = self._prior_at(indices)
        if self.prior is not None:
            design = np.stack([prior, np.ones_like(prior)], axis=1)
            lhs = design.T @ design + np.diag([1.0 / PRIOR_SCALE_SD**2, 1e-6])
            self._calibration_cov = np.zeros((2, 2))
            a, b = np.linalg.solve(lhs, design.T @ y + np.array([1.0 / PRIOR_SCALE_SD**2, 0.0]))
            self._calibration = (float(a), float(b))
            residual = y - (a * prior + b)
        else:
            level = float(np.mean(y))
            self._trend = lambda points, level=level: np.full(len(points), level)
            residual = y - level
        x = torch.tensor(self.coordinates(indices), dtype=torch.float32)
        target = torch.tensor(residual, dtype=torch.float32)[:, None]
        generator = torch.Generator().manual_seed(len(indices))
        members = []
        for _ in range(self.MEMBERS):
            net = torch.nn.Sequential(
                torch.nn.Linear(x.shape[1], 32),
                torch.nn.Tanh(),
                torch.nn.Linear(32, 32),
                torch.nn.Tanh(),
                torch.nn.Linear(32, 1),
            )
            pick = torch.randint(len(x), (len(x),), generator=generator)
            optimiser = torch.optim.Adam(net.parameters(), lr=0.01, weight_decay=1e-4)
            for _ in range(self.STEPS):
                optimiser.zero_grad()
                loss = torch.mean((net(x[pick]) - target[pick]) ** 2)
                loss.backward()
                optimiser.step()
            members.append(net)
        self._model = members

    def predict_working(self, indices, relative_to=None) -> tuple[np.ndarray, np.ndarray]:
        import torch

        indices = np.asarray(indices, dtype=float).reshape(-1, len(self.sizes))
        if not self.observations:
            return super().predict_working(indices, relative_to)
        if self._model is None:
            self._fit()
        with torch.no_grad():
            x = torch.tensor(self.coordinates(indices), dtype=torch.float32)
            outputs = np.stack([net(x).numpy()[:, 0] for net in self._model])
        return self._base(indices) + outputs.mean(axis=0), outputs.std(axis=0) + 1e-9
