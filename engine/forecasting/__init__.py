"""Forecasting on top of the training engine (docs/forecasting.md): column roles,
calendar features and seasonal lags, direct multi-horizon framing, distributions and
intervals, backtests."""
