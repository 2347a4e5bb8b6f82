"""Input and output: the one boundary where tables of runs come in, and the named datasets.

`from_frame` validates a table of runs into a `ScalingData`; `bayescale.io.datasets` loads the
public reference data. The bottom of the statistical stack: it imports only `bayescale.errors`
and `bayescale.files`.
"""
