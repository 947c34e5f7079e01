-- wrk script: POST /v1/events with JSON arrays of $EVENTS events (default 1000) over $VIDEOS
-- videos (default 10000), 90% views and 10% watch_time, each with an event_id. 64 bodies
-- are built up front and rotated, so wrk's own cost per request stays small; ids repeat between
-- rotations (the log path measured here stores every event; dedup happens later, per partition).
-- Usage: EVENTS=1000 VIDEOS=10000 wrk -t1 -c16 -d20s -s tests/bench/processor_ingest.lua \
--          http://127.0.0.1:PORT/v1/events
-- (Environment variables, not script arguments: wrk runs done() in another Lua state than init().)
local bodies = {}
local n_bodies = 64
local counter = 0
local per_request = tonumber(os.getenv("EVENTS") or "1000")
local videos = tonumber(os.getenv("VIDEOS") or "10000")

function init(args)
  local now = os.time() * 1000
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
  for b = 1, n_bodies do
    local parts = {}
    for i = 1, per_request do
      local v = math.random(0, videos - 1)
      local id = string.format("w%d-b%d-e%d", math.random(0, 1e9), b, i)
      if i % 10 == 0 then
        parts[i] = string.format(
          '{"event_id":"%s","video_id":"vid%d","event_type":"watch_time","ts":%d,"value":%d}',
          id, v, now - math.random(0, 300000), math.random(1, 600000))
      else
        parts[i] = string.format('{"event_id":"%s","video_id":"vid%d","event_type":"view","ts":%d}',
          id, v, now - math.random(0, 300000))
      end
    end
    bodies[b] = "[" .. table.concat(parts, ",") .. "]"
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, bodies[(counter % n_bodies) + 1])
end

local bad = 0
function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local ok = summary.requests - summary.errors.status
  io.write(string.format("requests %d, non-200 %d, events accepted/s %.0f, p50 %.1f ms, p99 %.1f ms\n",
    summary.requests, summary.errors.status, ok * per_request / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
