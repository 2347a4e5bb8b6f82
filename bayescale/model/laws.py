"""Scaling laws as pure JAX functions in log space, and their registry.

A law maps its parameters (in the papers' units: ``E``, ``A``, ``alpha``, ...) and the natural
logarithms of its input variables to the natural logarithm of the predicted loss. Working in log
space keeps every sum of power-law terms stable (``jnp.logaddexp``) and matches the likelihood,
which is stated on log loss.

Each parameter declares a *role* (``floor``, ``amplitude``, ``exponent``, ...). The role fixes
how the parameter is sampled (amplitudes are sampled centred at the data, see
`bayescale.model.build`) and which default prior it gets (`bayescale.model.priors.default_priors`).

Adding a law
------------
Write ``fn(params, logx) -> log_loss`` with ``jax.numpy`` only, then call `register_law` with the
parameter names and roles; every test parametrized over `LAWS` picks it up. See
``docs/developer.md`` for the copy-and-fill skeleton.
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import jax.numpy as jnp

from bayescale.errors import LawError
from bayescale.model.distributions import Prior

__all__ = [
    "LAWS",
    "Law",
    "Param",
    "builtin_unchanged",
    "check_fingerprint",
    "declaration",
    "fingerprint",
    "fingerprint_record",
    "get_law",
    "register_law",
    "ROLES",
]

Array = Any
LawFn = Callable[[Mapping[str, Array], Mapping[str, Array]], Array]

ROLES = {
    "floor": "irreducible loss, positive and below the smallest observed loss",
    "amplitude": "coefficient of a power-law term, sampled as the term's size at the data centre",
    "exponent": "positive power-law exponent",
    "exponent_change": "change of the exponent at a break (either sign)",
    "location": "position of a break, inside the observed range of the variable",
    "sharpness": "width of a break in natural-log units of the variable (small = sharp)",
    "scale": "a positive scale in the variable's units (sampled relative to the data centre)",
    "ceiling": "upper bound of a bounded metric, above the largest observed value",
    "shape": "positive shape parameter",
    "retention": "positive decay constant (in repetitions)",
}


@dataclass(frozen=True)
class Param:
    """One parameter of a law.

    Attributes
    ----------
    name : str
        Name as in the paper (``"E"``, ``"A"``, ``"alpha"``, ...); also the posterior variable.
    role : str
        One of `ROLES`; sets the sampling transform and the default prior.
    variable : str, optional
        For ``amplitude``, ``scale`` and ``location``: the input variable the parameter is
        measured against (its log is centred at that variable's mean log).
    exponent : str, optional
        For ``amplitude``: the exponent paired with it, so that ``log A = log A_c +
        exponent * mean(log x)`` (an exact, volume-preserving reparameterisation).
    prior : Prior, optional
        A default prior that replaces the role's default.
    """

    name: str
    role: str
    variable: str | None = None
    exponent: str | None = None
    prior: Prior | None = None


@dataclass(frozen=True, eq=False)
class Law:
    """A registered scaling law.

    Attributes
    ----------
    name : str
        Registry key.
    fn : callable
        ``fn(params, logx) -> log_loss``: pure JAX; ``params`` maps names to arrays (papers'
        units), ``logx`` maps variable names to log inputs; all broadcast together.
    variables : tuple of str
        Input columns the law needs (``"n_params"``, ``"n_tokens"``, ...).
    params : tuple of Param
        Parameters in sampling order.
    description, reference : str
        Formula and citation for printing.
    options : dict
        The options the law was built with (for example the variable of a one-variable law).
    """

    name: str
    fn: LawFn
    variables: tuple[str, ...]
    params: tuple[Param, ...]
    description: str = ""
    reference: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    factory: Callable[..., Law] | None = None

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the parameters, in order."""
        return tuple(p.name for p in self.params)

    def __call__(self, params: Mapping[str, Array], **inputs: Array) -> Array:
        """Evaluate the law on raw (not log) inputs and return the loss.

        Examples
        --------
        >>> law = get_law("chinchilla")
        >>> p = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
        >>> round(float(law(p, n_params=7e10, n_tokens=1.4e12)), 3)
        1.937
        """
        logx = {v: jnp.log(jnp.asarray(inputs[v], dtype=float)) for v in self.variables}
        return jnp.exp(self.fn(params, logx))

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"Law({self.name!r}{', ' + opts if opts else ''}: {self.description})"


LAWS: dict[str, Law] = {}


def register_law(
    name: str,
    fn: LawFn,
    *,
    variables: tuple[str, ...],
    params: tuple[Param, ...] | Mapping[str, str],
    description: str = "",
    reference: str = "",
    factory: Callable[..., Law] | None = None,
    overwrite: bool = False,
) -> Law:
    """Register a law so that ``fit(data, law=name)`` can use it.

    Parameters
    ----------
    name : str
        Registry key.
    fn : callable
        ``fn(params, logx) -> log_loss`` in pure JAX.
    variables : tuple of str
        Input columns (canonical names or any numeric column of the data).
    params : tuple of Param, or mapping name -> role
        Parameters; a mapping gives each its role with no centring.
    description, reference : str
        Printed with the law.
    factory : callable, optional
        ``factory(**options) -> Law`` for laws with options (such as the variable).
    overwrite : bool, default False
        Replace an existing entry of the same name.

    Returns
    -------
    Law

    Raises
    ------
    LawError
        If the name is taken (without ``overwrite``) or empty; ``variables`` is not a tuple of
        names; a parameter is repeated, named ``sigma``, or badly declared (role, variable,
        exponent); or ``fn`` does not take ``(params, logx)`` and return one value per run.
    """
    if not isinstance(name, str) or not name:
        raise LawError(f"a law's name must be a non-empty string; received {name!r}.")
    if isinstance(variables, str) or not all(isinstance(v, str) for v in variables):
        raise LawError(
            f"law {name!r}: variables must be a tuple of column names; received "
            f"{variables!r}. For example variables=({variables!r},)."
            if isinstance(variables, str)
            else f"law {name!r}: variables must be a tuple of column names; received {variables!r}."
        )
    if isinstance(params, Mapping):
        params = tuple(Param(k, r) for k, r in params.items())
    _check_params(name, tuple(params), tuple(variables))
    if name in LAWS and not overwrite:
        raise LawError(f"law {name!r} is already registered. Pass overwrite=True to replace it.")
    _check_fn(name, fn, tuple(variables), tuple(params))
    law = Law(name, fn, tuple(variables), tuple(params), description, reference, {}, factory)
    LAWS[name] = law
    return law


def _check_params(law: str, params: tuple[Param, ...], variables: tuple[str, ...]) -> None:
    """Refuse parameter declarations that the model could not sample."""
    names = [p.name for p in params]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise LawError(f"law {law!r} declares parameters {dup} more than once; names: {names}.")
    if "sigma" in names or any(n.startswith("misfit_") or n.startswith("_") for n in names):
        raise LawError(
            f"law {law!r}: parameter names 'sigma', 'misfit_*' and '_*' are taken by the "
            f"model (the noise scale, the misfit, internal sites); received {names}. Rename "
            "the parameter (for example 'sigma_0')."
        )
    seen: set[str] = set()
    for p in params:
        if p.role not in ROLES:
            raise LawError(
                f"parameter {p.name!r} has unknown role {p.role!r}. Roles: {sorted(ROLES)}."
            )
        if p.role in ("amplitude", "scale", "location") and p.variable not in variables:
            raise LawError(
                f"law {law!r}: {p.role} {p.name!r} needs variable= one of {list(variables)}; "
                f"received {p.variable!r}. Use Param({p.name!r}, {p.role!r}, variable=...)."
            )
        if p.role == "amplitude" and p.exponent not in seen:
            raise LawError(
                f"law {law!r}: amplitude {p.name!r} needs exponent= naming a parameter declared "
                f"before it; received {p.exponent!r}. Declared so far: {sorted(seen)}."
            )
        seen.add(p.name)


def _check_fn(name: str, fn: Any, variables: tuple[str, ...], params: tuple[Param, ...]) -> None:
    """Refuse a law function that cannot be called as ``fn(params, logx)`` -> one value per run.

    Traced abstractly (`jax.make_jaxpr`: no computation) twice: scalar parameters and three
    runs, then parameters of shape (2, 1) and seven runs, as forecasts broadcast draws over
    points. A declared parameter that no path of the trace reaches from the output is refused.
    """
    if not callable(fn):
        raise LawError(f"law {name!r}: fn must be a function fn(params, logx); received {fn!r}.")
    import inspect

    try:
        inspect.signature(fn).bind({}, {})
    except TypeError as exc:
        raise LawError(
            f"law {name!r}: fn must take two arguments, fn(params, logx); its signature is "
            f"{inspect.signature(fn)} ({exc})."
        ) from None
    except ValueError:  # no signature (a builtin or C function): the trace below decides
        pass
    names = [p.name for p in params]

    def trace(param_shape: tuple[int, ...], n_runs: int) -> tuple[Any, Any]:
        p_in = {n: jax.ShapeDtypeStruct(param_shape, jnp.float32) for n in names}
        x_in = {v: jax.ShapeDtypeStruct((n_runs,), jnp.float32) for v in variables}
        try:
            return jax.make_jaxpr(fn, return_shape=True)(p_in, x_in)
        except Exception as exc:  # any failure to trace is a badly declared law
            raise LawError(
                f"law {name!r}: fn(params, logx) failed with params {names} of shape "
                f"{param_shape} and logx over {list(variables)} ({type(exc).__name__}: {exc}). "
                "It may read a parameter or variable that is not declared, or use NumPy "
                "instead of jax.numpy."
            ) from exc

    # one value per run, whatever the number of runs (3, then 7: a fixed-length output fails
    # one of them), broadcast over a leading axis of parameter draws as forecasts use it
    for param_shape, n_runs, expected in (((), 3, (3,)), ((2, 1), 7, (2, 7))):
        jaxpr, out = trace(param_shape, n_runs)
        if getattr(out, "shape", None) != expected:
            raise LawError(
                f"law {name!r}: fn(params, logx) must return one log loss per run, broadcast "
                f"with the parameters: shape {expected} for params of shape {param_shape} and "
                f"{n_runs} runs; it returned {out!r}. Compute from logx with jax.numpy "
                "(jnp.log(p['E']) + 0 * logx[...] for a constant); do not build arrays of a "
                "fixed length."
            )
    unused = sorted(set(names) - _used_inputs(jaxpr, names))
    if unused:
        raise LawError(
            f"law {name!r}: fn ignores the declared parameter(s) {unused}: the log loss does not "
            "depend on them, so no data can inform them (the fit would return their prior). "
            "Use them in fn, or leave them out of params."
        )


def _used_inputs(closed: Any, names: list[str]) -> set[str]:
    """The parameters among ``names`` (the first inputs of the traced law) its output uses.

    A walk back through the jaxpr from its outputs; an equation with a nested jaxpr counts
    as using all its inputs, so a parameter is reported unused only when no path reaches it.
    """
    from jax.extend.core import Literal

    jaxpr = closed.jaxpr
    needed = {v for v in jaxpr.outvars if not isinstance(v, Literal)}
    for eqn in reversed(jaxpr.eqns):
        if any(v in needed for v in eqn.outvars):
            needed.update(v for v in eqn.invars if not isinstance(v, Literal))
    # make_jaxpr flattens the params dict in sorted key order, before logx
    order = sorted(names)
    return {n for n, v in zip(order, jaxpr.invars[: len(order)], strict=True) if v in needed}


def get_law(law: str | Law, **options: Any) -> Law:
    """Return a registered law, built with ``options`` (for example ``variable="compute"``).

    Raises
    ------
    ValueError
        If the name is unknown (with the available names and a suggestion) or an option is
        not accepted by the law.
    """
    if isinstance(law, Law):
        base = law
    else:
        if law not in LAWS:
            near = difflib.get_close_matches(str(law), LAWS, n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise LawError(f"unknown law {law!r}. Available: {', '.join(LAWS)}.{hint}")
        base = LAWS[law]
    options = {k: v for k, v in options.items() if v is not None}
    if not options or options == dict(base.options):
        return base
    if base.factory is None:
        raise LawError(
            f"law {base.name!r} takes no options; received {sorted(options)}. "
            f"It uses the variables {list(base.variables)}."
        )
    merged = {**base.options, **options}
    try:
        return base.factory(**merged)
    except TypeError as exc:
        raise LawError(f"law {base.name!r}: bad options {sorted(options)}: {exc}") from exc


# ----------------------------------------------------------------------------------- the laws


@functools.cache
def _power_law(variable: str = "n_params") -> Law:
    def fn(p: Mapping[str, Array], logx: Mapping[str, Array]) -> Array:
        return jnp.logaddexp(jnp.log(p["E"]), jnp.log(p["A"]) - p["alpha"] * logx[variable])

    return Law(
        "power_law",
        fn,
        (variable,),
        (
            Param("E", "floor"),
            Param("alpha", "exponent"),
            Param("A", "amplitude", variable=variable, exponent="alpha"),
        ),
        f"L = E + A * {variable}^-alpha",
        "Hestness et al. 2017, arXiv:1712.00409",
        {"variable": variable},
        _power_law,
    )


def _chinchilla_fn(p: Mapping[str, Array], logx: Mapping[str, Array]) -> Array:
    # chained logaddexp: the same value as a stacked logsumexp, which XLA on CPU does not
    # fuse (see the design notes, Measurements behind the code)
    return jnp.logaddexp(
        jnp.logaddexp(jnp.log(p["E"]), jnp.log(p["A"]) - p["alpha"] * logx["n_params"]),
        jnp.log(p["B"]) - p["beta"] * logx["n_tokens"],
    )


def _kaplan_fn(p: Mapping[str, Array], logx: Mapping[str, Array]) -> Array:
    ratio = p["alpha_N"] / p["alpha_D"]
    inner = jnp.logaddexp(
        ratio * (jnp.log(p["N_c"]) - logx["n_params"]), jnp.log(p["D_c"]) - logx["n_tokens"]
    )
    return p["alpha_D"] * inner


@functools.cache
def _broken_power_law(variable: str = "n_params", breaks: int = 1, floor: bool = True) -> Law:
    if breaks not in (1, 2):
        raise LawError(f"breaks must be 1 or 2; received {breaks!r}.")
    if not isinstance(floor, bool):
        raise LawError(f"floor must be True or False; received {floor!r}.")
    idx = range(1, breaks + 1)

    def fn(p: Mapping[str, Array], logx: Mapping[str, Array]) -> Array:
        x = logx[variable]
        log_term = jnp.log(p["b"]) - p["c0"] * x
        for i in idx:
            f = p[f"f{i}"]
            log_term = log_term - p[f"c{i}"] * f * jax.nn.softplus((x - jnp.log(p[f"d{i}"])) / f)
        return jnp.logaddexp(jnp.log(p["E"]), log_term) if floor else log_term

    params = [Param("E", "floor")] if floor else []
    params += [
        Param("c0", "exponent"),
        Param("b", "amplitude", variable=variable, exponent="c0"),
    ]
    for i in idx:
        params += [
            Param(f"c{i}", "exponent_change"),
            Param(f"d{i}", "location", variable=variable),
            Param(f"f{i}", "sharpness"),
        ]
    return Law(
        "broken_power_law",
        fn,
        (variable,),
        tuple(params),
        ("L = E + " if floor else "L = ") + "b x^-c0 prod_i (1 + (x/d_i)^(1/f_i))^(-c_i f_i)",
        "Caballero et al. 2023, Broken Neural Scaling Laws, arXiv:2210.14891",
        {"variable": variable, "breaks": breaks, "floor": floor},
        _broken_power_law,
    )


def _effective(log_total: Array, log_unique: Array, r_star: Array) -> Array:
    """Log of U + U R* (1 - exp(-R/R*)) with R = total/unique - 1 (Muennighoff et al. eq. 5)."""
    repeats = jnp.expm1(log_total - log_unique)
    return log_unique + jnp.log1p(-r_star * jnp.expm1(-repeats / r_star))


def _data_constrained_fn(p: Mapping[str, Array], logx: Mapping[str, Array]) -> Array:
    log_a, log_b = jnp.log(p["A"]), jnp.log(p["B"])
    alpha, beta = p["alpha"], p["beta"]
    log_u_d = jnp.minimum(logx["unique_tokens"], logx["n_tokens"])
    log_d_eff = _effective(logx["n_tokens"], log_u_d, p["R_D"])
    # U_N = min(N, N_opt(U_D)): the compute-optimal size for U_D tokens under this law,
    # from D_opt = G^-1 (C/6)^b, N_opt = G (C/6)^a, G = (alpha A / (beta B))^(1/(alpha+beta)).
    log_g = (jnp.log(alpha) + log_a - jnp.log(beta) - log_b) / (alpha + beta)
    log_n_opt = log_g + (beta / alpha) * (log_g + log_u_d)
    log_u_n = jnp.minimum(logx["n_params"], log_n_opt)
    log_n_eff = _effective(logx["n_params"], log_u_n, p["R_N"])
    return jnp.logaddexp(
        jnp.logaddexp(jnp.log(p["E"]), log_a - alpha * log_n_eff), log_b - beta * log_d_eff
    )


def _m4_fn(p: Mapping[str, Array], logx: Mapping[str, Array]) -> Array:
    """(L - eps_inf) / (eps_0 - L)^alpha = beta x^-c, solved for L (Alabdulmohsin et al. 2022).

    With L = eps_inf + (eps_0 - eps_inf) u and t = logit(u), the equation reads
    h(t) = -softplus(-t) + alpha softplus(t) = log beta - c log x - (1 - alpha) log(eps_0 -
    eps_inf), with h strictly increasing; it is solved by bisection and differentiated
    implicitly (`jax.lax.custom_root`).
    """
    eps_inf, eps_0, alpha = p["eps_inf"], p["eps_0"], p["alpha"]
    log_delta = jnp.log(eps_0 - eps_inf)
    rhs = jnp.log(p["beta"]) - p["c"] * logx["data_size"] - (1.0 - alpha) * log_delta
    alpha, rhs = jnp.broadcast_arrays(alpha, rhs)

    def h(t: Array) -> Array:
        return -jax.nn.softplus(-t) + alpha * jax.nn.softplus(t) - rhs

    def bisect(f: Callable[[Array], Array], t0: Array) -> Array:
        lo, hi = jnp.full_like(t0, -60.0), jnp.full_like(t0, 60.0)

        def body(_: int, bounds: tuple[Array, Array]) -> tuple[Array, Array]:
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            up = f(mid) > 0
            return jnp.where(up, lo, mid), jnp.where(up, mid, hi)

        lo, hi = jax.lax.fori_loop(0, 48, body, (lo, hi))
        return 0.5 * (lo + hi)

    def tangent_solve(g: Callable[[Array], Array], y: Array) -> Array:
        return y / g(jnp.ones_like(y))  # h is elementwise: its Jacobian is diagonal

    t = jax.lax.custom_root(h, jnp.zeros_like(rhs), bisect, tangent_solve)
    return jnp.logaddexp(jnp.log(eps_inf), log_delta - jax.nn.softplus(-t))


@functools.cache
def _m4(variable: str = "data_size") -> Law:
    def fn(p: Mapping[str, Array], logx: Mapping[str, Array]) -> Array:
        return _m4_fn(p, {"data_size": logx[variable]})

    return Law(
        "m4",
        fn,
        (variable,),
        (
            Param("eps_inf", "floor"),
            Param("eps_0", "ceiling"),
            Param("alpha", "shape"),
            Param("c", "exponent"),
            Param("beta", "amplitude", variable=variable, exponent="c"),
        ),
        "(L - eps_inf) / (eps_0 - L)^alpha = beta x^-c",
        "Alabdulmohsin et al. 2022, Revisiting Neural Scaling Laws, arXiv:2209.06640",
        {"variable": variable},
        _m4,
    )


def _register_builtin() -> None:
    for law in (_power_law(), _broken_power_law(), _m4()):
        LAWS[law.name] = law
    register_law(
        "chinchilla",
        _chinchilla_fn,
        variables=("n_params", "n_tokens"),
        params=(
            Param("E", "floor"),
            Param("alpha", "exponent"),
            Param("beta", "exponent"),
            Param("A", "amplitude", variable="n_params", exponent="alpha"),
            Param("B", "amplitude", variable="n_tokens", exponent="beta"),
        ),
        description="L = E + A / N^alpha + B / D^beta",
        reference="Hoffmann et al. 2022, arXiv:2203.15556",
    )
    register_law(
        "kaplan",
        _kaplan_fn,
        variables=("n_params", "n_tokens"),
        params=(
            Param("alpha_N", "exponent"),
            Param("alpha_D", "exponent"),
            Param("N_c", "scale", variable="n_params"),
            Param("D_c", "scale", variable="n_tokens"),
        ),
        description="L = ((N_c / N)^(alpha_N / alpha_D) + D_c / D)^alpha_D",
        reference="Kaplan et al. 2020, arXiv:2001.08361, eq. (1.5)",
    )
    register_law(
        "data_constrained",
        _data_constrained_fn,
        variables=("n_params", "n_tokens", "unique_tokens"),
        params=(
            Param("E", "floor"),
            Param("alpha", "exponent"),
            Param("beta", "exponent"),
            Param("A", "amplitude", variable="n_params", exponent="alpha"),
            Param("B", "amplitude", variable="n_tokens", exponent="beta"),
            Param("R_D", "retention"),
            Param("R_N", "retention"),
        ),
        description="L = E + A / N'^alpha + B / D'^beta, D' = U + U R_D (1 - exp(-R / R_D)), "
        "N' alike",
        reference="Muennighoff et al. 2023, Scaling Data-Constrained Language Models, "
        "arXiv:2305.16264",
    )


def declaration(law: Law) -> list[list[str | None]]:
    """The law's variables and parameters as plain lists, to store with a fit and compare.

    One ``[name, role, variable, exponent]`` per parameter, after ``["variables", ...]``.
    """
    head: list[str | None] = ["variables", *law.variables]
    return [head, *([p.name, p.role, p.variable, p.exponent] for p in law.params)]


#: at most this many of a fit's runs are kept in its law's fingerprint (all of them when fewer)
FINGERPRINT_RUNS = 1024
#: decades beyond the data's range, on each side, that the fingerprint's grid reaches
FINGERPRINT_DECADES = 3.0
#: at most this many points on the fingerprint's grid (levels per variable shrink with more)
FINGERPRINT_GRID = 256
#: posterior draws in a fingerprint besides the medians
FINGERPRINT_DRAWS = 3


def fingerprint(law: Law, params: Mapping[str, Any], inputs: Mapping[str, Any]) -> list[float]:
    """The law's log loss at ``params`` and the points ``inputs``, in float64.

    ``params`` maps each parameter to a number or to one value per point; ``inputs`` maps each
    variable to its values at the points. The same function on the same float64 inputs gives
    the same values to rounding, so a stored fingerprint tells whether a law registered later
    under the same name is the function a fit was made with.
    """
    import numpy as np

    n = len(np.asarray(next(iter(inputs.values())))) if inputs else 0
    with jax.enable_x64(True):
        p = {k: jnp.asarray(np.asarray(params[k], np.float64)) for k in law.param_names}
        logx = {v: jnp.log(jnp.asarray(np.asarray(inputs[v], np.float64))) for v in law.variables}
        values = np.asarray(law.fn(p, logx), np.float64)
    return [float(x) for x in np.broadcast_to(values, (n,))]


def fingerprint_record(
    law: Law, posterior: Mapping[str, Any], inputs: Mapping[str, Any]
) -> dict[str, Any]:
    """What a saved fit keeps of its law: its values where forecasts will use it.

    The law is evaluated at the posterior medians and at `FINGERPRINT_DRAWS` draws spread over
    the posterior (``posterior``: arrays shaped ``(chain, draw, ...)``), on the fit's runs (all
    of them up to `FINGERPRINT_RUNS`, else that many spread over each variable's range) and on
    a grid that reaches `FINGERPRINT_DECADES` decades beyond the data on each side, where
    forecasts extrapolate. `check_fingerprint` compares a registered law with the record.
    """
    import itertools

    import numpy as np

    columns = {v: np.asarray(inputs[v], np.float64) for v in law.variables}
    n = len(next(iter(columns.values()))) if columns else 0
    if n > FINGERPRINT_RUNS:  # the extremes of each variable, then runs spread over its order
        keep = {int(i) for c in columns.values() for i in (np.argmin(c), np.argmax(c))}
        order = np.argsort(columns[law.variables[0]], kind="stable")
        spread = order[np.linspace(0, n - 1, FINGERPRINT_RUNS - len(keep)).round().astype(int)]
        runs = sorted(keep | {int(i) for i in spread})
    else:
        runs = list(range(n))
    levels = max(2, min(9, int(FINGERPRINT_GRID ** (1 / max(len(columns), 1)))))
    axes = []
    for c in columns.values():
        logs = np.log10(c[np.isfinite(c) & (c > 0)])
        lo, hi = (float(logs.min()), float(logs.max())) if logs.size else (0.0, 0.0)
        axes.append(np.linspace(lo - FINGERPRINT_DECADES, hi + FINGERPRINT_DECADES, levels))
    grid = np.array(list(itertools.product(*axes))).reshape(-1, len(columns))
    points = {
        v: np.concatenate([c[runs], 10.0 ** grid[:, j]]) for j, (v, c) in enumerate(columns.items())
    }
    sets = _posterior_points(posterior, law.param_names)
    m = len(next(iter(points.values()))) if points else 0
    params = {k: np.repeat([s[k] for s in sets], m) for k in law.param_names}
    tiled = {v: np.tile(x, len(sets)) for v, x in points.items()}
    values = np.asarray(fingerprint(law, params, tiled), np.float64).reshape(len(sets), m)
    return {
        "params": sets,
        "points": {v: [float(x) for x in x_] for v, x_ in points.items()},
        "log_loss": [[float(x) for x in row] for row in values],
    }


def _posterior_points(posterior: Mapping[str, Any], names: tuple[str, ...]) -> list[dict]:
    """The medians, then draws spread over the posterior (per-group values: one group each)."""
    import numpy as np

    flat = {}
    for k in names:
        a = np.asarray(posterior[k], np.float64)
        flat[k] = a.reshape(a.shape[0] * a.shape[1] if a.ndim >= 2 else a.size, -1)
    medians = {}
    for k, a in flat.items():
        finite = a[np.isfinite(a)]
        medians[k] = float(np.median(finite)) if finite.size else math.nan
    sets = [medians]
    if flat:
        ok = np.flatnonzero(np.all([np.isfinite(a).all(axis=1) for a in flat.values()], axis=0))
        picks = (
            ok[np.linspace(0, len(ok) - 1, FINGERPRINT_DRAWS).round().astype(int)]
            if len(ok)
            else []
        )
        for j, i in enumerate(dict.fromkeys(int(i) for i in picks)):
            sets.append({k: float(a[i, j % a.shape[1]]) for k, a in flat.items()})
    return sets


def check_fingerprint(law: Law, record: Mapping[str, Any], inputs: Mapping[str, Any]) -> str | None:
    """Where ``law`` differs from a `fingerprint_record` (a sentence), or None where it agrees.

    ``inputs`` (the fit's runs) serve records of earlier versions, which kept the law's values
    at the medians on the first runs only (``params`` a mapping, no ``points``).
    """
    import numpy as np

    if "points" in record:
        sets, points = list(record["params"]), dict(record["points"])
    else:
        sets, k = [dict(record["params"])], len(record["log_loss"])
        points = {v: np.asarray(inputs[v], np.float64)[:k] for v in law.variables}
    then = np.asarray(record["log_loss"], np.float64).reshape(len(sets), -1)
    for s, row in zip(sets, then, strict=True):
        now = np.asarray(fingerprint(law, s, points), np.float64)
        same = np.isclose(now, row, rtol=1e-9, atol=1e-12, equal_nan=True)
        if not same.all():
            i = int(np.argmin(same))
            at = ", ".join(f"{v}={float(np.asarray(x)[i]):.4g}" for v, x in points.items())
            where = ", ".join(f"{k}={float(x):.4g}" for k, x in s.items())
            return (
                f"at {at} and {where} its log loss is {now[i]:.6g}, the saved fit's law "
                f"gave {row[i]:.6g}"
            )
    return None


def builtin_unchanged(name: str) -> bool:
    """Whether the law registered as ``name`` is bayescale's own, as shipped."""
    return name in _BUILTIN and LAWS.get(name) is _BUILTIN[name]


_register_builtin()
_BUILTIN = dict(LAWS)
LN10 = math.log(10.0)


def with_options(law: Law, **options: Any) -> Law:
    """Return ``law`` rebuilt with new options (alias of `get_law` for a `Law`)."""
    return get_law(law, **options) if options else replace(law)
