"""The parts a model is composed of, and the builder that composes them.

Laws (a registry), priors, observation models (a registry), the misfit term, the sampler's
coordinates (`bayescale.model.geometry`) and the group structure (`bayescale.model.hierarchy`);
`bayescale.model.build` composes them into one numpyro model. Simulation from a law lives here
too. Imports only `bayescale.io` and the base modules.
"""
