"""Video as cameras send it, on PyAV (FFmpeg): what is not a block.

- ``source``: opening a camera, a file or a stream with PyAV, and why one did not open;
- ``feed``: one connection's packets, read on their own thread: onto the packet wire as
  they come, and to the decoder when someone wants frames;
- ``bitstream``: H.264/H.265/MJPEG headers (parameter sets, picture sizes) read without
  decoding;
- ``decode``: what to decode (every frame, a few a second, keyframes only) and with which
  decoder (hardware where there is one);
- ``options`` and ``encode``: the ``encode`` key, and the encoder behind it (frames in,
  packets and codec parameters out), also used by the recorder;
- ``mux``, ``segments``, ``segmenter``, ``storage``, ``snapshot``: the recorder's MP4
  segments, their names and index, the room they may take, ``latest.jpg``.

The PyAV wheel carries its own FFmpeg, built with libx264: GPL (see the README).
"""
