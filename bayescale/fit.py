"""Posterior inference: ``fit(data, law) -> Fit`` by NUTS, MAP + Laplace, or the Huber point fit.

The result is a frozen `Fit` around an ArviZ `xarray.DataTree` with groups ``posterior``
(parameters in the papers' units and ``sigma``), ``sample_stats``, ``log_likelihood`` (variable
``loss``: the density of each run's log loss), ``observed_data`` (``loss``) and
``constant_data`` (the inputs). Provenance is kept in the tree's attributes.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayescale.data import ScalingData, from_frame
from bayescale.diagnostics import convergence_problems, diagnostic_table, warn_convergence
from bayescale.errors import BayescaleError, ConvergenceWarning
from bayescale.huber import huber_fit
from bayescale.laws import Law, get_law
from bayescale.model import LIKELIHOODS, OBS, build_model, internal_sites, model_inputs
from bayescale.priors import Prior, Priors, resolve_priors

__all__ = ["Fit", "fit", "load_fit", "METHODS"]

METHODS = ("nuts", "map", "huber")
_NUMERIC_STATS = ("diverging", "num_steps", "accept_prob", "energy", "potential_energy")


@dataclass(frozen=True)
class Fit:
    """A fitted scaling law.

    Attributes
    ----------
    tree : xarray.DataTree
        Posterior draws and everything needed to reproduce them (see module notes).
    law : Law
        The law that was fitted.
    priors : Priors
        The priors used (defaults with the user's overrides).
    data : ScalingData
        The runs the law was fitted to.
    """

    tree: Any
    law: Law
    priors: Priors
    data: ScalingData

    @property
    def posterior(self) -> Any:
        """The posterior draws as an `xarray.Dataset` over ``chain, draw``."""
        return self.tree["posterior"].to_dataset()

    @property
    def method(self) -> str:
        """``"nuts"``, ``"map"`` or ``"huber"``."""
        return str(self.tree.attrs["method"])

    @property
    def likelihood(self) -> str:
        """``"student_t"`` or ``"normal"``."""
        return str(self.tree.attrs["likelihood"])

    @property
    def nu(self) -> float:
        """Degrees of freedom of the Student-t likelihood."""
        return float(self.tree.attrs["nu"])

    @property
    def centre(self) -> dict[str, float]:
        """Mean log input per variable, used to centre the amplitudes."""
        return dict(json.loads(self.tree.attrs["centre"]))

    @property
    def param_names(self) -> list[str]:
        """Reported parameters: the law's and ``sigma`` (absent for the Huber fit)."""
        return [k for k in (*self.law.param_names, "sigma") if k in self.posterior]

    def draws(self) -> dict[str, np.ndarray]:
        """Parameter draws flattened over chains, as float64 arrays of shape ``(sample,)``."""
        post = self.posterior
        return {k: post[k].values.reshape(-1).astype(np.float64) for k in self.param_names}

    def problems(self, **thresholds: Any) -> list[str]:
        """Convergence problems (see `bayescale.diagnostics.convergence_problems`)."""
        if self.method != "nuts":
            return list(json.loads(self.tree.attrs.get("problems", "[]")))
        return convergence_problems(self.tree, var_names=self.param_names, **thresholds)

    def summary(self, ci_prob: float = 0.9) -> pd.DataFrame:
        """One row per parameter: mean, sd, median, equal-tailed interval, ESS and r_hat.

        Parameters
        ----------
        ci_prob : float, default 0.9
            Probability mass of the equal-tailed interval.
        """
        post = self.posterior
        lo, hi = (1 - ci_prob) / 2, (1 + ci_prob) / 2
        rows = {}
        for k in self.param_names:
            v = post[k].values.reshape(-1)
            rows[k] = {
                "mean": v.mean(),
                "sd": v.std(ddof=1) if v.size > 1 else np.nan,
                "median": np.median(v),
                f"q{lo * 100:g}": np.quantile(v, lo),
                f"q{hi * 100:g}": np.quantile(v, hi),
            }
        table = pd.DataFrame.from_dict(rows, orient="index")
        if self.method == "nuts" and post.sizes["chain"] > 1:
            for column, values in diagnostic_table(post, self.param_names).items():
                table[column] = values
        table.index.name = "parameter"
        return table

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fit to a netCDF file atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".nc.tmp", dir=path.parent)
        os.close(fd)
        try:
            self.tree.to_netcdf(tmp, engine="h5netcdf")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path

    def __repr__(self) -> str:
        post = self.posterior
        n = post.sizes["chain"] * post.sizes["draw"]
        head = (
            f"Fit(law={self.law.name!r}, method={self.method!r}, likelihood={self.likelihood!r},"
            f" runs={self.data.n_runs}, draws={n})"
        )
        med = ", ".join(f"{k}={float(np.median(post[k].values)):.4g}" for k in self.param_names)
        problems = self.problems()
        tail = f"\n  WARNING: {' '.join(problems)}" if problems else "\n  diagnostics: ok"
        return f"{head}\n  medians: {med}{tail}"

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(repr(self))}</pre>" + self.summary().to_html(
            float_format=lambda x: f"{x:.4g}"
        )


