-- 0001: the initial schema of one shard. Every shard gets the same files (see tally_schema_migrations).
--
-- Sharded tables hold only the rows whose keyspace id falls in the shard's range. Their `ksid` column
-- is u64 xxHash64(video_id) XOR 2^63 stored as a signed bigint (contract 1), computed by the
-- application, never in SQL: signed order then equals unsigned order, so the shard range [a, b) is a
-- plain `ksid >= A AND ksid < B`, and the btree on ksid lets a split copy exactly one half (and a PG 15
-- publication filter on it).
-- Reference tables (event_types, channels) hold the same rows on every shard, so reporting joins with
-- them run shard-locally and only the final merge happens in the cluster proxy.
--
-- The runner executes this file and records it in one transaction: no BEGIN/COMMIT in here.

-- Reference: the event types of contract 3. A foreign key from every table with an event_type (rather
-- than a CHECK list) lets a later migration add a type with one INSERT.
CREATE TABLE event_types (
  name text PRIMARY KEY,
  CONSTRAINT event_types_name_format CHECK (name ~ '^[a-z][a-z0-9_]{0,31}$')
);
INSERT INTO event_types (name) VALUES ('view'), ('like'), ('dislike'), ('share'), ('watch_time');

-- Reference: channel metadata, written to every shard by the cluster proxy (PUT /v1/channels/{id}).
CREATE TABLE channels (
  channel_id text PRIMARY KEY,
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT channels_channel_id_length CHECK (length(channel_id) BETWEEN 1 AND 128)
);

-- Sharded: video metadata. channel_id deliberately has no foreign key to channels: metadata may arrive
-- in any order (a video before its channel), and a channel write that reached only some shards must
-- not make video writes fail on the others. Reports join with channels; a missing channel is visible.
CREATE TABLE videos (
  video_id text PRIMARY KEY,
  title text,
  channel_id text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  ksid bigint NOT NULL,
  CONSTRAINT videos_video_id_format CHECK (video_id ~ '^[A-Za-z0-9_-]{1,64}$')
);
CREATE INDEX videos_ksid_idx ON videos (ksid);

-- Sharded: counts at write time. The apply function (a later migration) adds each minute aggregate
-- to its minute, hour and day bucket and to the totals in one transaction; a range query reads the
-- coarsest buckets that tile the range. Buckets are UTC (contract 2); the CHECK keeps a bucket_start
-- on its granularity so two rows can never describe overlapping time.
-- Counter rows are updated in place many times (every flush adds to the same rows); fillfactor leaves
-- room on each page so those updates are HOT (no index writes, less bloat): no indexed column changes.
CREATE TABLE video_stats_minute (
  video_id text NOT NULL,
  event_type text NOT NULL REFERENCES event_types (name),
  bucket_start timestamptz NOT NULL,
  count bigint NOT NULL DEFAULT 0,
  sum bigint NOT NULL DEFAULT 0,
  ksid bigint NOT NULL,
  PRIMARY KEY (video_id, event_type, bucket_start),
  CONSTRAINT video_stats_minute_video_id_format CHECK (video_id ~ '^[A-Za-z0-9_-]{1,64}$'),
  CONSTRAINT video_stats_minute_bucket_aligned
    CHECK (date_trunc('minute', bucket_start AT TIME ZONE 'UTC') = bucket_start AT TIME ZONE 'UTC'),
  CONSTRAINT video_stats_minute_count_nonnegative CHECK (count >= 0)
) WITH (fillfactor = 85);
CREATE INDEX video_stats_minute_ksid_idx ON video_stats_minute (ksid);

CREATE TABLE video_stats_hour (
  video_id text NOT NULL,
  event_type text NOT NULL REFERENCES event_types (name),
  bucket_start timestamptz NOT NULL,
  count bigint NOT NULL DEFAULT 0,
  sum bigint NOT NULL DEFAULT 0,
  ksid bigint NOT NULL,
  PRIMARY KEY (video_id, event_type, bucket_start),
  CONSTRAINT video_stats_hour_video_id_format CHECK (video_id ~ '^[A-Za-z0-9_-]{1,64}$'),
  CONSTRAINT video_stats_hour_bucket_aligned
    CHECK (date_trunc('hour', bucket_start AT TIME ZONE 'UTC') = bucket_start AT TIME ZONE 'UTC'),
  CONSTRAINT video_stats_hour_count_nonnegative CHECK (count >= 0)
) WITH (fillfactor = 85);
CREATE INDEX video_stats_hour_ksid_idx ON video_stats_hour (ksid);

