# rrbalancer in a container: the built-in demo workers on port 3000.
#   docker build -t rrbalancer .
#   docker run --rm -p 3000:3000 rrbalancer
# Mount your own config and workers and run: rrbalancer --config /etc/rrbalancer/cluster.toml
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY examples examples
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home rrbalancer
COPY --from=build /src/target/release/rrbalancer /usr/local/bin/rrbalancer
COPY config /etc/rrbalancer
USER rrbalancer
EXPOSE 3000
# Inside a container, listen on all interfaces rather than the default loopback.
ENTRYPOINT ["rrbalancer"]
CMD ["--config", "/etc/rrbalancer/cluster.toml", "--listen", "0.0.0.0:3000"]
