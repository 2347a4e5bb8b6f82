"""Inference: everything that turns runs and a model into a `Fit`.

The sampler engine (numpyro's NUTS in `bayescale.inference.sampling`, the vectorised HMC of
`bayescale.inference.vhmc`), MAP + Laplace, the Huber point fit, diagnostics, and the verbs that
produce fits (`fit`, `update`, `fit_many`, `load_fit`). Imports only `bayescale.model`,
`bayescale.io` and the base modules.
"""
