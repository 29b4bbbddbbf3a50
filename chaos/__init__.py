"""The chaos suite: faults injected into a live stream, loss and duplicates counted from outside.

``python -m chaos`` starts its own broker (one node, or a cluster of three), runs
the services as users run them (``streamscore producer|trainer|scorer``), injects
one kind of fault per scenario (broker killed or restarted, partition leader
killed, services killed, poison records) and reads ``points``, ``predictions``,
``deadletter`` and ``models`` to count what was lost, duplicated and how long the
stream took to recover. See docs/reliability.md.
"""
