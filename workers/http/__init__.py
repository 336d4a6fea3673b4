"""HTTP and MJPEG helpers shared by the preview block and the daemon's live wire views."""