# --------------------------------------------------------------------------------- fitting


def fit(
    data: pd.DataFrame | ScalingData | str | os.PathLike[str],
    law: str | Law = "chinchilla",
    *,
    priors: Mapping[str, Prior] | None = None,
    likelihood: str = "student_t",
    nu: float = 4.0,
    method: str = "nuts",
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    target_accept: float = 0.8,
    dense_mass: bool = True,
    seed: int = 0,
    columns: Mapping[str, str] | None = None,
    variable: str | None = None,
    breaks: int | None = None,
    progress_bar: bool | None = None,
    dropna: bool = False,
) -> Fit:
    """Fit a scaling law to a table of training runs.

    Parameters
    ----------
    data : DataFrame, ScalingData or path
        One run per row with columns ``n_params``, ``n_tokens`` (or ``compute``), ``loss``...;
        see `bayescale.data.from_frame`.
    law : str or Law, default "chinchilla"
        A name in `bayescale.laws.LAWS` or a `Law`.
    priors : mapping, optional
        Parameter -> `Prior`, replacing the defaults of `bayescale.priors.default_priors`.
    likelihood : {"student_t", "normal"}, default "student_t"
        Noise model of log loss; the Student-t is robust to outlying runs.
    nu : float, default 4
        Degrees of freedom of the Student-t.
    method : {"nuts", "map", "huber"}, default "nuts"
        ``"nuts"``: the posterior by NUTS (numpyro), initialised from the MAP.
        ``"map"``: the posterior mode with a Laplace approximation (``num_samples`` draws).
        ``"huber"``: the literature's point estimate (Huber loss, delta = 1e-3, on log
        residuals; L-BFGS from a grid of starts), one draw.
    num_chains, num_warmup, num_samples : int
        NUTS settings (defaults 4, 1000, 1000). Chains run in parallel when JAX has at least
        ``num_chains`` devices (set ``XLA_FLAGS=--xla_force_host_platform_device_count=4``
        before importing JAX), else vectorized on one device.
    target_accept : float, default 0.8
        NUTS target acceptance probability.
    dense_mass : bool, default True
        Adapt a dense mass matrix.
    seed : int, default 0
        Seed of every random choice of the fit.
    columns : mapping, optional
        Canonical name -> your column name.
    variable : str, optional
        Scaling variable of one-variable laws (``power_law``, ``broken_power_law``, ``m4``).
    breaks : int, optional
        Number of breaks of ``broken_power_law`` (1 or 2).
    progress_bar : bool, optional
        Show NUTS progress; default when standard error is a terminal.
    dropna : bool, default False
        Drop invalid runs instead of raising.

    Returns
    -------
    Fit

    Raises
    ------
    DataError
        If the data cannot identify the law.
    PriorError
        If a prior names an unknown parameter.
    ValueError
        If ``law``, ``method`` or ``likelihood`` is unknown.

    Warns
    -----
    ConvergenceWarning
        On divergences, r_hat > 1.01 or low ESS (NUTS), or a failed optimisation (MAP).

    Examples
    --------
    >>> import bayescale
    >>> runs = bayescale.simulate("chinchilla", seed=1)
    >>> bayescale.fit(runs, method="huber").summary().loc["alpha", "mean"].round(1)
    np.float64(0.3)
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}. Available: {', '.join(METHODS)}.")
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}. Available: {', '.join(LIKELIHOODS)}.")
    for name, value in (("num_chains", num_chains), ("num_samples", num_samples)):
        if int(value) < 1:
            raise ValueError(f"{name} must be at least 1; received {value!r}.")
    scaling = from_frame(data, columns=columns, dropna=dropna)
    law_ = get_law(law, variable=variable, breaks=breaks)
    priors_ = resolve_priors(law_, scaling, priors, likelihood)
    scaling.require(law_.variables, len(law_.params) + (method != "huber"), law_.name)
    if "group" in scaling.table.columns and scaling.table["group"].nunique() > 1:
        groups = sorted(scaling.table["group"].unique())
        raise BayescaleError(
            f"the data has {len(groups)} groups ({', '.join(groups[:5])}...); a law is fitted to "
            "one curve. Fit each group: [fit(g, ...) for _, g in frame.groupby('group')]."
        )
    inputs = model_inputs(law_, scaling, priors_)
    centre = {v: float(c) for v, c in inputs.centre.items()}
    attrs = {
        "law": law_.name,
        "law_options": json.dumps(dict(law_.options)),
        "likelihood": likelihood,
        "nu": float(nu),
        "method": method,
        "seed": int(seed),
        "centre": json.dumps(centre),
        "priors": json.dumps({k: p.to_dict() for k, p in priors_.items()}),
        "data_source": scaling.source,
    }
    if method == "huber":
        est, objective = huber_fit(law_, scaling, priors_, seed=seed)
        post = {k: np.full((1, 1), v) for k, v in est.items()}
        attrs["huber_objective"] = objective
        tree = _tree(post, None, None, scaling, law_, attrs)
        return Fit(tree, law_, priors_, scaling)
    families = tuple((k, p.family) for k, p in priors_.items())
    model = build_model(law_, families, likelihood, float(nu))
    import jax

    key_map, key_mcmc = jax.random.split(jax.random.PRNGKey(seed))
    mode, laplace = _map(model, inputs.args(), key_map, num_draws=max(num_samples, num_chains))
    if method == "map":
        problems = [] if laplace.ok else [laplace.message]
        attrs["problems"] = json.dumps(problems)
        samples = {k: v[None] for k, v in laplace.constrained.items()}
        tree = _tree(samples, None, (model, inputs), scaling, law_, attrs)
        if problems:
            warnings.warn(" ".join(problems), ConvergenceWarning, stacklevel=2)
        return Fit(tree, law_, priors_, scaling)
    init = {k: v[:num_chains] for k, v in laplace.unconstrained.items()}
    chain_method = "parallel" if jax.local_device_count() >= num_chains else "vectorized"
    if progress_bar is None:
        progress_bar = bool(getattr(sys.stderr, "isatty", lambda: False)())
    config = (
        model,
        int(num_warmup),
        int(num_samples),
        int(num_chains),
        chain_method,
        bool(dense_mass),
        float(target_accept),
    )
    if progress_bar:
        samples, extra = _run_with_progress(config, key_mcmc, inputs.args(), init)
    else:
        keys = jax.random.split(key_mcmc, num_chains)
        out = _chain_runner(*config)(keys, init, inputs.args())
        samples, extra = ({k: np.asarray(v) for k, v in d.items()} for d in out)
    attrs.update(
        num_warmup=num_warmup,
        chain_method=chain_method,
        dense_mass=int(dense_mass),
        target_accept=float(target_accept),
    )
    tree = _tree(samples, extra, (model, inputs), scaling, law_, attrs)
    result = Fit(tree, law_, priors_, scaling)
    warn_convergence(result.problems(), stacklevel=2)
    return result


@functools.lru_cache(maxsize=16)
def _chain_runner(
    model: Any,
    num_warmup: int,
    num_samples: int,
    num_chains: int,
    chain_method: str,
    dense_mass: bool,
    target_accept: float,
) -> Any:
    """A compiled NUTS sampler for one configuration, reused across fits.

    Data and initial values are arguments of the compiled function (numpyro's `MCMC` builds new
    closures on every run and so recompiles every time), so a second fit of the same law to data
    of the same shape costs sampling time only.
    """
    import jax
    from numpyro.infer import NUTS

    kernel = NUTS(model, dense_mass=dense_mass, target_accept_prob=target_accept)

    def one_chain(key: Any, init: Any, args: tuple[Any, ...]) -> Any:
        state = kernel.init(key, num_warmup, init, model_args=args, model_kwargs={})

        def step(state: Any, _: Any) -> Any:
            state = kernel.sample(state, args, {})
            stats = {
                "diverging": state.diverging,
                "num_steps": state.num_steps,
                "accept_prob": state.accept_prob,
                "energy": state.energy,
                "potential_energy": state.potential_energy,
            }
            return state, (state.z, stats)

        state, _ = jax.lax.scan(step, state, None, length=num_warmup)
        _, (z, stats) = jax.lax.scan(step, state, None, length=num_samples)
        return jax.vmap(kernel.postprocess_fn(args, {}))(z), stats

    if chain_method == "parallel":
        return jax.pmap(one_chain, in_axes=(0, 0, None))
    return jax.jit(jax.vmap(one_chain, in_axes=(0, 0, None)))


def _run_with_progress(
    config: tuple[Any, ...], key: Any, args: tuple[Any, ...], init: Mapping[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run numpyro's `MCMC` with its progress bar (recompiles on every call)."""
    from numpyro.infer import MCMC, NUTS

    model, num_warmup, num_samples, num_chains, chain_method, dense_mass, target_accept = config
    mcmc = MCMC(
        NUTS(model, dense_mass=dense_mass, target_accept_prob=target_accept),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="sequential" if chain_method == "vectorized" else chain_method,
        progress_bar=True,
    )
    mcmc.run(key, *args, init_params=init, extra_fields=_NUMERIC_STATS)
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    extra = {k: np.asarray(v) for k, v in mcmc.get_extra_fields(group_by_chain=True).items()}
    return samples, extra


