-- 0004: the idempotent counter apply of contract 4 (docs/contracts.md, contract 9), called by the
-- cluster proxy for POST /v1/counters:apply with one shard's part of a processor batch.
--
-- tally_apply_counters(processor_id, partition, from_offset, to_offset, rows) runs in the caller's
-- transaction (one statement in autocommit: one transaction) and
--   * locks the (processor_id, partition) row of apply_marks, creating it with mark -1 ("holds
--     nothing": log offsets start at 0) when the shard has never seen that partition;
--   * answers ('already_applied', mark) when to_offset <= mark: nothing changes;
--   * answers ('overlap', mark) when from_offset < mark < to_offset: nothing changes, the batch
--     straddles the mark and the caller's state is inconsistent with the shard's;
--   * otherwise (from_offset >= mark) adds every row to its minute, hour and day bucket and to the
--     video's totals, sets mark = to_offset, and answers ('applied', to_offset).
-- Counts and the mark change in the same transaction, so a retried, replayed or concurrent
-- duplicate batch is never counted twice and a failed one leaves no trace.
--
-- rows: a JSON array of {"video_id": text, "event_type": text, "minute": epoch ms of a whole UTC
-- minute, "count": bigint >= 0, "sum": bigint, "ksid": bigint}. `ksid` is contract 1's signed
-- keyspace id; PostgreSQL cannot compute xxHash64, so the cluster proxy adds it (the processor does
-- not send it). Rows for the same (video, type, minute) may repeat: they are summed first.
-- Constraints of 0001 check the rest (video id format, known event type, minute alignment,
-- count >= 0); a violation fails the whole call with that constraint's SQLSTATE.
CREATE FUNCTION tally_apply_counters(processor_id text, partition integer, from_offset bigint,
                                     to_offset bigint, rows jsonb)
RETURNS TABLE(outcome text, mark bigint)
LANGUAGE plpgsql
AS $$
DECLARE
  current_mark bigint;
BEGIN
  IF processor_id IS NULL OR processor_id = '' OR partition IS NULL OR partition < 0
     OR from_offset IS NULL OR to_offset IS NULL OR from_offset < -1 OR from_offset >= to_offset
  THEN
    RAISE EXCEPTION 'tally_apply_counters: need a processor id, a partition >= 0 and offsets '
                    '-1 <= from_offset < to_offset, got %, %, %, %',
                    quote_nullable(processor_id), partition, from_offset, to_offset
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF rows IS NULL OR jsonb_typeof(rows) <> 'array' THEN
    RAISE EXCEPTION 'tally_apply_counters: rows must be a JSON array, got %',
                    coalesce(jsonb_typeof(rows), 'NULL')
      USING ERRCODE = 'invalid_parameter_value';
  END IF;

  -- The mark row is the lock that serialises batches of one partition on this shard.
  INSERT INTO apply_marks AS m (processor_id, partition, mark)
  VALUES (tally_apply_counters.processor_id, tally_apply_counters.partition, -1)
  ON CONFLICT ON CONSTRAINT apply_marks_pkey DO NOTHING;
  SELECT m.mark INTO current_mark
  FROM apply_marks AS m
  WHERE m.processor_id = tally_apply_counters.processor_id
    AND m.partition = tally_apply_counters.partition
  FOR UPDATE;

  IF to_offset <= current_mark THEN
    RETURN QUERY SELECT 'already_applied'::text, current_mark;
    RETURN;
  END IF;
  IF from_offset < current_mark THEN
    RETURN QUERY SELECT 'overlap'::text, current_mark;
    RETURN;
  END IF;

  -- One statement for all four tables: the JSON is decoded once, and every row lock is taken in
  -- key order (ORDER BY), so concurrent batches of different partitions do not deadlock on rows
  -- they share. Data-modifying CTEs always run to completion, whether or not the query reads them;
  -- the totals are the statement's own INSERT.
  WITH input AS (
    SELECT r.video_id, r.event_type,
           timestamptz 'epoch' + r.minute * interval '1 millisecond' AS minute_start,
           r.count, r.sum, r.ksid
    FROM jsonb_to_recordset(rows) AS r(video_id text, event_type text, minute bigint, count bigint,
                                        sum bigint, ksid bigint)
  ), per_minute AS (
    SELECT i.video_id, i.event_type, i.minute_start, sum(i.count)::bigint AS count,
           sum(i.sum)::bigint AS sum, max(i.ksid) AS ksid
    FROM input AS i
    GROUP BY i.video_id, i.event_type, i.minute_start
  ), minute_rows AS (
    INSERT INTO video_stats_minute AS t (video_id, event_type, bucket_start, count, sum, ksid)
    SELECT p.video_id, p.event_type, p.minute_start, p.count, p.sum, p.ksid
    FROM per_minute AS p
    ORDER BY 1, 2, 3
    ON CONFLICT (video_id, event_type, bucket_start)
    DO UPDATE SET count = t.count + excluded.count, sum = t.sum + excluded.sum
  ), hour_rows AS (
    INSERT INTO video_stats_hour AS t (video_id, event_type, bucket_start, count, sum, ksid)
    SELECT p.video_id, p.event_type, date_trunc('hour', p.minute_start, 'UTC'), sum(p.count),
           sum(p.sum), max(p.ksid)
    FROM per_minute AS p
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (video_id, event_type, bucket_start)
    DO UPDATE SET count = t.count + excluded.count, sum = t.sum + excluded.sum
  ), day_rows AS (
    INSERT INTO video_stats_day AS t (video_id, event_type, bucket_start, count, sum, ksid)
    SELECT p.video_id, p.event_type, date_trunc('day', p.minute_start, 'UTC'), sum(p.count),
           sum(p.sum), max(p.ksid)
    FROM per_minute AS p
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (video_id, event_type, bucket_start)
    DO UPDATE SET count = t.count + excluded.count, sum = t.sum + excluded.sum
  )
  INSERT INTO video_totals AS t (video_id, event_type, count, sum, ksid)
  SELECT p.video_id, p.event_type, sum(p.count), sum(p.sum), max(p.ksid)
  FROM per_minute AS p
  GROUP BY 1, 2
  ORDER BY 1, 2
  ON CONFLICT (video_id, event_type)
  DO UPDATE SET count = t.count + excluded.count, sum = t.sum + excluded.sum;

  UPDATE apply_marks AS m
  SET mark = to_offset, updated_at = now()
  WHERE m.processor_id = tally_apply_counters.processor_id
    AND m.partition = tally_apply_counters.partition;
  RETURN QUERY SELECT 'applied'::text, to_offset;
END
$$;

-- Only the schema owner (the role the cluster proxy connects as) applies counters; analysts and
-- PUBLIC never.
REVOKE EXECUTE ON FUNCTION tally_apply_counters(text, integer, bigint, bigint, jsonb) FROM PUBLIC;

-- No (event_type, bucket_start) index for GET /v1/top on purpose: with one, the planner chose it
-- for point reads (a video's buckets) whenever statistics were stale or a time slice looked
-- sparse, turning a 0.3 ms read into 35 ms (measured). Point reads are the hot path; a top-N is
-- a report and scans.
