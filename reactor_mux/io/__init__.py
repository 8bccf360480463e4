"""The reactor and its transports: the selectors loop, TCP and TLS channels,
listeners, connects, name resolution, and socket helpers."""
