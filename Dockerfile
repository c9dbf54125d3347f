# syntax=docker/dockerfile:1
# One image for every role: `docker run IMAGE serve`, `... work`, `... migrate`.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when the manifests or
# Cargo.lock change. The stubs stand in for the sources and benches Cargo.toml names,
# and for the test harness, a member of the workspace (tests/support).
COPY Cargo.toml Cargo.lock ./
COPY tests/support/Cargo.toml tests/support/
RUN mkdir -p src benches tests/support/src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs tests/support/src/lib.rs \
 && for b in sum waiters throughput prefetch e2e; do echo 'fn main() {}' > "benches/$b.rs"; done \
 && cargo build --release --locked --bin sumsvc \
 && rm -rf src
COPY src src
# Newer than the stubs, so Cargo rebuilds the crate itself.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin sumsvc \
 && strip target/release/sumsvc

FROM debian:bookworm-slim
# The binary needs the C library, OpenSSL and the CA certificates (TLS to PostgreSQL,
# RabbitMQ and Redis); no shell tools, no HTTP client (`sumsvc probe` is the health
# check).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin sumsvc
COPY --from=build /src/target/release/sumsvc /usr/local/bin/sumsvc
COPY config/sumsvc.toml /etc/sumsvc/sumsvc.toml
ENV SUMSVC_CONFIG=/etc/sumsvc/sumsvc.toml \
    SUMSVC_LISTEN=0.0.0.0:8000
USER sumsvc:sumsvc
EXPOSE 8000
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sumsvc"]
CMD ["serve"]
