# reactor-mux, server or client: the first argument picks the role.
#
#   docker build -t reactor-mux .
#
# Server.  The config must listen on 0.0.0.0:7000: the container's own
# loopback is out of -p's reach.
#   docker run -d --name rmux-server --init --stop-timeout 15 -p 7000:7000 \
#       -v /etc/reactor-mux:/etc/reactor-mux:ro \
#       reactor-mux server --config /etc/reactor-mux/server.toml
#
# Client.  --network host lets its -L/-D ports be the host's own.
#   docker run -d --name rmux-office --init --stop-timeout 15 --network host \
#       -v /etc/reactor-mux:/etc/reactor-mux:ro \
#       reactor-mux client --config /etc/reactor-mux/client-office.toml \
#       --persist --control /run/reactor-mux/control.sock
#   docker exec rmux-office reactor-mux status --control /run/reactor-mux/control.sock
#
# The process runs as uid 10001, and reactor-mux reads a secret (or a config
# holding secrets) only when its own user or root owns it with mode 0600:
# chown 10001:10001 and chmod 600 those files on the host, or start the
# container with --user set to the uid that owns them.  /run/reactor-mux
# belongs to 10001 (mode 0700): under another --user, mount a directory of
# that user's there (-v ...:/run/reactor-mux) or put --control elsewhere.
#
# Signals: `docker kill -s HUP NAME` re-reads the config.  `docker stop` sends
# SIGTERM, which drains open streams for up to --drain-timeout (10 s by
# default), then kills after its own timeout (10 s by default): hence
# --stop-timeout 15 above.  --init reaps and forwards signals; reactor-mux
# handles them as PID 1 too.

FROM python:3.12-slim AS build
# The codec is C, compiled through cffi when the wheel is built.  The compiler
# is whatever the base image's Debian has: a pinned version would break the
# build at its next point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# What setuptools reads to build the wheel (pyproject.toml, MANIFEST.in).
COPY pyproject.toml setup.py build_codec.py MANIFEST.in README.md LICENSE ./
COPY csrc/ csrc/
COPY reactor_mux/ reactor_mux/
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

FROM python:3.12-slim
COPY --from=build /wheels/ /wheels/
# cffi and cryptography come as wheels from PyPI.  The codec is optional to
# the build (it falls back to pure Python where no compiler works), so the
# --version under REACTOR_MUX_CODEC=c fails the image if the wheel lacks it.
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && REACTOR_MUX_CODEC=c reactor-mux --version
RUN groupadd --system --gid 10001 reactor-mux \
    && useradd --system --uid 10001 --gid reactor-mux --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin reactor-mux \
    && install -d -o reactor-mux -g reactor-mux -m 0700 /run/reactor-mux
USER 10001:10001
EXPOSE 7000
STOPSIGNAL SIGTERM
ENTRYPOINT ["reactor-mux"]
CMD ["--help"]