@dataclass(frozen=True)
class _Laplace:
    unconstrained: dict[str, np.ndarray]
    constrained: dict[str, np.ndarray]
    ok: bool
    message: str


@functools.lru_cache(maxsize=16)
def _map_functions(model: Any) -> tuple[Any, Any, Any]:
    """Jitted pieces of the MAP: multi-start BFGS, value and gradient, Laplace draws.

    All work in the model's unconstrained space (the potential includes the log-Jacobians), in
    float64.
    """
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from jax.scipy.optimize import minimize
    from numpyro.infer import init_to_median
    from numpyro.infer.util import initialize_model

    def parts(key: Any, args: tuple[Any, ...]) -> tuple[Any, Any, Any, Any]:
        # start at the prior median: broad random starts can land on plateaus where a term
        # has vanished (a huge exponent) and the gradient is zero
        info = initialize_model(
            key, model, model_args=args, dynamic_args=True, init_strategy=init_to_median()
        )
        z_init, unravel = ravel_pytree(info.param_info.z)

        def f(z: Any) -> Any:
            value = info.potential_fn(*args)(unravel(z))
            return jnp.where(jnp.isfinite(value), value, jnp.inf)

        return f, z_init, unravel, info.postprocess_fn(*args)

    def starts(key: Any, args: tuple[Any, ...], num_starts: int) -> Any:
        k0, k1 = jax.random.split(key)
        f, z_init, _, _ = parts(k0, args)
        noise = jax.random.uniform(k1, (num_starts, z_init.size), minval=-0.5, maxval=0.5)
        z0 = jnp.concatenate([z_init[None], z_init + noise])
        res = jax.vmap(lambda z: minimize(f, z, method="BFGS", options={"maxiter": 200}))(z0)
        return res.x, jnp.where(jnp.isfinite(res.fun), res.fun, jnp.inf)

    def value_and_grad(z: Any, key: Any, args: tuple[Any, ...]) -> Any:
        return jax.value_and_grad(parts(key, args)[0])(z)

    def laplace(mode: Any, key: Any, args: tuple[Any, ...], num_draws: int) -> Any:
        k0, k1 = jax.random.split(key)
        f, _, unravel, postprocess = parts(k0, args)
        hess = jax.hessian(f)(mode)
        hess = 0.5 * (hess + hess.T)
        chol = jnp.linalg.cholesky(jnp.linalg.inv(hess))
        draws = mode + jax.random.normal(k1, (num_draws, mode.size)) @ chol.T
        unconstrained = jax.vmap(unravel)(draws)
        return hess, unconstrained, jax.vmap(postprocess)(unconstrained)

    return (
        jax.jit(starts, static_argnums=2),
        jax.jit(value_and_grad),
        jax.jit(laplace, static_argnums=3),
    )


