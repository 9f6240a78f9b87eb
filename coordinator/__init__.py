"""The powerfleet coordinator: the predictor store, round protocol, Flower ServerApp and engines."""
