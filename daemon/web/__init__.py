"""The daemon's web page, live wire views and /metrics (``pipelined --http ADDR:PORT``).

/                      the graph, live: blocks, wires, state, fps, CPU, restarts,
                       buttons, and a live view of a wire on click
/api/status            pipectl's status object (GET)
/api/graph             pipectl's graph object (GET)
/api/history           each block's fps and CPU over the last hour (GET)
/api/blocks/B/ACTION   start, stop or restart block B (POST; see security.py)
/api/recordings        pipectl's recordings object (GET; ?block=&since=&until=&order=&limit=)
/recordings/B/FILE     a segment recorder B wrote, to play (Range requests)
/live/WIRE.mjpg        the wire as MJPEG (?fps=, ?quality=, ?width=)
/live/WIRE.jpg         the wire's newest frame as JPEG
/metrics               Prometheus text format

The server itself (``.server.WebServer``) is imported only when the page is on: aiohttp
and OpenCV take a good part of a second to import, which a daemon without a page
should not pay at every start.
"""

from .listen import HttpError, Listener, Token, add_arguments, listen_from_args, token_from_args

__all__ = ["HttpError", "Listener", "Token", "add_arguments", "listen_from_args", "token_from_args"]
