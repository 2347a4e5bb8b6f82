"""Inference: everything that turns runs and a model into a `Fit`.

The sampler driver (`bayescale.inference.driver`) and its two kernels (numpyro's NUTS in
`bayescale.inference.sampling`, the vectorised HMC of `bayescale.inference.vhmc` in
`bayescale.inference.many`), MAP + Laplace, the Huber point fit, diagnostics, and the verbs that
produce fits (`fit`, `update`, `fit_many`, `load_fit`). Imports only `bayescale.model`,
`bayescale.io` and the base modules.
"""
