"""Built-in tasks (``powerfleet.tasks.<module>:<Class>`` references) and their data helpers.

Every task here implements :class:`powerfleet.protocol.tasks.Task` in plain torch and really
trains; none downloads anything (data is generated locally unless a task is pointed at a
dataset hub on purpose).
"""
