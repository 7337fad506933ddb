# poolpilot in a container: docker build -t poolpilot . (docs/operations.md)
# Build stage: the same command scripts/test.sh runs, so the two cannot drift apart.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY rules ./rules
COPY examples ./examples
RUN cargo build --release --locked --bin poolpilot

# Runtime: Debian slim with CA certificates, a non-root user, config and state as volumes.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/poolpilot --shell /usr/sbin/nologin poolpilot \
 && mkdir -p /etc/poolpilot /var/lib/poolpilot \
 && chown poolpilot /var/lib/poolpilot
COPY --from=build /src/target/release/poolpilot /usr/local/bin/poolpilot
USER 10001
VOLUME ["/etc/poolpilot", "/var/lib/poolpilot"]
# Variables win over the config file (docs/config.md): in a container the agent listens on
# every interface, so that the published port reaches it, and keeps state on the volume.
# Override either with `docker run -e`.
ENV POOLPILOT_LISTEN=0.0.0.0:9477 \
    POOLPILOT_STATE_DIR=/var/lib/poolpilot
EXPOSE 9477
# `poolpilot health` asks http://127.0.0.1:<port of POOLPILOT_LISTEN>/healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/poolpilot", "health"]
# SIGTERM: finish in-flight creates, save state, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/poolpilot"]
CMD ["run", "--config", "/etc/poolpilot/poolpilot.yaml"]
