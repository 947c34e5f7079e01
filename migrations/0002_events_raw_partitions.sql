-- 0002: daily partitions of events_raw and their retention. Called by maintenance (tallyctl, the
-- processor), not here: a migration stays independent of the day it runs. Both functions are
-- idempotent and run with the caller's rights; only the schema owner can use them.

-- Creates events_raw_YYYYMMDD for the UTC days [from_day, from_day + days) that do not exist yet and
-- returns how many it created. Rows of such a day that already sit in the DEFAULT partition (events
-- that arrived before their partition) are moved into the new partition, since PostgreSQL refuses to
-- add a partition whose range the DEFAULT partition still holds rows of.
-- A partition is made as a plain table and ATTACHed: ATTACH locks the parent in SHARE UPDATE EXCLUSIVE
-- mode, which lets inserts into other days go on (CREATE TABLE ... PARTITION OF would block them all).
CREATE FUNCTION tally_ensure_events_raw_partitions(from_day date, days integer)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
  d date;
  part text;
  lo text;
  hi text;
  created integer := 0;
BEGIN
  IF from_day IS NULL OR days IS NULL OR days < 0 OR days > 3660 THEN
    RAISE EXCEPTION 'tally_ensure_events_raw_partitions: need a day and 0..3660 days, got % and %',
      from_day, days
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- SHARE UPDATE EXCLUSIVE conflicts with itself but not with inserts: two callers never race to
  -- create the same partition, and ingest is not blocked.
  LOCK TABLE ONLY events_raw IN SHARE UPDATE EXCLUSIVE MODE;
  FOR i IN 0 .. days - 1 LOOP
    d := from_day + i;
    part := 'events_raw_' || to_char(d, 'YYYYMMDD');
    CONTINUE WHEN to_regclass(quote_ident(part)) IS NOT NULL;
    IF created = 0 THEN
      -- ATTACH takes this lock anyway; taking it before moving rows keeps an insert for the same
      -- day from landing in the DEFAULT partition between the move and the ATTACH.
      LOCK TABLE events_raw_default IN ACCESS EXCLUSIVE MODE;
    END IF;
    -- Explicit UTC offsets: bounds do not depend on the session's TimeZone or DateStyle.
    lo := to_char(d, 'YYYY-MM-DD') || ' 00:00:00+00';
    hi := to_char(d + 1, 'YYYY-MM-DD') || ' 00:00:00+00';
    EXECUTE format('CREATE TABLE %I (LIKE events_raw INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
    EXECUTE format('WITH moved AS (DELETE FROM events_raw_default WHERE ts >= %L AND ts < %L '
                   'RETURNING *) INSERT INTO %I SELECT * FROM moved', lo, hi, part);
    EXECUTE format('ALTER TABLE events_raw ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   part, lo, hi);
    created := created + 1;
  END LOOP;
  RETURN created;
END
$$;

-- Retention: drops every daily partition of a UTC day before `day` and deletes the DEFAULT
-- partition's rows before it; returns the number of partitions dropped. Dropping a partition is
-- instant and leaves no dead rows, unlike DELETE. It briefly locks events_raw (ACCESS EXCLUSIVE);
-- run it off-peak, e.g. daily.
CREATE FUNCTION tally_drop_events_raw_before(day date)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
  part text;
  dropped integer := 0;
BEGIN
  IF day IS NULL THEN
    RAISE EXCEPTION 'tally_drop_events_raw_before: day must not be null'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  FOR part IN
    SELECT c.relname
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'events_raw'::regclass
      AND c.relname ~ '^events_raw_[0-9]{8}$'
      AND to_date(substring(c.relname FROM 12), 'YYYYMMDD') < day
    ORDER BY c.relname
  LOOP
    EXECUTE format('DROP TABLE %I', part);
    dropped := dropped + 1;
  END LOOP;
  DELETE FROM events_raw_default WHERE ts < (day::timestamp AT TIME ZONE 'UTC');
  RETURN dropped;
END
$$;

-- Functions are executable by PUBLIC by default. These would fail for anyone but the owner anyway
-- (they need CREATE, DROP and DELETE), but say so: maintenance is not for analysts or applications.
REVOKE EXECUTE ON FUNCTION tally_ensure_events_raw_partitions(date, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION tally_drop_events_raw_before(date) FROM PUBLIC;
