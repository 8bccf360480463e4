"""What keeps strangers out: admission of unauthenticated connections,
penalties, the turned-away log and busy replies; credentials, allow-lists
and key generation.  (The TLS transport is io/tls.py.)"""
