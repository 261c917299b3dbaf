"""Shared basics of the statistics package: type aliases, defaults, RNG and input checks.

Every public function of :mod:`stabstat.stats` takes ``rng`` (a
:class:`numpy.random.Generator` or an ``int`` seed; default :data:`DEFAULT_SEED`), coerced
here by ``_as_rng``; per-seed inputs are 1-D float arrays, shape ``(n,)``, checked by
``_as_1d``. :func:`seed_warnings` is the one wording of "too few seeds" used by every
interval.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

Statistic = Literal["mean", "median", "std", "iqm", "max"]
CIMethod = Literal["auto", "bca", "percentile"]
RNGLike = np.random.Generator | int | None
FloatArray = NDArray[np.float64]

#: Statistics every bootstrap function accepts. ``std`` is the sample SD (ddof=1).
STATISTICS: tuple[str, ...] = ("mean", "median", "std", "iqm", "max")
DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0
DEFAULT_CONFIDENCE = 0.95
#: Fewer seeds than this per group trigger a warning for interval claims: at a 15-30%
#: failure rate, smaller samples often contain no failed run at all.
MIN_SEEDS = 10


def _as_rng(rng: RNGLike) -> tuple[np.random.Generator, int | None]:
    """Return a Generator and the int seed to record (None when a Generator was given)."""
    if rng is None:
        return np.random.default_rng(DEFAULT_SEED), DEFAULT_SEED
    if isinstance(rng, np.random.Generator):
        return rng, None
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng)), int(rng)
    raise TypeError(f"rng must be a numpy.random.Generator or an int seed, not {type(rng).__name__}")


def _as_1d(x: ArrayLike, name: str = "values") -> FloatArray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.ndim == 0 else arr
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one value per seed), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; drop or impute them before bootstrapping")
    return arr


def _check_common(statistic: str, method: str, resamples: int, confidence: float) -> None:
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; choose one of {', '.join(STATISTICS)}")
    if method not in CI_METHODS:
        raise ValueError(f"unknown CI method {method!r}; choose one of {', '.join(CI_METHODS)}")
    if resamples < 2:
        raise ValueError(f"resamples must be >= 2, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


#: Bootstrap interval methods; ``auto`` picks one per statistic and sample size
#: (:func:`default_ci_method`).
CI_METHODS: tuple[str, ...] = ("auto", "bca", "percentile")
#: Below this many runs the SD (and an SD ratio) gets a percentile interval under ``auto``.
SD_PERCENTILE_BELOW = 20
#: At or below this many runs every statistic gets a percentile interval under ``auto``.
PERCENTILE_AT_MOST = 3
#: What ``auto`` means, in words (CLI footers, the report's methods text).
AUTO_TEXT = (f"BCa; percentile for the SD and SD ratios below {SD_PERCENTILE_BELOW} runs "
             f"and for any statistic at {PERCENTILE_AT_MOST} runs or fewer")


def default_ci_method(statistic: str, n: int) -> str:
    """The interval ``auto`` gives ``statistic`` over ``n`` runs (the smaller group's for
    two samples): measured by ``python -m benchmarks.coverage --small-n`` (README,
    Statistics). At n = 3 percentile covered better than BCa for the mean on all three
    shapes; for the SD, percentile covered 5-12 points better on the failure mixture (the
    shape of fine-tuning results) up to n = 15 and equally at 20, BCa better from 25.
    Everything else: BCa (Efron 1987)."""
    if n <= PERCENTILE_AT_MOST:
        return "percentile"
    if statistic.startswith("std") and n < SD_PERCENTILE_BELOW:
        return "percentile"
    return "bca"


def resolve_method(method: str, statistic: str, n: int) -> str:
    """``method`` itself, or for ``auto`` :func:`default_ci_method` of ``statistic`` at ``n``."""
    return default_ci_method(statistic, n) if method == "auto" else method


def seed_warnings(n: int, *, purpose: str = "a confidence interval", minimum: int = MIN_SEEDS) -> list[str]:
    """Warnings when ``n`` seeds are too few for ``purpose`` (empty list when enough)."""
    if n < 2:
        return [f"only {n} seed(s): no interval can be computed for {purpose}"]
    if n < minimum:
        return [
            f"only {n} seeds (< {minimum}) for {purpose}: the interval is unreliable and a "
            "failure mode absent from the sample is invisible"
        ]
    return []
