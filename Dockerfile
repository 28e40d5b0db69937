# Build: docker build -t tokend .
# Run:   docker run -p 6380:6380 tokend
FROM rust:1.88-bookworm AS build
WORKDIR /src
# Dependencies first, so code changes do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin benches \
 && for f in src/bin/tokend.rs src/bin/tokend-bench.rs benches/store.rs benches/wheel.rs benches/codec.rs; do \
      echo 'fn main() {}' > "$f"; done \
 && touch src/lib.rs \
 && cargo build --release --locked --bin tokend \
 && rm -rf src benches
COPY src ./src
COPY benches ./benches
RUN touch src/lib.rs src/bin/tokend.rs && cargo build --release --locked --bin tokend

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 tokend
COPY --from=build /src/target/release/tokend /usr/local/bin/tokend
USER tokend
EXPOSE 6380
# Listen on all interfaces inside the container; publish the port on the host
# side only where you need it. Set TOKEND_REQUIREPASS when it is reachable.
ENV TOKEND_BIND=0.0.0.0 TOKEND_PORT=6380
ENTRYPOINT ["/usr/local/bin/tokend"]