def _map(model: Any, args: tuple[Any, ...], key: Any, num_draws: int) -> tuple[Any, _Laplace]:
    """The posterior mode (multi-start BFGS polished by L-BFGS-B) and a Laplace approximation."""
    import jax
    import scipy.optimize

    with jax.enable_x64(True):
        args64 = jax.tree_util.tree_map(
            lambda a: None if a is None else np.asarray(a, np.float64),
            args,
            is_leaf=lambda a: a is None,
        )
        k_init, k_draw = jax.random.split(jax.random.PRNGKey(np.asarray(key)[-1]))
        starts, value_and_grad, laplace = _map_functions(model)
        z, fz = (np.asarray(a) for a in starts(k_init, args64, 7))
        best = np.argsort(fz)[:2]

        def fg(x: np.ndarray) -> tuple[float, np.ndarray]:
            v, g = value_and_grad(x, k_init, args64)
            return float(v), np.asarray(g, np.float64)

        results = [scipy.optimize.minimize(fg, z[i], jac=True, method="L-BFGS-B") for i in best]
        res = min(results, key=lambda r: r.fun if np.isfinite(r.fun) else np.inf)
        mode = res.x
        hess, unc, con = laplace(mode, k_draw, args64, num_draws)
        eig = np.linalg.eigvalsh(np.asarray(hess))
        finite = all(np.all(np.isfinite(np.asarray(v))) for v in con.values())
        ok = bool(np.isfinite(res.fun) and eig.min() > 0 and finite)
        message = (
            ""
            if ok
            else "the MAP optimisation did not reach a proper mode (the Hessian of the "
            "negative log posterior is not positive definite or not finite); the Laplace "
            "approximation is not valid. Use method='nuts' or tighter priors."
        )
        unc_np = {k: np.asarray(v, np.float32) for k, v in unc.items()}
        con_np = {k: np.asarray(v, np.float64) for k, v in con.items()}
    if not ok:  # start NUTS from the mode itself rather than from invalid draws
        unc_np = {k: np.repeat(np.asarray(v)[:1], len(v), axis=0) for k, v in unc_np.items()}
        mode_dict = jax.tree_util.tree_map(lambda v: v[0], unc_np)
        del mode_dict
    return mode, _Laplace(unc_np, con_np, ok, message)


