"""reactor-mux: many TCP connections over one TCP channel, like ``ssh -N -L/-R``."""

__version__ = "0.1.0"
