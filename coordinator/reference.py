"""Where the reference predictor comes from when the store does not hold it.

The reference (``resnet18-imagenet`` on ``orin-agx``) is fitted once on a full profiling grid,
outside FL rounds. ``sim`` profiles it on a simulated board built by the device factory;
``store`` demands one imported beforehand (``powerfleet store import``), as a fleet without a
simulator would. :func:`make_reference_source` picks one by name.
"""

from __future__ import annotations

from typing import Protocol

from coordinator.store.collect import DeviceCollector, SampleCollector
from powertrain.devices import make_device
from powertrain.errors import PowerfleetError, check_choice
from powertrain.profiler import ProfileSettings


class ReferenceSource(Protocol):
    """Gives the boards that profile the reference pair."""

    name: str

    def collector(self, device_type: str, workload: str, store_url: str) -> SampleCollector:
        """Boards of ``device_type`` to profile the reference grid on, or a one-line refusal."""


class SimulatedReference:
    """Profile the reference grid on one simulated board."""

    name = "sim"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def collector(self, device_type: str, workload: str, store_url: str) -> SampleCollector:
        """A collector over ``sim:<device_type>`` unit 0."""
        return DeviceCollector([make_device(f"sim:{device_type}?unit=0&seed={self.seed}")], ProfileSettings())


class StoreReference:
    """The reference must already be in the store."""

    name = "store"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def collector(self, device_type: str, workload: str, store_url: str) -> SampleCollector:
        """Always refuses: nothing may be profiled here."""
        raise PowerfleetError(
            f"the store {store_url} has no reference predictor ({device_type}/{workload}) and "
            "reference-source is 'store'; import one with 'powerfleet store import' or use "
            "reference-source='sim'")


REFERENCE_SOURCES: dict[str, type[SimulatedReference] | type[StoreReference]] = {
    "sim": SimulatedReference, "store": StoreReference}


def make_reference_source(name: str, seed: int = 0) -> ReferenceSource:
    """The reference source called ``name`` (``sim`` or ``store``)."""
    return REFERENCE_SOURCES[check_choice("reference-source", name, REFERENCE_SOURCES)](seed)
