"""A fit's settings: one frozen, versioned object, one attribute in the file, one reader.

The files in ``tests/data/legacy`` were written by main at f804d87 (one attribute per
setting; ``tests/data/legacy/make.py``): they load through the same reader.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import bayescale as bs
from bayescale.inference.settings import SETTINGS_ATTR, FitSettings
from bayescale.model.misfit import MisfitCoords

LEGACY = Path(__file__).parent / "data" / "legacy"
FILES = sorted(p.name for p in LEGACY.glob("*.nc"))
#: the attributes of a file beside its settings
RECORD = {"bayescale_version", "law_declaration", "law_fingerprint"}


def _every_setting(law: bs.Law, priors: bs.Priors) -> FitSettings:
    """Settings with every field away from its default (the law's, to load)."""
    coords = MisfitCoords(u_mid=8.5, half=1.5, r_mid=0.25, tilt=True, anchor={"alpha": 0.3})
    return FitSettings(
        law=law.name,
        method="map",
        likelihood="normal",
        likelihood_options={"scale_prior": 0.5},
        nu=7.0,
        law_options=dict(law.options),
        centre={"n_params": 19.5},
        priors=priors,
        seed=11,
        data_source="runs.csv",
        num_warmup=321,
        dense_mass=False,
        target_accept=0.85,
        trajectory=3.5,
        chain_method="by hand",
        init="warm start",
        misfit=bs.Misfit(knots=6, p_exact=0.25),
        misfit_coords=coords,
        groups=("a", "b"),
        pooling="partial",
        pool=("alpha", "sigma"),
        pool_real=("alpha",),
        group_centres={"a": {"n_params": 19.0}, "b": {"n_params": 20.0}},
        floor_bounds=(1.5, 1.75),
        floor_pooling="share",
        group_misfit_coords={"a": coords, "b": dataclasses.replace(coords, u_mid=9.0)},
        new_group_misfit_coords=dataclasses.replace(coords, half=2.0),
        group="a",
        group_of={"groups": ["a", "b"], "pooling": "partial"},
        curve_index=3,
        chunk_size=64,
        huber_objective=0.0123,
        huber_estimate={"alpha": 0.3},
        bootstrap=40,
        problems=("a problem",),
        history=({"batch": 0, "source": "runs.csv", "n_runs": 30},),
        version=1,
    )


def test_every_setting_round_trips_through_save_and_load(tmp_path):
    fit = bs.fit(bs.simulate("power_law", seed=2), "power_law", method="huber")
    every = _every_setting(fit.law, fit.priors)
    defaults = FitSettings(law="", method="")
    unset = [
        f.name
        for f in dataclasses.fields(FitSettings)
        if f.name != "version" and getattr(every, f.name) == getattr(defaults, f.name)
    ]
    assert not unset, f"give these settings a value in _every_setting: {unset}"
    assert every.version == 1
    dressed = bs.Fit(fit.tree, fit.law, fit.priors, fit.data, every)
    loaded = bs.load_fit(dressed.save(tmp_path / "fit.nc"))
    assert loaded.settings == every
    assert set(loaded.tree.attrs) == {SETTINGS_ATTR, *RECORD}
    assert loaded.settings.misfit == bs.Misfit(knots=6, p_exact=0.25)  # typed, not JSON
    assert isinstance(loaded.settings.group_misfit_coords["b"], MisfitCoords)
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.settings.seed = 1  # type: ignore[misc]


def test_a_new_setting_is_one_field_with_a_default():
    """A field added to the settings is written and read with no other change, and a file
    written before it reads as its default."""
    extended = dataclasses.make_dataclass(
        "Extended",
        [
            ("warmup_schedule", "tuple[int, ...]", dataclasses.field(default=())),
            ("tempering", "float | None", dataclasses.field(default=None)),
            ("second_misfit", "Misfit | None", dataclasses.field(default=None)),
        ],
        bases=(FitSettings,),
        frozen=True,
    )
    new = extended(
        law="power_law",
        method="nuts",
        warmup_schedule=(25, 50),
        tempering=0.5,
        second_misfit=bs.Misfit(knots=5),
    )
    assert extended.from_attrs(new.to_attrs()) == new
    old = FitSettings(law="power_law", method="nuts")
    assert extended.from_attrs(old.to_attrs()) == extended(law="power_law", method="nuts")


def _old_value(value):
    """An attribute of the earlier layout as JSON would give it."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value  # a word: "nuts", "power_law", "DataFrame"
    return value


@pytest.mark.parametrize("name", FILES)
def test_a_file_of_the_earlier_layout_loads_every_setting_and_saves_in_this_one(name, tmp_path):
    with xr.open_datatree(LEGACY / name, engine="h5netcdf") as handle:
        attrs = dict(handle.load().attrs)
    assert SETTINGS_ATTR not in attrs and "method" in attrs  # the layout of one per setting
    fit = bs.load_fit(LEGACY / name)
    written = fit.settings.to_dict()
    renamed = {"provenance": "history"}
    for key, value in attrs.items():
        if key in RECORD:
            continue
        old = _old_value(value)
        if key == "group_misfit_coords":  # each group's coordinates were JSON text
            old = {g: json.loads(c) for g, c in old.items()}
        assert written[renamed.get(key, key)] == old, key
    # the verbs take it
    points = {v: [float(fit.data.column(v).max()) * 10] for v in fit.law.variables}
    group = fit.groups[0] if fit.groups else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bs.ConvergenceWarning)  # tiny fits: their files count
        kind = "predictive" if "sigma" in fit.posterior else "mean"  # the Huber point fit
        forecast = bs.forecast(fit, points, kind=kind, group_label=group, warn=False)
    assert np.isfinite(forecast.summary()["median"]).all()
    # saved again: the settings in one attribute, the same settings and draws when read
    again = bs.load_fit(fit.save(tmp_path / name))
    assert set(again.tree.attrs) == {SETTINGS_ATTR, *RECORD}
    assert json.loads(again.tree.attrs[SETTINGS_ATTR])["version"] == 1
    assert again.settings == fit.settings
    assert again.tree["posterior"].identical(fit.tree["posterior"])
    assert set(again.tree.children) == set(fit.tree.children)


def test_a_group_of_a_loaded_grouped_fit_is_the_group_fit_main_saved():
    """group_fit on the settings object gives what main's group_fit wrote: the same settings,
    draws and sampler statistics (carried over, not renamed and back)."""
    grouped = bs.load_fit(LEGACY / "grouped.nc")
    saved = bs.load_fit(LEGACY / "group_c1.nc")
    one = bs.group_fit(grouped, "c1")
    assert one.settings == saved.settings
    assert one.settings.groups is None and one.settings.group == "c1"
    # equal values and coordinates (the attributes hold each tree's time of creation)
    assert one.tree["posterior"].to_dataset().equals(saved.tree["posterior"].to_dataset())
    stats = ("diverging", "n_steps", "acceptance_rate", "energy", "lp")
    for k in stats:
        np.testing.assert_array_equal(
            one.tree["sample_stats"][k].values, saved.tree["sample_stats"][k].values
        )


def test_a_tree_built_by_hand_reads_its_settings_from_its_attributes():
    import arviz_base as azb

    tree = azb.from_dict({"posterior": {"alpha": np.full((1, 4), 0.3)}})
    tree.attrs.update(method="map", likelihood="normal", nu=4.0, law="power_law")
    fit = bs.Fit(tree, bs.get_law("power_law"), None, bs.from_frame(bs.simulate("power_law")))
    assert fit.settings == FitSettings(law="power_law", method="map", likelihood="normal")
    assert fit.method == "map" and fit.noise.name == "normal" and fit.misfit is None
    tree.attrs.pop("method")
    with pytest.raises(bs.BayescaleError, match=r"lacks the attribute\(s\) 'method'"):
        bs.Fit(tree, bs.get_law("power_law"), None, bs.from_frame(bs.simulate("power_law")))
