# rrbalancer in a container: the built-in demo workers on port 3000.
#   docker build -t rrbalancer .
#   docker run --rm -p 3000:3000 rrbalancer
# Mount your own config and workers and run: rrbalancer --config /etc/rrbalancer/cluster.toml
# (Images are not built in this repository's CI, which has no container runtime: see README.)
FROM rust:1-bookworm AS build
WORKDIR /src
# A stripped binary without debug info (the crate's own release profile keeps line tables for
# profiling). Set before the first build, so that the dependency layer below is reused.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
# The dependencies first, in a layer of their own: rebuilt only when Cargo.toml or Cargo.lock
# change, not on every change to the source.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src src
# COPY keeps the files' own times, which may be older than the placeholder's build: touch them
# so that cargo rebuilds the crate rather than keep the placeholder.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 rrbalancer \
    && useradd --system --uid 10001 --gid 10001 --no-create-home rrbalancer
COPY --from=build /src/target/release/rrbalancer /usr/local/bin/rrbalancer
COPY config /etc/rrbalancer
USER rrbalancer
EXPOSE 3000
# Healthy while the master serves: it answers on its control socket (found from the config file
# as any `rrbalancer status` finds it) with at least one worker ready, and is not stopping.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["rrbalancer", "--config", "/etc/rrbalancer/cluster.toml", "status", "--ready"]
# TERM is a graceful stop: the workers finish within [shutdown] kill_timeout (5s in the shipped
# config), under `docker stop`'s default 10 s (raise --stop-timeout with kill_timeout).
STOPSIGNAL SIGTERM
# As PID 1 the master also reaps any orphan that ends up with it.
ENTRYPOINT ["rrbalancer"]
# Inside a container, listen on all interfaces rather than the default loopback.
CMD ["--config", "/etc/rrbalancer/cluster.toml", "--listen", "0.0.0.0:3000"]
