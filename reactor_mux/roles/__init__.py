"""The two roles: the client (the multiplexer: -L/-D listeners, -R targets, and
its forward table, reconnect policy and -R re-binds) and the server (the
demultiplexer), with the forward syntax and SOCKS."""
