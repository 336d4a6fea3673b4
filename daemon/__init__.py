"""The supervisor: graph loading, worker lifecycle, restart policy, control server."""
