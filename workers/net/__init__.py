"""Wires that cross machines, on Zenoh: the graph's ``[zenoh]`` table, the ``publish`` key
and ``remote`` blocks (settings.py), the header every sample carries (header.py), and
the daemon's link process that holds the box's one Zenoh session (link.py, publish.py,
subscribe.py).

Only the link process imports ``zenoh`` to talk: loading a graph imports it to check a
configuration, never to open a session.
"""
