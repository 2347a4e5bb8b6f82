"""Parameterisations of the partially pooled power law, measured outside the engine.

A research script, not part of the package: it writes the grouped power-law model directly in
numpyro (``L_g(x) = E_g + A_g x^-alpha_g`` per group, Student-t (nu = 4) on log loss, ``log E``,
``log alpha`` and ``log sigma`` pooled across groups, the amplitude per group at the group's
own centre) in several parameterisations and runs numpyro's own ``MCMC`` (4 chains in parallel
over 4 host devices), so that the geometry can be compared before the package's model changes.
It prints, per fit: wall time (compilation included, measured once every result is on the
host), the part of it spent tracing and compiling (JAX's own compile events) and the rest
(sampling), the leapfrog steps of all chains with warm-up and the gradient evaluations per
second of sampling time, mean leapfrog steps per iteration per chain (sampling phase),
divergences, max r_hat and min bulk ESS (numpyro's ``summary``, with the worst quantity) over
the population and the groups' ``E`` and ``alpha``, and the load average.

Variants (``--variant``; ``_diag`` = diagonal mass matrix, else dense):

``lsu``
    per group: the log loss at the group's own centre ``l``, the log slope magnitude there
    ``s = log(alpha (1 - f))`` and the logit ``u`` of the floor's share of that loss ``f``.
    Then ``log E = l + log f``, ``log A xbar^-alpha = l + log(1 - f)``,
    ``log alpha = s - log(1 - f)``: a map with unit Jacobian, so the priors on
    ``(log E, log alpha, log A xbar^-alpha)`` are added as they are. The population is centred
    (a Normal density on each group's ``log E`` and ``log alpha``); ``sigma`` non-centred.
``lsu_cs``
    the same with ``log sigma`` centred too.
``lun``
    per group ``l`` and ``u`` as in ``lsu`` but ``alpha`` non-centred
    (``log alpha_g = mu + tau z_g``); ``sigma`` non-centred.
``nc``
    everything non-centred (``log E``, ``log alpha``), amplitude per group at its own centre.
``lsp``
    the lsu coordinates with ``log alpha`` partially non-centred per group (Papaspiliopoulos,
    Roberts & Skold 2007; Gorinova et al. 2020): sampled ``v_g`` and
    ``log alpha_g = w_g softplus(u_g) + mu + tau^(1 - w_g) (v_g - w_g mu)``, density
    ``Normal(mu, tau).log_prob(log alpha_g) + (1 - w_g) log tau`` (the log Jacobian of
    ``v_g -> log alpha_g`` for fixed ``u_g, mu, tau``; the rest of the map is lsu's, unit
    Jacobian). ``w_g = 1`` is lsu (``v_g = s_g``), ``w_g = 0`` is lun (``v_g = z_g``).
    The weights are fixed from the data before sampling:
    ``w_g = tau_hat^2 / (tau_hat^2 + se_g^2)``, where ``se_g`` is the Laplace sd of
    ``log alpha`` in a lone MAP fit of group ``g`` (weak priors: ``log E ~ N(m_E, 1.5)``,
    ``log alpha ~ N(log 0.3, 1)``, amplitude ``~ N(log median loss, 2.5)``,
    ``log sigma ~ N(log 0.1 - 0.635, 1.11)``) and ``tau_hat`` is the DerSimonian-Laird
    (method of moments) between-group sd of the lone ``log alpha`` estimates, floored at 0.
    So a group whose ``alpha`` its own data pin down more tightly than the population spreads
    is centred, a vague one non-centred, and every group is non-centred when the lone
    estimates are no more dispersed than their errors (``tau_hat = 0``). The weights and
    ``tau_hat`` are printed.

Data (``--data``): ``revisiting`` (the 20 language curves, ``split == "fit"``) or ``sim:<seed>``
(one replicate of ``tests/statistical/test_hier_coverage.py``: 14 families sharing alpha).

Usage: python benchmarks/hier_geometry.py --variant lsu_diag --data revisiting --draws 1000
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.diagnostics import summary  # noqa: E402
from numpyro.infer import MCMC, NUTS, init_to_value  # noqa: E402

from bayescale.io.datasets import load_dataset  # noqa: E402

FLAT = dist.ImproperUniform(dist.constraints.real, (), ())


def load(spec: str, data_dir: str):  # type: ignore[no-untyped-def]
    """(log x, log loss, group index, labels) of the chosen data."""
    if spec.startswith("sim:"):
        here = os.path.join(os.path.dirname(__file__), "..", "tests", "statistical")
        sys.path.insert(0, here)
        from test_hier_coverage import replicate

        train, held, _truths = replicate(int(spec[4:]))
        frame = train.rename(columns={"n_params": "x", "family": "group"})
        load.held = held.rename(columns={"n_params": "x", "family": "group"})
    else:
        curves = load_dataset("revisiting_lang", data_dir=data_dir)
        frame = curves[curves["split"] == "fit"].rename(columns={"data_size": "x"})
    labels = sorted(frame["group"].unique())
    gi = np.array([labels.index(g) for g in frame["group"]])
    return np.log(frame["x"].to_numpy()), frame["loss"].to_numpy(), gi, labels


def lone_weights(log_x, loss, gi, n_groups, m_e):  # type: ignore[no-untyped-def]
    """Per-group centring weights of ``lsp`` from lone MAP + Laplace fits (see the docstring)."""
    import scipy.optimize

    n_max = max(int((gi == i).sum()) for i in range(n_groups))
    xc = np.zeros((n_groups, n_max))
    yy = np.zeros((n_groups, n_max))
    mask = np.zeros((n_groups, n_max))
    for i in range(n_groups):
        rows = gi == i
        xc[i, : rows.sum()] = log_x[rows] - log_x[rows].mean()
        yy[i, : rows.sum()] = np.log(loss[rows])
        mask[i, : rows.sum()] = 1.0

    def neg_log_post(theta, xc, y, mask, log_med):  # type: ignore[no-untyped-def]
        log_e, log_alpha, amp, log_sigma = theta
        mu = jnp.logaddexp(log_e, amp - jnp.exp(log_alpha) * xc)
        like = dist.StudentT(4.0, mu, jnp.exp(log_sigma)).log_prob(y) * mask
        prior = (
            dist.Normal(m_e, 1.5).log_prob(log_e)
            + dist.Normal(np.log(0.3), 1.0).log_prob(log_alpha)
            + dist.Normal(log_med, 2.5).log_prob(amp)
            + dist.Normal(np.log(0.1) - 0.635, 1.11).log_prob(log_sigma)
        )
        return -(like.sum() + prior)

    with jax.enable_x64(True):
        value_grad = jax.jit(jax.value_and_grad(neg_log_post))
        hessian = jax.jit(jax.hessian(neg_log_post))
        est, se = np.zeros(n_groups), np.zeros(n_groups)
        for i in range(n_groups):
            y = yy[i][mask[i] > 0]
            log_med = float(np.median(y))
            args = (xc[i], yy[i], mask[i], log_med)

            def objective(t, args=args):  # type: ignore[no-untyped-def]
                return tuple(np.asarray(v, float) for v in value_grad(t, *args))

            best = None
            for a0 in (0.1, 0.3, 1.0):
                for f0 in (0.3, 0.8):  # the floor's share of the median loss
                    x0 = np.array(
                        [log_med + np.log(f0), np.log(a0), log_med + np.log(1 - f0), np.log(0.02)]
                    )
                    res = scipy.optimize.minimize(
                        objective,
                        x0,
                        jac=True,
                        method="BFGS",
                    )
                    if best is None or res.fun < best.fun:
                        best = res
            cov = np.linalg.inv(np.asarray(hessian(best.x, *args)))
            est[i], se[i] = best.x[1], np.sqrt(max(cov[1, 1], 1e-12))
    prec = 1.0 / se**2
    pooled = np.sum(prec * est) / prec.sum()
    q = np.sum(prec * (est - pooled) ** 2)
    tau2 = max(0.0, (q - (n_groups - 1)) / (prec.sum() - np.sum(prec**2) / prec.sum()))
    weights = tau2 / (tau2 + se**2)
    return weights, np.sqrt(tau2), est, se


def make_model(variant, loss, gi, n_groups, weights=None):  # type: ignore[no-untyped-def]
    """The numpyro model of one variant (closed over the per-group default hyper-parameters)."""
    min_loss = np.array([loss[gi == i].min() for i in range(n_groups)])
    med_loss = np.array([np.median(loss[gi == i]) for i in range(n_groups)])
    m_e = float(np.median(np.log(min_loss / 2)))  # the single-curve Uniform(0, min L) median

    def model(xc, gi, log_loss):  # type: ignore[no-untyped-def]
        mu_e = numpyro.sample("E_mu", dist.Normal(m_e, 1.0))
        tau_e = numpyro.sample("E_tau", dist.HalfNormal(1.0))
        mu_a = numpyro.sample("alpha_mu", dist.Normal(np.log(0.3), 1.0))
        tau_a = numpyro.sample("alpha_tau", dist.HalfNormal(0.5))
        mu_s = numpyro.sample("sigma_mu", dist.Normal(np.log(0.1) - 0.635, 1.11))
        tau_s = numpyro.sample("sigma_tau", dist.HalfNormal(0.5))
        with numpyro.plate("group", n_groups):
            if variant.startswith("nc"):
                log_e = mu_e + tau_e * numpyro.sample("z_E", dist.Normal(0.0, 1.0))
                log_alpha = mu_a + tau_a * numpyro.sample("z_alpha", dist.Normal(0.0, 1.0))
                amp = numpyro.sample("a", dist.Normal(jnp.log(med_loss), 2.5))
            else:
                level = numpyro.sample("l", FLAT)
                u = numpyro.sample("u", FLAT)
                log_e = level + jax.nn.log_sigmoid(u)
                amp = level - jax.nn.softplus(u)
                if variant.startswith("lun"):
                    log_alpha = mu_a + tau_a * numpyro.sample("z_alpha", dist.Normal(0.0, 1.0))
                elif variant.startswith("lsp"):
                    w = jnp.asarray(weights, jnp.float32)
                    v = numpyro.sample("v", FLAT)
                    log_alpha = w * jax.nn.softplus(u) + mu_a + tau_a ** (1.0 - w) * (v - w * mu_a)
                    numpyro.factor(
                        "pop_alpha",
                        dist.Normal(mu_a, tau_a).log_prob(log_alpha) + (1.0 - w) * jnp.log(tau_a),
                    )
                else:
                    log_alpha = numpyro.sample("s", FLAT) + jax.nn.softplus(u)
                    numpyro.factor("pop_alpha", dist.Normal(mu_a, tau_a).log_prob(log_alpha))
                numpyro.factor("pop_E", dist.Normal(mu_e, tau_e).log_prob(log_e))
                numpyro.factor("prior_A", dist.Normal(jnp.log(med_loss), 2.5).log_prob(amp))
            if "_cs" in variant:
                sigma = jnp.exp(numpyro.sample("log_sigma", dist.Normal(mu_s, tau_s)))
            else:
                sigma = jnp.exp(mu_s + tau_s * numpyro.sample("z_sigma", dist.Normal(0.0, 1.0)))
        alpha = numpyro.deterministic("alpha", jnp.exp(log_alpha))
        numpyro.deterministic("E", jnp.exp(log_e))
        numpyro.deterministic("amp", amp)
        numpyro.deterministic("sigma", sigma)
        mu = jnp.logaddexp(log_e[gi], amp[gi] - alpha[gi] * xc)
        with numpyro.plate("run", log_loss.shape[0]):
            numpyro.sample("loss", dist.StudentT(4.0, mu, sigma[gi]), obs=log_loss)

    start = {
        "l": jnp.asarray(np.log(med_loss), jnp.float32),
        "a": jnp.asarray(np.log(med_loss), jnp.float32),
        "s": jnp.full(n_groups, np.log(0.1), jnp.float32),
        "E_mu": m_e,
        "E_tau": 0.5,
        "alpha_mu": float(np.log(0.3)),
        "alpha_tau": 0.3,
        "sigma_mu": float(np.log(0.01)),
        "sigma_tau": 0.5,
        "log_sigma": jnp.full(n_groups, np.log(0.01), jnp.float32),
        **{k: jnp.zeros(n_groups) for k in ("u", "z_E", "z_alpha", "z_sigma")},
    }
    if weights is not None:  # lsp: log alpha = log 0.2 at u = 0, mu = log 0.3, tau = 0.3 (as lsu)
        w, mu0 = np.asarray(weights), np.log(0.3)
        v0 = (np.log(0.2) - w * np.log(2.0) - mu0) / 0.3 ** (1.0 - w) + w * mu0
        start["v"] = jnp.asarray(v0, jnp.float32)
    return model, start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="lsu_diag")
    parser.add_argument("--data", default="revisiting", help="revisiting or sim:<seed>")
    parser.add_argument("--data-dir", default=os.environ.get("BAYESCALE_DATA", "../shared/data"))
    parser.add_argument("--draws", type=int, default=1000, help="warm-up = draws per chain")
    parser.add_argument("--fits", type=int, default=2, help="fits in the process (seeds 0..)")
    args = parser.parse_args()
    log_x, loss, gi, labels = load(args.data, args.data_dir)
    xbar = np.array([log_x[gi == i].mean() for i in range(len(labels))])
    data = ((log_x - xbar[gi]).astype(np.float32), gi, np.log(loss).astype(np.float32))
    weights = None
    if args.variant.startswith("lsp"):
        t0 = time.perf_counter()
        m_e = float(np.median(np.log([loss[gi == i].min() / 2 for i in range(len(labels))])))
        weights, tau_hat, est, se = lone_weights(log_x, loss, gi, len(labels), m_e)
        lone_s = time.perf_counter() - t0
        print(f"lone fits {lone_s:.1f} s; DerSimonian-Laird tau_hat {tau_hat:.3f}")
        for name, w_g, e_g, s_g in zip(labels, weights, est, se, strict=True):
            print(f"   {name:36s} alpha {np.exp(e_g):.3f} se(log) {s_g:.4f} w {w_g:.3f}")
    model, start = make_model(args.variant, loss, gi, len(labels), weights)
    kernel = NUTS(
        model, dense_mass="diag" not in args.variant, init_strategy=init_to_value(values=start)
    )
    compile_s = {"s": 0.0}

    def on_event(name, seconds, **_):  # type: ignore[no-untyped-def]
        if name.startswith("/jax/core/compile/"):  # tracing, lowering and XLA compilation
            compile_s["s"] += seconds

    jax.monitoring.register_event_duration_secs_listener(on_event)
    for seed in range(args.fits):
        mcmc = MCMC(
            kernel,
            num_warmup=args.draws,
            num_samples=args.draws,
            num_chains=4,
            chain_method="parallel",
            progress_bar=False,
        )
        compile_s["s"] = 0.0
        t0 = time.perf_counter()
        # Warm-up and sampling as two calls so that the warm-up's leapfrog steps are counted
        # too. JAX dispatches asynchronously: ``run`` returns before the chains have finished,
        # so the clock stops only once every result is on the host (an earlier version stopped
        # it when ``run`` returned and reported a few seconds for fits that took over a minute).
        key_warm, key_draw = jax.random.split(jax.random.PRNGKey(seed))
        mcmc.warmup(key_warm, *data, extra_fields=("num_steps",), collect_warmup=True)
        warm_steps = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["num_steps"])
        mcmc.run(key_draw, *data, extra_fields=("num_steps", "diverging"))
        extra = jax.device_get(mcmc.get_extra_fields(group_by_chain=True))
        draws = jax.device_get(mcmc.get_samples(group_by_chain=True))
        wall = time.perf_counter() - t0
        compiling = compile_s["s"]
        total_steps = int(warm_steps.sum()) + int(np.asarray(extra["num_steps"]).sum())
        keep = [k for k in draws if k in ("E", "alpha") or k.endswith(("_mu", "_tau"))]
        table = summary({k: np.asarray(draws[k]) for k in keep})
        r_hat, worst_r = max((float(np.max(v["r_hat"])), k) for k, v in table.items())
        ess, worst_ess = min((float(np.min(v["n_eff"])), k) for k, v in table.items())
        steps = np.asarray(extra["num_steps"]).mean(axis=1).round(1)
        sampling = wall - compiling
        print(
            f"{args.variant} on {args.data}, seed {seed}: wall {wall:.1f} s (compiling "
            f"{compiling:.1f} s, sampling {sampling:.1f} s), steps/iter {steps}, "
            f"leapfrog steps {total_steps / 1e6:.2f}M in all chains incl. warm-up "
            f"({total_steps / sampling / 1e3:.0f}k gradients/s, "
            f"{1e6 * sampling / total_steps:.2f} us each), "
            f"divergences {int(np.asarray(extra['diverging']).sum())}, "
            f"max r_hat {r_hat:.3f} ({worst_r}), "
            f"min ESS {ess:.0f} ({worst_ess}), load {np.round(os.getloadavg(), 1).tolist()}",
            flush=True,
        )
        if args.data.startswith("sim:"):
            print("   new families:", coverage(draws, load.held, labels, xbar, seed))


def coverage(draws, held, labels, xbar, seed):  # type: ignore[no-untyped-def]
    """90% predictive coverage and median relative width on the new families' held-out runs."""
    rng = np.random.default_rng(seed)
    inside, widths = [], []
    for name, rows in held.groupby("group"):
        if not name.startswith("new"):
            continue
        i = labels.index(name)
        log_e, amp, alpha, sigma = (
            np.asarray(draws[k])[..., i].reshape(-1, 1) for k in ("E", "amp", "alpha", "sigma")
        )
        xc = np.log(rows["x"].to_numpy())[None, :] - xbar[i]
        mu = np.logaddexp(np.log(log_e), amp - alpha * xc)
        pred = np.exp(mu + sigma * rng.standard_t(4.0, mu.shape))
        lo, med, hi = np.quantile(pred, [0.05, 0.5, 0.95], axis=0)
        obs = rows["loss"].to_numpy()
        inside += list((obs >= lo) & (obs <= hi))
        widths.append(np.median((hi - lo) / med))
        print("     ", name, "width", round(float(widths[-1]), 4))
    rate, width = np.mean(inside), np.median(widths)
    return f"90% coverage {rate:.3f} of {len(inside)}, median relative width {width:.4f}"


if __name__ == "__main__":
    main()
