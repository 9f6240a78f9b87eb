"""The powerfleet coordinator: the predictor store, and (later) the Flower server app."""
