"""Running as a service: signals and reload, the control socket and status,
/metrics, the config file, log files."""
