# Tally images, built from this repository (docs/operations.md, "Docker compose").
#   docker build --target runtime  -t tally:dev .            shard_proxy, config_service,
#                                                            cluster_proxy, processor, tallyctl
#   docker build --target postgres -t tally-postgres:dev .   PostgreSQL 15 for the shard nodes
# docker-compose.yml builds both. Debian 12 (bookworm) everywhere: the same packages the local
# cluster and the tests use (scripts/install-deps.sh).
# NOTE: never built here: our machines have no Docker engine. `docker-compose config` and
# tests/compose/check_compose.sh validate the files, not the images.

# ---- build: compile every binary once (Release) -------------------------------------------------
FROM debian:bookworm AS build
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN bash /tmp/install-deps.sh --build && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake/ cmake/
COPY common/ common/
COPY shard_proxy/ shard_proxy/
COPY config_service/ config_service/
COPY cluster_proxy/ cluster_proxy/
COPY processor/ processor/
COPY tallyctl/ tallyctl/
COPY tools/ tools/
COPY tests/ tests/
COPY migrations/ migrations/
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
 && ninja -C build shard_proxy config_service cluster_proxy processor tallyctl

# ---- runtime: the Tally services, run as the unprivileged user `tally` ---------------------------
FROM debian:bookworm-slim AS runtime
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      libpq5 libpqxx-6.4 libzookeeper-mt2 libyaml-cpp0.7 libxxhash0 libsimdjson14 libssl3 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/tally --shell /usr/sbin/nologin tally \
 && mkdir -p /var/lib/tally/processor /etc/tally \
 && chown -R tally:tally /var/lib/tally
COPY --from=build /src/build/bin/shard_proxy /src/build/bin/config_service \
                  /src/build/bin/cluster_proxy /src/build/bin/processor /src/build/bin/tallyctl \
                  /usr/local/bin/
# tallyctl finds them next to its binary: /usr/local/bin/../share/tally/migrations.
COPY migrations/ /usr/local/share/tally/migrations/
# Defaults; docker-compose.yml mounts the same files from config/compose read-only.
COPY config/compose/ /etc/tally/
USER tally
WORKDIR /var/lib/tally
HEALTHCHECK NONE

# ---- postgres: a PostgreSQL 15 shard node (leader or replica, see docker/pg-entrypoint.sh) -------
FROM debian:bookworm-slim AS postgres
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends postgresql-15 postgresql-client-15 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/tally/pg /var/run/postgresql /etc/tally/postgres \
 && chown -R postgres:postgres /var/lib/tally /var/run/postgresql
COPY docker/postgres/tally.conf /etc/tally/postgres/tally.conf
COPY docker/pg-entrypoint.sh /usr/local/bin/pg-entrypoint.sh
USER postgres
ENV PGDATA=/var/lib/tally/pg/data
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/pg-entrypoint.sh"]
