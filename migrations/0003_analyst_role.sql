-- 0003: the read-only role for analysts (contract 7: read-only twice, here as a PostgreSQL role with
-- SELECT only, besides the proxy refusing writes). NOLOGIN: tallyctl sets LOGIN and a password when it
-- sets up a cluster, so no migration carries a secret.

-- Roles are cluster-wide: several shards (databases) on one PostgreSQL server, or a rerun of the
-- migrations on a fresh database, must find the role already there and go on. A concurrent CREATE on
-- another database of the same server fails with unique_violation rather than duplicate_object.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tally_analyst') THEN
    CREATE ROLE tally_analyst NOLOGIN;
  END IF;
EXCEPTION
  WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- Read everything that exists now (including tally_schema_migrations, made by the runner) ...
GRANT USAGE ON SCHEMA public TO tally_analyst;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO tally_analyst;
-- ... and every table that later migrations create. Default privileges apply to objects created by
-- the role running this statement, which is the role that runs all migrations.
-- Partitions made later by tally_ensure_events_raw_partitions are covered too; reads through
-- events_raw need no grant on them anyway (privileges are checked on the table the query names).
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO tally_analyst;
-- No INSERT/UPDATE/DELETE/TRUNCATE grants, on purpose.
