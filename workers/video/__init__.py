"""Encoded video: muxing packets into files, encoding frames, decoding pictures, with PyAV."""