CREATE TABLE video_stats_day (
  video_id text NOT NULL,
  event_type text NOT NULL REFERENCES event_types (name),
  bucket_start timestamptz NOT NULL,
  count bigint NOT NULL DEFAULT 0,
  sum bigint NOT NULL DEFAULT 0,
  ksid bigint NOT NULL,
  PRIMARY KEY (video_id, event_type, bucket_start),
  CONSTRAINT video_stats_day_video_id_format CHECK (video_id ~ '^[A-Za-z0-9_-]{1,64}$'),
  CONSTRAINT video_stats_day_bucket_aligned
    CHECK (date_trunc('day', bucket_start AT TIME ZONE 'UTC') = bucket_start AT TIME ZONE 'UTC'),
  CONSTRAINT video_stats_day_count_nonnegative CHECK (count >= 0)
) WITH (fillfactor = 85);
CREATE INDEX video_stats_day_ksid_idx ON video_stats_day (ksid);

-- Sharded: all-time totals per video and type, so "since ever" is one row.
CREATE TABLE video_totals (
  video_id text NOT NULL,
  event_type text NOT NULL REFERENCES event_types (name),
  count bigint NOT NULL DEFAULT 0,
  sum bigint NOT NULL DEFAULT 0,
  ksid bigint NOT NULL,
  PRIMARY KEY (video_id, event_type),
  CONSTRAINT video_totals_video_id_format CHECK (video_id ~ '^[A-Za-z0-9_-]{1,64}$'),
  CONSTRAINT video_totals_count_nonnegative CHECK (count >= 0)
) WITH (fillfactor = 85);
CREATE INDEX video_totals_ksid_idx ON video_totals (ksid);

-- Sharded: raw events for audits (recompute aggregates from the source), kept N days. Partitioned by
-- day on ts so retention drops whole partitions instead of DELETE + VACUUM; daily partitions are made
-- by tally_ensure_events_raw_partitions (0002). The DEFAULT partition takes events of days that have
-- no partition yet, so an insert never fails for lack of one. event_id is optional (contract 3) and
-- not unique here: dedup happens in the processor, and a unique key would have to include ts anyway.
-- Only the ksid index: every index costs ingest, and audits read one day's partition at a time.
CREATE TABLE events_raw (
  event_id text,
  video_id text NOT NULL,
  event_type text NOT NULL REFERENCES event_types (name),
  ts timestamptz NOT NULL,
  value bigint NOT NULL DEFAULT 0,
  ksid bigint NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT events_raw_video_id_format CHECK (video_id ~ '^[A-Za-z0-9_-]{1,64}$')
) PARTITION BY RANGE (ts);
CREATE TABLE events_raw_default PARTITION OF events_raw DEFAULT;
CREATE INDEX events_raw_ksid_idx ON events_raw (ksid);

-- Per shard, not sharded by ksid: the idempotency record of contract 4. For each processor and log
-- partition, `mark` is the highest log offset whose events this shard holds; the apply function updates
-- it in the same transaction as the counts, so a retried or replayed batch is never counted twice.
-- (A shard split must copy these rows to both halves.)
CREATE TABLE apply_marks (
  processor_id text NOT NULL,
  partition integer NOT NULL,
  mark bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (processor_id, partition),
  CONSTRAINT apply_marks_processor_id_nonempty CHECK (processor_id <> ''),
  CONSTRAINT apply_marks_partition_nonnegative CHECK (partition >= 0)
);

COMMENT ON TABLE event_types IS 'Reference (same rows on every shard): the event types.';
COMMENT ON TABLE channels IS 'Reference (same rows on every shard): channel metadata.';
COMMENT ON TABLE videos IS 'Sharded by ksid: video metadata.';
COMMENT ON TABLE video_stats_minute IS 'Sharded by ksid: count and sum of value per video, type and UTC minute.';
COMMENT ON TABLE video_stats_hour IS 'Sharded by ksid: count and sum of value per video, type and UTC hour.';
COMMENT ON TABLE video_stats_day IS 'Sharded by ksid: count and sum of value per video, type and UTC day.';
COMMENT ON TABLE video_totals IS 'Sharded by ksid: all-time count and sum of value per video and type.';
COMMENT ON TABLE events_raw IS 'Sharded by ksid: raw events, partitioned by UTC day of ts, kept N days.';
COMMENT ON TABLE apply_marks IS 'Per shard: highest applied log offset per processor and partition.';
COMMENT ON COLUMN videos.ksid IS 'xxHash64(video_id) XOR 2^63 as signed bigint (keyspace id).';
