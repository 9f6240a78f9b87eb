"""powerfleet: federated-learning fleet scheduler for Jetson edge boards.

The data path is profile -> predictor -> store -> coordinator -> client -> device; see
``docs/architecture.md`` for the package that holds each part. This package holds only the
``powerfleet`` command line, which wires those packages together.
"""

__version__ = "0.1.0"
