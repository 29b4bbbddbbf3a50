"""Regressors with a fit / predict / score contract, and exact rolling metrics. numpy only."""
