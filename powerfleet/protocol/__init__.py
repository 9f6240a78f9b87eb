"""Contracts the coordinator and the nodes share: round messages, the training task, enums.

Both ``coordinator`` and ``client`` import this package; neither imports the other.
"""