def _tree(
    samples: Mapping[str, np.ndarray],
    extra: Mapping[str, np.ndarray] | None,
    model_and_inputs: tuple[Any, Any] | None,
    data: ScalingData,
    law: Law,
    attrs: Mapping[str, Any],
) -> Any:
    """Assemble the DataTree of a fit from draws shaped ``(chain, draw)``."""
    import arviz_base as azb

    import bayescale

    hidden = set(internal_sites(law))
    posterior = {k: np.asarray(v) for k, v in samples.items() if k not in hidden}
    groups: dict[str, dict[str, Any]] = {"posterior": posterior}
    dims: dict[str, list[str]] = {OBS: ["run"]}
    if extra is not None:
        stats = {
            "diverging": extra["diverging"].astype(bool),
            "n_steps": extra["num_steps"],
            "acceptance_rate": extra["accept_prob"],
            "energy": extra["energy"],
            "lp": -extra["potential_energy"],
        }
        groups["sample_stats"] = stats
    if model_and_inputs is not None:
        groups["log_likelihood"] = {OBS: _log_likelihood(*model_and_inputs, samples)}
    groups["observed_data"] = {OBS: data.loss}
    const = {c: data.table[c].to_numpy() for c in data.table.columns if c != "loss"}
    groups["constant_data"] = {
        c: (v.astype(str) if v.dtype == object else v) for c, v in const.items()
    }
    dims.update({c: ["run"] for c in const})
    tree = azb.from_dict(groups, dims=dims, coords={"run": np.arange(data.n_runs)})
    tree.attrs.update(attrs)
    tree.attrs["bayescale_version"] = bayescale.__version__
    return tree


