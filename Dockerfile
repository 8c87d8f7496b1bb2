# syntax=docker/dockerfile:1
#
# The jetask image: `jetask serve`, configured by JETASK_* environment variables or by a
# jetask.toml mounted at /app/jetask.toml (serve reads ./jetask.toml when it exists).
#
#   docker build -t jetask .
#   docker run --rm -p 8080:8080 -e JETASK_NATS_URL=nats://nats.example:4222 jetask
#
# Only Cargo.toml, Cargo.lock, src/ and nats-config/auth.conf (built into `jetask dev`) are copied; BuildKit transfers just those from the build
# context (target/ is never sent).

# Build stage. Rust 1.89 is Cargo.toml's rust-version; the -bookworm variant links against the
# same glibc as the runtime stage below.
FROM rust:1.89-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY nats-config/auth.conf ./nats-config/auth.conf
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin jetask \
 && cp target/release/jetask /usr/local/bin/jetask

# Runtime stage.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --no-create-home jetask \
 && mkdir -p /app && chown jetask /app
COPY --from=builder /usr/local/bin/jetask /usr/local/bin/jetask
WORKDIR /app
USER jetask
# The default http.listen (127.0.0.1:8080) is unreachable from outside a container.
ENV JETASK_HTTP_LISTEN=0.0.0.0:8080
EXPOSE 8080
# serve stops pulling on SIGTERM and gives attempts in flight dispatch.shutdown_grace (30s)
# to finish: give the container at least that long to stop (docker stop -t 40).
STOPSIGNAL SIGTERM
CMD ["jetask", "serve"]
