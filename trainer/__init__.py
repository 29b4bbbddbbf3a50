"""The trainer: consumes labelled points, fits regressors, publishes model versions."""
