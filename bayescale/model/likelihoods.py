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
``sample``          replicated runs (`ppc`), predictive draws (breaks, stacking, design)
``sample_observed`` simulated data sets (`bayescale.model.simulation.simulate`)
``predictive``      the design of experiments (`bayescale.analysis.design`), which scores
the outcomes of runs that train
``uniforms`` and    forecasts (`bayescale.analysis.forecast`): the noise of each (draw, point) pair
is
``transform``       ``transform(u)`` in JAX of inputs ``u = uniforms(rng, shape)`` drawn on the host
==================  =============================================================================

Adding one is a subclass with these methods and a `register_likelihood` call; see
:doc:`/developer` ("Adding a likelihood"). Every test parametrized over `LIKELIHOODS` picks it up.
"""

from __future__ import annotations

import difflib
import functools
import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from bayescale.errors import OptionError

__all__ = [
    "LIKELIHOODS",
    "ContaminatedT",
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
        """Standardised draws from ``rng`` of a run's noise (the distribution of `cdf`)."""
        raise NotImplementedError

    def sample_observed(
        self, rng: np.random.Generator, shape: tuple[int, ...], scale: float
    ) -> np.ndarray:
        """Draws of the whole observation model (the density of `logpdf`) at noise ``scale``.

        Standardised as `sample`'s (log loss is ``loc + scale * draw``); the same as `sample`
        unless the model has a part that forecasts leave out, as `ContaminatedT`'s failed
        runs. Simulated data sets draw from this.
        """
        return self.sample(rng, shape)

    @property
    def predictive(self) -> Likelihood:
        """The observation model of a run that trains as the fitted ones did.

        ``self`` unless the model has a part that forecasts leave out (`ContaminatedT`'s
        failed runs).
        """
        return self

    def logpdf(self, y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        """Log density of ``y`` with location ``mu`` and scale ``sigma`` (float64)."""
        z = (np.asarray(y, np.float64) - mu) / sigma
        return np.log(self.pdf(z)) - np.log(sigma)

    # -- forecasts: host-side inputs, device-side transform ------------------------------------
    @property
    def inverse_cdf(self) -> bool:
        """True when `uniforms` are ``Generator.random`` float32 draws that `transform` maps.

        Such noise can be drawn in independent blocks of one stream (the generator jumps to a
        block's first draw), so forecasts draw it in parallel.
        """
        return True

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

    @property
    def inverse_cdf(self) -> bool:  # noqa: D102
        return self.nu == 4.0

    def uniforms(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:  # noqa: D102
        if self.nu == 4.0:
            return rng.random(shape, dtype=np.float32)
        return rng.standard_t(self.nu, size=shape).astype(np.float32)

    def transform(self, u: Any, xp: Any = None) -> Any:  # noqa: D102
        if self.nu != 4.0:  # uniforms() drew the noise itself
            return u
        xp = _namespace(xp)
        # closed-form inverse CDF of t_4 at p = 1/2 + s: with sin(theta) = 2 s and
        # phi = theta / 3, t = 4 sin(phi) sqrt(cos(phi) / cos(theta)). The form has no
        # cancellation near s = 0 and takes cos(theta) from (1 - 2s)(1 + 2s), exact in float32
        # near the tails; it is odd in s, so the sign needs no separate pass
        two_s = 2 * (u - (np.float32(0.5) - _HALF_STEP))  # exact: symmetric, never 0 or +-1
        phi = xp.arcsin(two_s) * np.float32(1 / 3)
        cos_theta = xp.sqrt((1 - two_s) * (1 + two_s))
        return 4 * xp.sin(phi) * xp.sqrt(xp.cos(phi) / cos_theta)


@functools.lru_cache(maxsize=1)
def _contaminated_family() -> type:
    """The numpyro distribution of `ContaminatedT` (built on first use: numpyro loads lazily)."""
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    class Contaminated(dist.Distribution):
        """``(1 - rate) StudentT(df, loc, scale) + rate Normal(loc, spread)``."""

        arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
        support = constraints.real
        reparametrized_params = ["loc", "scale"]

        def __init__(self, df, loc, scale, rate, spread, *, validate_args=None):  # noqa: ANN001
            self.df, self.rate, self.spread = df, rate, spread
            self.loc, self.scale = jnp.broadcast_arrays(loc, scale)
            super().__init__(batch_shape=jnp.shape(self.loc), validate_args=validate_args)

        def log_prob(self, value):  # noqa: ANN001, ANN201
            # written out: inner numpyro distributions would validate (and reject) a location
            # the model's own checks are there to report
            nu, r = self.df, value - self.loc
            law = (
                math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
                + math.log1p(-self.rate) - jnp.log(self.scale)
                - (nu + 1) / 2 * jnp.log1p((r / self.scale) ** 2 / nu)
            )  # fmt: skip
            off = (
                math.log(self.rate) - math.log(self.spread) - 0.5 * math.log(2 * math.pi)
                - 0.5 * (r / self.spread) ** 2
            )  # fmt: skip
            return jnp.logaddexp(law, off)

        def sample(self, key, sample_shape=()):  # noqa: ANN001, ANN201
            k_t, k_n, k_u = jax.random.split(key, 3)
            shape = sample_shape + self.batch_shape
            law = self.loc + self.scale * jax.random.t(k_t, self.df, shape)
            off = self.loc + self.spread * jax.random.normal(k_n, shape)
            return jnp.where(jax.random.uniform(k_u, shape) < self.rate, off, law)

    return Contaminated


@dataclass(frozen=True, repr=False)
class ContaminatedT(StudentT):
    """Student-t noise, and a small fraction of runs that failed: the default observation model.

    A public table of runs holds a few that did not train as the others did (a diverged run, a
    wrong learning rate, a model far too large for its tokens). Their losses are not noise
    around the law, and a Student-t alone still bends the fit towards them: its pull on the law
    falls only as ``1 / residual``. Here a fraction ``rate`` of runs failed, and a failed run's
    log loss lies anywhere within about ``spread`` of the law (a normal of that sd: a factor of
    e by default, the distance from a trained model's loss to an untrained one's is one to
    two). This is Tukey's contaminated model (Box and Tiao 1968, "A Bayesian approach to some
    outlier problems"), with the failed runs' spread in log loss rather than in units of the
    noise: a fit cannot shrink its noise scale by calling a run failed.

    A run many noise scales off the law is then explained by the failed part and stops pulling,
    while every other run is scored as by the Student-t. The fit and the pointwise densities
    (`distribution`, `logpdf`: LOO, model comparison) use the whole model, and so do simulated
    data sets (`sample_observed`). Everything predictive is the Student-t's (`predictive`): a
    forecast is of a run that trains as the fitted ones did, and a check flags one that did not.
    """

    rate: float = 0.01
    spread: float = 1.0
    name = "contaminated_t"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.rate, (int, float)) and 0.0 < self.rate < 1.0):
            raise OptionError(
                f"rate must be the fraction of failed runs, in (0, 1); received {self.rate!r}. "
                "The default is rate=0.01; likelihood='student_t' has none."
            )
        ok = isinstance(self.spread, (int, float)) and math.isfinite(self.spread)
        if not (ok and self.spread > 0):
            raise OptionError(
                "spread must be the sd of a failed run's log loss about the law, a positive "
                f"number; received {self.spread!r}. The default is spread=1.0 (a factor of e)."
            )
        object.__setattr__(self, "rate", float(self.rate))
        object.__setattr__(self, "spread", float(self.spread))

    @property
    def predictive(self) -> Likelihood:  # noqa: D102
        return StudentT(self.nu)

    def distribution(self, loc: Any, scale: Any) -> Any:  # noqa: D102
        return _contaminated_family()(self.nu, loc, scale, self.rate, self.spread)

    def logpdf(self, y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:  # noqa: D102
        from scipy import stats

        law = np.log1p(-self.rate) + stats.t.logpdf(y, self.nu, mu, sigma)
        off = math.log(self.rate) + stats.norm.logpdf(y, mu, self.spread)
        return np.logaddexp(law, off)

    def sample_observed(  # noqa: D102
        self, rng: np.random.Generator, shape: tuple[int, ...], scale: float
    ) -> np.ndarray:
        eps = rng.standard_t(self.nu, size=shape)
        off = rng.random(shape) < self.rate
        return np.where(off, self.spread / scale * rng.standard_normal(shape), eps)


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
register_likelihood("contaminated_t", ContaminatedT)
