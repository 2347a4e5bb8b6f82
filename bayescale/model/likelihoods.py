"""Observation models of log loss: a registry, as `bayescale.model.laws` is for laws.

An observation model says how a run's measured log loss scatters around the law:
``log L_i = log f(x_i; theta) + sigma * eps_i`` with ``eps_i`` drawn from a standardised
distribution. Each registered `Likelihood` knows everything the verbs need of it, in one place:

==================  =============================================================================
method              used by
==================  =============================================================================
``distribution``    the numpyro model (`bayescale.model.build`): ``numpyro.sample(...,
obs=log_loss)``
``logpdf``          held-out densities (`bayescale.analysis.compare`), checks
(`bayescale.analysis.checks`)
``cdf`` / ``pdf``   predictive percentiles and mixture quantiles (`bayescale.analysis.common`)
``ppf``             interval bounds
``variance``        standardised residuals (predictive sd)
``sample``          simulation (`bayescale.model.simulation.simulate`), replicated data (`ppc`)
``uniforms`` and    forecasts (`bayescale.analysis.forecast`): the noise of each (draw, point) pair
is
``transform``       ``transform(u)`` in JAX of inputs ``u = uniforms(rng, shape)`` drawn on the host
==================  =============================================================================

Adding one is a subclass with these methods and a `register_likelihood` call; see
:doc:`/developer` ("Adding a likelihood"). Every test parametrized over `LIKELIHOODS` picks it up.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from bayescale.errors import OptionError

__all__ = [
    "LIKELIHOODS",
    "Likelihood",
    "Normal",
    "StudentT",
    "get_likelihood",
    "register_likelihood",
]

_HALF_STEP = np.float32(2.0**-25)  # half the spacing of float32 uniforms on [0, 1)


def _namespace(xp: Any) -> Any:
    """The array namespace of `Likelihood.transform`: ``jax.numpy`` unless ``numpy`` is given."""
    if xp is None:
        import jax.numpy as jnp

        return jnp
    return xp


@dataclass(frozen=True)
class Likelihood:
    """Base class of the observation models: a standardised noise distribution of log loss.

    Subclasses are frozen dataclasses whose fields are the model's options (for example the
    Student-t's ``nu``), so that a likelihood is hashable and one compiled sampler serves every
    fit that uses it.
    """

    #: registry name, set by `register_likelihood`
    name = "likelihood"

    @property
    def options(self) -> dict[str, float]:
        """The model's options by name (the dataclass fields)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # -- model -------------------------------------------------------------------------------
    def distribution(self, loc: Any, scale: Any) -> Any:
        """The numpyro distribution of log loss with location ``loc`` and scale ``scale``."""
        raise NotImplementedError

    # -- numpy, standardised (location 0, scale 1) -------------------------------------------
    def cdf(self, z: np.ndarray) -> np.ndarray:
        """Standardised CDF."""
        raise NotImplementedError

    def pdf(self, z: np.ndarray) -> np.ndarray:
        """Standardised density."""
        raise NotImplementedError

    def ppf(self, p: np.ndarray) -> np.ndarray:
        """Standardised quantile function."""
        raise NotImplementedError

    def variance(self) -> float:
        """Variance of the standardised noise (``inf`` when it has none)."""
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Standardised draws from ``rng``."""
        raise NotImplementedError

    def logpdf(self, y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        """Log density of ``y`` with location ``mu`` and scale ``sigma`` (float64)."""
        z = (np.asarray(y, np.float64) - mu) / sigma
        return np.log(self.pdf(z)) - np.log(sigma)

    # -- forecasts: host-side inputs, device-side transform ------------------------------------
    def uniforms(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Float32 inputs of `transform`: uniforms on [0, 1) unless `transform` is the identity."""
        return rng.random(shape, dtype=np.float32)

    def transform(self, u: Any, xp: Any = None) -> Any:
        """Map from `uniforms` to standardised noise (inverse CDF, stable in float32).

        ``xp`` is the array namespace: ``jax.numpy`` (the default) or ``numpy``, whose float32
        transcendental functions are vectorised on CPU (forecasts draw their noise with it).
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v:g}" for k, v in self.options.items())
        return f"{self.name}({opts})"


@dataclass(frozen=True, repr=False)
class StudentT(Likelihood):
    """Student-t noise with ``nu`` degrees of freedom: the Bayesian analogue of the Huber loss.

    Robust to the few runs that sit far from the law (Hoffmann et al. 2022 and Besiroglu et
    al. 2024 fit the Huber loss on log residuals).
    """

    nu: float = 4.0
    name = "student_t"

    def __post_init__(self) -> None:
        if not (isinstance(self.nu, (int, float)) and math.isfinite(self.nu) and self.nu > 0):
            raise OptionError(
                f"nu must be a positive number of degrees of freedom; received {self.nu!r}. "
                "The default is nu=4 (heavy tails); large nu approaches the normal likelihood."
            )
        object.__setattr__(self, "nu", float(self.nu))

    def distribution(self, loc: Any, scale: Any) -> Any:  # noqa: D102
        import numpyro.distributions as dist

        return dist.StudentT(self.nu, loc, scale)

    def cdf(self, z: np.ndarray) -> np.ndarray:  # noqa: D102
        from scipy import special

        if self.nu == 4.0:  # the default nu has a closed form, cheaper than stdtr
            x = z / np.sqrt(4.0 + z * z)
            return 0.5 + 0.75 * x - 0.25 * x**3
        if self.nu == 1.0:
            return 0.5 + np.arctan(z) / math.pi
        if self.nu == 2.0:
            return 0.5 + z / (2.0 * np.sqrt(2.0 + z * z))
        return special.stdtr(self.nu, z)

    def pdf(self, z: np.ndarray) -> np.ndarray:  # noqa: D102
        nu = self.nu
        log_c = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
        return np.exp(log_c - (nu + 1) / 2 * np.log1p(z**2 / nu))

    def ppf(self, p: np.ndarray) -> np.ndarray:  # noqa: D102
        from scipy import special

        return special.stdtrit(self.nu, p)

    def logpdf(self, y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:  # noqa: D102
        from scipy import stats

        return stats.t.logpdf(y, self.nu, mu, sigma)

    def variance(self) -> float:  # noqa: D102
        return self.nu / (self.nu - 2.0) if self.nu > 2 else math.inf

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:  # noqa: D102
        return rng.standard_t(self.nu, size=shape)

    def uniforms(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:  # noqa: D102
        if self.nu == 4.0:
            return rng.random(shape, dtype=np.float32)
        return rng.standard_t(self.nu, size=shape).astype(np.float32)

    def transform(self, u: Any, xp: Any = None) -> Any:  # noqa: D102
        if self.nu != 4.0:  # uniforms() drew the noise itself
            return u
        xp = _namespace(xp)
        s = (u - np.float32(0.5)) + _HALF_STEP  # exact in float32: symmetric, never 0 or +-1/2
        a = xp.abs(s)  # closed-form inverse CDF of t_4 at p = 1/2 + s
        theta = xp.arcsin(2 * a)
        cos_theta = xp.sqrt((1 - 2 * a) * (1 + 2 * a))
        q_minus_1 = 2 * xp.sin(2 * theta / 3) * xp.sin(theta / 3) / cos_theta
        return xp.sign(s) * 2 * xp.sqrt(q_minus_1)


@dataclass(frozen=True, repr=False)
class Normal(Likelihood):
    """Gaussian noise on log loss (least squares on log residuals)."""

    name = "normal"

    def distribution(self, loc: Any, scale: Any) -> Any:  # noqa: D102
        import numpyro.distributions as dist

        return dist.Normal(loc, scale)

    def cdf(self, z: np.ndarray) -> np.ndarray:  # noqa: D102
        from scipy import special

        return special.ndtr(z)

    def pdf(self, z: np.ndarray) -> np.ndarray:  # noqa: D102
        return np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)

    def ppf(self, p: np.ndarray) -> np.ndarray:  # noqa: D102
        from scipy import special

        return special.ndtri(p)

    def logpdf(self, y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:  # noqa: D102
        from scipy import stats

        return stats.norm.logpdf(y, mu, sigma)

    def variance(self) -> float:  # noqa: D102
        return 1.0

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:  # noqa: D102
        return rng.standard_normal(shape)

    def transform(self, u: Any, xp: Any = None) -> Any:  # noqa: D102
        xp = _namespace(xp)
        if xp is np:
            from scipy.special import ndtri
        else:
            from jax.scipy.special import ndtri

        s = (u - np.float32(0.5)) + _HALF_STEP
        return -xp.sign(s) * ndtri(np.float32(0.5) - xp.abs(s))  # from the nearer tail


#: name -> Likelihood subclass, in registration order
LIKELIHOODS: dict[str, type[Likelihood]] = {}


def register_likelihood(
    name: str, cls: type[Likelihood], *, overwrite: bool = False
) -> type[Likelihood]:
    """Register an observation model under ``name``.

    Parameters
    ----------
    name : str
        The name `bayescale.inference.fit` takes as ``likelihood=``.
    cls : type
        A frozen-dataclass subclass of `Likelihood` implementing its methods; its fields are
        its options.
    overwrite : bool, default False
        Replace an existing registration.

    Raises
    ------
    OptionError
        If the name is taken (without ``overwrite``) or ``cls`` is not a `Likelihood` subclass.
    """
    if not (isinstance(cls, type) and issubclass(cls, Likelihood)):
        raise OptionError(
            f"a likelihood must be a subclass of bayescale.Likelihood; received {cls!r}."
        )
    if name in LIKELIHOODS and not overwrite:
        raise OptionError(
            f"likelihood {name!r} is already registered. Pass overwrite=True to replace it."
        )
    cls.name = name
    LIKELIHOODS[name] = cls
    return cls


def get_likelihood(name: str | Likelihood, **options: Any) -> Likelihood:
    """The registered likelihood ``name`` with its options (unused options are ignored).

    Examples
    --------
    >>> get_likelihood("student_t", nu=4)
    student_t(nu=4)
    >>> get_likelihood("normal", nu=4)
    normal()
    """
    if isinstance(name, Likelihood):
        return name
    if name not in LIKELIHOODS:
        near = difflib.get_close_matches(str(name), LIKELIHOODS, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise OptionError(
            f"unknown likelihood {name!r}. Available: {', '.join(LIKELIHOODS)}.{hint}"
        )
    cls = LIKELIHOODS[name]
    accepted = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in options.items() if k in accepted})


register_likelihood("student_t", StudentT)
register_likelihood("normal", Normal)
