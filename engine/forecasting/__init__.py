"""Forecasting outputs (docs/forecasting.md): prediction intervals and conformal calibration
(engine.forecasting.intervals), interval and forecast scores (engine.forecasting.scores).
Import the modules themselves; this package imports nothing."""
