"""What users call on a fit: forecast, allocate, check, compare, stack, breaks, backtest, design.

Every module here takes fits from `bayescale.inference` and returns a frozen result with
`summary()`. Imports only `bayescale.inference` and the layers below it; never
`bayescale.plots`.
"""
