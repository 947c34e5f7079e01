#!/bin/sh
# Entrypoint of the PostgreSQL containers (Dockerfile target `postgres`). On first start (empty
# data directory) it makes the node:
#   TALLY_PG_ROLE=leader   initdb (checksums, scram), the replication role and the tally database,
#                          like `tallyctl cluster up` (tallyctl/src/postgres_node.cpp init_leader);
#                          the schema is applied later by the one-shot `init` service.
#   TALLY_PG_ROLE=replica  pg_basebackup -R from TALLY_PG_UPSTREAM (host of the leader) into a
#                          physical slot TALLY_PG_SLOT, like init_replica: a streaming standby.
# Later starts reuse the data directory as it is (a promoted replica stays a leader). Then it
# execs postgres in the foreground as PID 1's child (compose's init).
set -eu

PGDATA=${PGDATA:-/var/lib/tally/pg/data}
BIN=/usr/lib/postgresql/15/bin
: "${TALLY_PG_ROLE:?set TALLY_PG_ROLE to leader or replica}"
: "${TALLY_ADMIN_USER:?}" "${TALLY_ADMIN_PASSWORD:?}"
: "${TALLY_REPLICATION_USER:?}" "${TALLY_REPLICATION_PASSWORD:?}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA"
  chmod 0700 "$PGDATA"
  case "$TALLY_PG_ROLE" in
    leader)
      pwfile=$(mktemp)
      printf '%s\n' "$TALLY_ADMIN_PASSWORD" > "$pwfile"
      "$BIN/initdb" -D "$PGDATA" --data-checksums --encoding=UTF8 --locale=C \
        -U "$TALLY_ADMIN_USER" --pwfile="$pwfile" --auth-local=scram-sha-256 \
        --auth-host=scram-sha-256 --no-instructions
      rm -f "$pwfile"
      cp /etc/tally/postgres/tally.conf "$PGDATA/tally.conf"
      printf "\ninclude 'tally.conf'\n" >> "$PGDATA/postgresql.conf"
      # Password authentication from the compose network (the local cluster: loopback only).
      cat > "$PGDATA/pg_hba.conf" <<HBA
local all all scram-sha-256
host all all 0.0.0.0/0 scram-sha-256
host replication $TALLY_REPLICATION_USER 0.0.0.0/0 scram-sha-256
HBA
      # Single-user mode: no server listens while the roles are made.
      sql=$(printf "CREATE ROLE %s WITH REPLICATION LOGIN PASSWORD '%s';\n" \
        "$TALLY_REPLICATION_USER" "$TALLY_REPLICATION_PASSWORD")
      echo "$sql" | "$BIN/postgres" --single -D "$PGDATA" postgres > /dev/null
      echo "CREATE DATABASE tally;" | "$BIN/postgres" --single -D "$PGDATA" postgres > /dev/null
      ;;
    replica)
      : "${TALLY_PG_UPSTREAM:?set TALLY_PG_UPSTREAM to the leader host}" "${TALLY_PG_SLOT:?}"
      until "$BIN/pg_isready" -q -h "$TALLY_PG_UPSTREAM" -p 5432; do
        echo "pg-entrypoint: waiting for $TALLY_PG_UPSTREAM"
        sleep 1
      done
      # -R writes primary_conninfo and standby.signal; -C -S a physical slot on the leader.
      PGPASSWORD="$TALLY_REPLICATION_PASSWORD" "$BIN/pg_basebackup" -h "$TALLY_PG_UPSTREAM" \
        -p 5432 -U "$TALLY_REPLICATION_USER" -D "$PGDATA" -R -X stream -C -S "$TALLY_PG_SLOT" \
        --checkpoint=fast --no-password
      ;;
    *)
      echo "pg-entrypoint: TALLY_PG_ROLE must be leader or replica, got '$TALLY_PG_ROLE'" >&2
      exit 2
      ;;
  esac
fi

exec "$BIN/postgres" -D "$PGDATA"
