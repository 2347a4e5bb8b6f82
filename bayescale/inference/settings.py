"""A fit's settings: one frozen, versioned object, written to a file as one attribute.

`FitSettings` holds everything a fit needs to be used again: the law, the observation model,
the centre of the inputs, the priors, the misfit and where the fitted runs lie in its
coordinates, the groups and their pooling, the method and the sampler's settings, the seed,
and what the point fits and updates record. `bayescale.inference.fit.Fit` holds one
(``fit.settings``); its properties read it.

In a file the settings are the tree's attribute ``bayescale_settings`` (JSON with the
schema's ``version``), beside ``bayescale_version``, ``law_declaration`` and ``law_fingerprint``
(what `bayescale.load_fit` checks the registered law against). `FitSettings.from_attrs` is
the one reader: it also reads the layout of files written before this object (one attribute
per setting, version 0).

A new setting is one field with a default (what a file written before it means), of a JSON
type (``str``, ``int``, ``float``, ``bool``, ``dict``, ``tuple``) or of a type in `_CODECS`:
its annotation says how it is written and read.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bayescale.errors import BayescaleError
from bayescale.inference.sampling import NutsSettings
from bayescale.io.data import ScalingData
from bayescale.model.distributions import Prior
from bayescale.model.laws import Law
from bayescale.model.likelihoods import Likelihood
from bayescale.model.misfit import Misfit, MisfitCoords
from bayescale.model.priors import Priors

__all__ = ["FitSettings", "SETTINGS_ATTR", "SETTINGS_VERSION", "fit_settings", "json_attr"]

#: the tree attribute that holds the settings
SETTINGS_ATTR = "bayescale_settings"
#: the schema written now; 0 is the layout of one attribute per setting
SETTINGS_VERSION = 1
#: what every fit read from a file has (the settings the verbs cannot do without)
REQUIRED = ("law", "method", "likelihood", "nu", "centre", "priors")
#: field metadata of the settings of a grouped fit that one of its groups has not
_GROUPED: Mapping[str, Any] = {"grouping": True}


@dataclass(frozen=True)
class FitSettings:
    """The settings of a fit (``fit.settings``), frozen.

    Attributes
    ----------
    law, law_options : str, dict
        The law's registered name and the options it was made with (``variable``, ``breaks``).
    method : str
        ``"nuts"``, ``"map"``, ``"huber"``, or ``"hmc"`` (a curve of `bayescale.fit_many`).
    likelihood, likelihood_options, nu : str, dict, float
        The observation model's name and options; ``nu`` the Student-t's degrees of freedom.
    centre : dict
        Mean log input per variable, where the amplitudes are sampled.
    priors : Priors or None
        The priors used (the defaults with the user's overrides).
    seed : int
        The fit's seed.
    data_source : str
        Where the runs came from.
    num_warmup, dense_mass, target_accept, trajectory : optional
        Sampler settings (the draws' shape gives the chains and draws); ``trajectory`` is the
        integration time of `bayescale.fit_many`'s HMC.
    chain_method, init : str or None
        How the chains ran and where they started, in words.
    misfit, misfit_coords : Misfit, MisfitCoords or None
        The misfit model, and where the fitted runs lie in its coordinates (with its anchor).
    groups, pooling, pool, pool_real, group_centres, floor_bounds, floor_pooling : optional
        A grouped fit's labels, pooling, pooled parameters (``pool_real``: those on the real
        line), each group's centre, the bounds of a floor pooled as a share and how the floor
        was pooled (`bayescale.model.hierarchy`).
    group_misfit_coords, new_group_misfit_coords : optional
        Each group's (or each curve's, for `bayescale.fit_many`) misfit coordinates, and a new
        group's (every run).
    group, group_of, curve_index : optional
        One group of a grouped fit (`bayescale.group_fit`; ``group`` None and ``group_of`` set
        for a new group), or one curve of `bayescale.fit_many` (its ``curve_index``).
    chunk_size : int or None
        Curves per chunk of `bayescale.fit_many`.
    huber_objective, huber_estimate, bootstrap : optional
        The Huber fit's loss, its point estimate and number of bootstrap refits.
    problems : tuple of str
        What the MAP or Huber fit found wrong (NUTS fits compute theirs from the draws).
    history : tuple of dict
        Of an updated fit (`bayescale.update`): one entry per batch of runs.
    version : int
        The schema (`SETTINGS_VERSION`).
    """

    law: str
    method: str
    likelihood: str = "student_t"
    likelihood_options: dict[str, Any] = field(default_factory=dict)
    nu: float = 4.0
    law_options: dict[str, Any] = field(default_factory=dict)
    centre: dict[str, float] = field(default_factory=dict)
    priors: Priors | None = None
    seed: int = 0
    data_source: str = ""
    num_warmup: int | None = None
    dense_mass: bool | None = None
    target_accept: float | None = None
    trajectory: float | None = None
    chain_method: str | None = None
    init: str | None = None
    misfit: Misfit | None = None
    misfit_coords: MisfitCoords | None = None
    groups: tuple[str, ...] | None = field(default=None, metadata=_GROUPED)
    pooling: str | None = field(default=None, metadata=_GROUPED)
    pool: tuple[str, ...] = field(default=(), metadata=_GROUPED)
    pool_real: tuple[str, ...] = field(default=(), metadata=_GROUPED)
    group_centres: dict[str, dict[str, float]] | None = field(default=None, metadata=_GROUPED)
    floor_bounds: tuple[float, ...] = field(default=(), metadata=_GROUPED)
    floor_pooling: str | None = None
    group_misfit_coords: dict[str, MisfitCoords] | None = field(default=None, metadata=_GROUPED)
    new_group_misfit_coords: MisfitCoords | None = field(default=None, metadata=_GROUPED)
    group: str | None = None
    group_of: dict[str, Any] | None = None
    curve_index: int | None = None
    chunk_size: int | None = None
    huber_objective: float | None = None
    huber_estimate: dict[str, float] | None = None
    bootstrap: int | None = None
    problems: tuple[str, ...] = ()
    history: tuple[dict[str, Any], ...] = ()
    version: int = SETTINGS_VERSION

    def replace(self, **changes: Any) -> FitSettings:
        """A copy with ``changes`` (`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)

    def one_group(self, **changes: Any) -> FitSettings:
        """The settings of one group of a grouped fit: those of the grouping dropped.

        The fields of the grouping are those declared with ``metadata=_GROUPED``.
        """
        dropped = {
            f.name: f.default for f in dataclasses.fields(self) if f.metadata.get("grouping")
        }
        return dataclasses.replace(self, **{**dropped, **changes})

    # ----------------------------------------------------------------------- the file

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-serialisable values."""
        return {f.name: _encode(f, getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_attrs(self) -> dict[str, str]:
        """The tree attributes that hold the settings: one, JSON."""
        return {SETTINGS_ATTR: json.dumps(self.to_dict())}

    @classmethod
    def from_attrs(
        cls, attrs: Mapping[str, Any], where: str = "the tree", strict: bool = False
    ) -> FitSettings:
        """The settings in a tree's attributes, of this layout or the earlier one.

        Parameters
        ----------
        attrs : mapping
            The tree's attributes.
        where : str
            What the attributes are of, for error messages (a file's name).
        strict : bool
            Require the settings of `REQUIRED` (a saved fit's); else their defaults serve (a
            tree built by hand, such as a test's).

        Raises
        ------
        BayescaleError
            If the settings are corrupted, written by a newer schema, or lack a required one.
        """
        refit = "Save the fit again with Fit.save."
        if SETTINGS_ATTR in attrs:
            what = f"attribute {SETTINGS_ATTR!r}"
            raw = json_attr(attrs, SETTINGS_ATTR, where, dict)
            version = raw.get("version")
            if not isinstance(version, int) or version > SETTINGS_VERSION:
                raise BayescaleError(
                    f"{where}: its settings have schema version {version!r}; this bayescale "
                    f"reads versions up to {SETTINGS_VERSION}. Upgrade bayescale to load it."
                )
            unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(cls)})
            if unknown:
                raise BayescaleError(
                    f"{where}: its {what} has unknown setting(s) {unknown} for schema version "
                    f"{version}. {refit}"
                )
            kind = "setting"
        else:
            raw, kind = _legacy(attrs, where), "attribute"
        missing = [k for k in (REQUIRED if strict else ("law", "method")) if k not in raw]
        if missing:
            raise BayescaleError(
                f"{where} is an incomplete bayescale fit: it lacks the {kind}(s) "
                f"{', '.join(repr(k) for k in missing)}. {refit}"
            )
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for name, value in raw.items():
            try:
                values[name] = _decode(fields[name], value)
            except (TypeError, ValueError, KeyError, AttributeError, BayescaleError) as exc:
                raise BayescaleError(
                    f"{where}: its {kind} {name!r} is corrupted ({exc}; it begins "
                    f"{str(value)[:60]!r}). {refit}"
                ) from None
        values["version"] = SETTINGS_VERSION
        return cls(**values)


def fit_settings(
    law: Law,
    data: ScalingData,
    priors: Mapping[str, Prior] | None,
    likelihood: Likelihood,
    centre: Mapping[str, float] | None,
    method: str,
    seed: int,
    nuts: NutsSettings | None = None,
    **extra: Any,
) -> FitSettings:
    """The settings of a new fit: its parts, the sampler's settings if any, and ``extra``.

    ``extra`` names other fields of `FitSettings`. ``priors`` and ``centre`` are None for a
    fit of many curves, whose curves each have their own.
    """
    if nuts is not None:
        extra = {
            "num_warmup": nuts.num_warmup,
            "chain_method": "parallel: one thread per chain",
            "dense_mass": nuts.dense_mass,
            "target_accept": nuts.target_accept,
            **extra,
        }
    return FitSettings(
        law=law.name,
        law_options=dict(law.options),
        likelihood=likelihood.name,
        likelihood_options=dict(likelihood.options),
        nu=float(likelihood.options.get("nu", 4.0)),
        method=method,
        seed=int(seed),
        centre={} if centre is None else {v: float(c) for v, c in centre.items()},
        priors=None if priors is None else Priors(priors),
        data_source=data.source,
        **extra,
    )


# ------------------------------------------------------------------------- field codecs


def _coords(v: Mapping[str, Any]) -> MisfitCoords:
    return MisfitCoords(**v)


#: (encode, decode) of the field types that are not JSON values, by their annotation
_CODECS: dict[str, tuple[Any, Any]] = {
    "Priors": (
        lambda p: {k: v.to_dict() for k, v in p.items()},
        lambda d: Priors({k: Prior.from_dict(v) for k, v in d.items()}),
    ),
    "Misfit": (dataclasses.asdict, lambda d: Misfit(**d)),
    "MisfitCoords": (dataclasses.asdict, _coords),
    "dict[str, MisfitCoords]": (
        lambda m: {k: dataclasses.asdict(c) for k, c in m.items()},
        lambda d: {k: _coords(c) for k, c in d.items()},
    ),
}
#: the JSON fields' types, by the head of their annotation
_JSON_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "dict": dict, "tuple": tuple}


def _kind(field_: dataclasses.Field[Any]) -> str:
    """A field's annotation without ``| None``: ``"int"``, ``"tuple[str, ...]"``, ``"Misfit"``."""
    return str(field_.type).removesuffix(" | None")


def _encode(field_: dataclasses.Field[Any], value: Any) -> Any:
    if value is None:
        return None
    kind = _kind(field_)
    if kind in _CODECS:
        return _CODECS[kind][0](value)
    return list(value) if isinstance(value, tuple) else value


def _decode(field_: dataclasses.Field[Any], value: Any) -> Any:
    """A field's value from JSON, checked against its annotation."""
    if value is None:
        return None
    kind = _kind(field_)
    if kind in _CODECS:
        return _CODECS[kind][1](value)
    head = _JSON_TYPES[kind.split("[")[0]]
    if head is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list, found {type(value).__name__}")
        return tuple(value)
    if head is dict and not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, found {type(value).__name__}")
    if head in (int, float) and (isinstance(value, (str, bool)) or not np.isfinite(value)):
        raise TypeError(f"expected a number, found {value!r}")
    return head(value)


# ------------------------------------------------------------- the layout before settings

#: attributes of the earlier layout stored as JSON text, by the field they fill
_LEGACY_JSON = (
    "law_options", "likelihood_options", "centre", "priors", "misfit", "misfit_coords",
    "groups", "pool", "pool_real", "group_centres", "floor_bounds", "group_misfit_coords",
    "new_group_misfit_coords", "group_of", "huber_estimate", "problems",
)  # fmt: skip
#: attributes of the earlier layout read as they are (numbers and words)
_LEGACY_PLAIN = (
    "law", "method", "likelihood", "nu", "seed", "data_source", "num_warmup", "dense_mass",
    "target_accept", "trajectory", "chain_method", "init", "pooling", "floor_pooling", "group",
    "curve_index", "chunk_size", "huber_objective", "bootstrap",
)  # fmt: skip


def _legacy(attrs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The settings of a tree of the earlier layout (one attribute each), as JSON values."""
    out: dict[str, Any] = {}
    for key in _LEGACY_PLAIN:
        if key in attrs:
            v = attrs[key]
            out[key] = v.item() if hasattr(v, "item") else v  # numpy scalars from netCDF
    for key in _LEGACY_JSON:
        if key in attrs:
            out[key] = _legacy_json(key, attrs[key], where)
    if "provenance" in attrs:  # an update's batches
        out["history"] = _legacy_json("provenance", attrs["provenance"], where)
    if out.get("group") == "":  # a new group of a grouped fit
        out["group"] = None
    if isinstance(out.get("group_misfit_coords"), dict):  # each group's coordinates as JSON text
        out["group_misfit_coords"] = {
            k: json.loads(v) if isinstance(v, str) else v
            for k, v in out["group_misfit_coords"].items()
        }
    return out


def _legacy_json(key: str, text: Any, where: str) -> Any:
    try:
        return json.loads(text) if text != "" else None
    except (TypeError, ValueError) as exc:
        raise BayescaleError(
            f"{where}: its attribute {key!r} is corrupted ({exc}; it begins {str(text)[:60]!r}). "
            "Save the fit again with Fit.save."
        ) from None


def json_attr(attrs: Mapping[str, Any], key: str, where: str, kind: type) -> Any:
    """The JSON attribute ``key``, decoded and of type ``kind``; a `BayescaleError` if not.

    ``where`` names what the attributes are of (a file's name), for the message.
    """
    text = attrs.get(key)
    try:
        value = json.loads(text)
        if not isinstance(value, kind):
            raise TypeError(f"expected a JSON {kind.__name__}, found {type(value).__name__}")
    except (TypeError, ValueError) as exc:
        raise BayescaleError(
            f"{where}: its attribute {key!r} is corrupted ({exc}; it begins "
            f"{str(text)[:60]!r}). Save the fit again with Fit.save."
        ) from None
    return value
