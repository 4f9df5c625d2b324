# fwdist: one binary serving FTPS (IQs) and the admin HTTP API.
# Build: docker build -t fwdist .
# Run:   docker run -p 2121:2121 -p 50000-50049:50000-50049 -p 8080:8080 \
#          -e FWDIST_FTPS__LISTEN=0.0.0.0:2121 -e FWDIST_ADMIN__LISTEN=0.0.0.0:8080 \
#          -e FWDIST_FTPS__PUBLIC_HOST=<address IQs reach> -v fwdist-data:/var/lib/fwdist fwdist
# fwdist limits sessions per client address (ftps.max_sessions_per_ip, default 16) and needs
# the IQ's real address: publish ports so the source address survives (Docker's iptables DNAT
# does; its userland proxy, used for connections from the host itself, does not), or run with
# --network host. A few passive ports are enough (see bench/README.md, "Passive ports").
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY src ./src
COPY migrations ./migrations
RUN cargo build --release --locked --bin fwdist

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/fwdist --create-home fwdist
COPY --from=build /src/target/release/fwdist /usr/local/bin/fwdist
USER fwdist
WORKDIR /var/lib/fwdist
VOLUME /var/lib/fwdist
EXPOSE 2121 8080 50000-50049
ENTRYPOINT ["/usr/local/bin/fwdist"]
CMD ["serve"]
