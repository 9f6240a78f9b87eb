"""The simulated fleet: the engines (Flower simulation, analytic), analytic nodes, dropouts.

Wiring above both ``coordinator`` and ``client``; the only place simulation-only behaviour
(fault injection, vectorised steady-state nodes) lives.
"""
