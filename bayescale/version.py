"""The version of bayescale (a bottom module: provenance attributes read it)."""

__version__ = "0.1.0"
