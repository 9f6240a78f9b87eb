"""Fleet files shipped with powerfleet, loaded by name: ``FleetSpec.load("mixed-12")``.

``examples/fleets/`` links here; see ``coordinator/fleet.py`` for the format.
"""
