"""The channel and what it carries, for both roles: the channel glue around the
protocol session, its parts (liveness, resume, buffer caps, peer connects),
the local streams, and what a process counts."""