@functools.lru_cache(maxsize=16)
def _log_likelihood_fn(model: Any) -> Any:
    import jax
    from numpyro.infer import log_likelihood

    return jax.jit(lambda flat, args: log_likelihood(model, flat, *args)[OBS])


def _log_likelihood(model: Any, inputs: Any, samples: Mapping[str, np.ndarray]) -> np.ndarray:
    first = next(iter(samples.values()))
    n_chain, n_draw = first.shape[:2]
    flat = {k: np.reshape(v, (n_chain * n_draw, *v.shape[2:])) for k, v in samples.items()}
    ll = _log_likelihood_fn(model)(flat, inputs.args())
    return np.asarray(ll).reshape(n_chain, n_draw, -1)


# --------------------------------------------------------------------------------- loading


def load_fit(path: str | os.PathLike[str]) -> Fit:
    """Read a fit written by `Fit.save`.

    Raises
    ------
    BayescaleError
        If the file is not a bayescale fit, or its law is not registered in this session.
    """
    import xarray as xr

    path = Path(path)
    if not path.is_file():
        raise BayescaleError(f"no such file: {str(path)!r}. Pass the path written by Fit.save.")
    try:
        with xr.open_datatree(path, engine="h5netcdf") as handle:
            tree = handle.load()
    except (OSError, ValueError) as exc:
        raise BayescaleError(f"could not read {str(path)!r} as a bayescale fit: {exc}") from exc
    if "law" not in tree.attrs or "posterior" not in tree.children:
        raise BayescaleError(
            f"{str(path)!r} is a netCDF file but not a bayescale fit (no 'law' attribute)."
        )
    options = json.loads(tree.attrs["law_options"])
    law = get_law(str(tree.attrs["law"]), **options)
    priors = Priors({k: Prior.from_dict(v) for k, v in json.loads(tree.attrs["priors"]).items()})
    const = tree["constant_data"].to_dataset()
    table = pd.DataFrame({c: const[c].values for c in const.data_vars})
    table["loss"] = tree["observed_data"]["loss"].values
    data = ScalingData(table=table, source=str(tree.attrs.get("data_source", path)))
    return Fit(tree, law, priors, data)
