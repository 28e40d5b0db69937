# Build: docker build -t tokend .
# Run:   docker run -p 6380:6380 -e TOKEND_REQUIREPASS=change-me tokend
#        Clients reach the container through Docker's bridge, not loopback,
#        so without a password protected mode answers them -DENIED; set
#        TOKEND_REQUIREPASS (or, on a trusted network only,
#        TOKEND_PROTECTED_MODE=no). Then: redis-cli -p 6380 -a change-me PING
FROM rust:1.88-bookworm AS build
WORKDIR /src
# Dependencies first, so code changes do not rebuild them: the workspace's
# manifests with empty sources.
COPY Cargo.toml Cargo.lock ./
COPY tokend-bench/Cargo.toml tokend-bench/
RUN mkdir -p src/bin benches tokend-bench/src \
 && for f in src/bin/tokend.rs tokend-bench/src/main.rs benches/store.rs benches/wheel.rs benches/codec.rs; do \
      echo 'fn main() {}' > "$f"; done \
 && touch src/lib.rs \
 && cargo build --release --locked --bin tokend \
 && rm -rf src benches tokend-bench/src
COPY src ./src
COPY benches ./benches
COPY tokend-bench/src ./tokend-bench/src
RUN touch src/lib.rs src/bin/tokend.rs && cargo build --release --locked --bin tokend

# The binary links only glibc's libraries (libc, libm, libgcc_s), so the
# runtime image is Debian slim of the same release as the build image.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 tokend
COPY --from=build /src/target/release/tokend /usr/local/bin/tokend
USER tokend
EXPOSE 6380 9187
# Listen on all interfaces inside the container; publish the port on the host
# side only where you need it.
ENV TOKEND_BIND=0.0.0.0 TOKEND_PORT=6380
# Healthy once it answers PING (while it loads from a backing Redis it
# answers -LOADING: not yet healthy). Uses the same TOKEND_* settings.
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 CMD ["/usr/local/bin/tokend", "--ping"]
ENTRYPOINT ["/usr/local/bin/tokend"]
