-- wrk script: GET /v1/videos/v<id>/stats for Zipf-distributed ids (P(k) ~ 1/k^S over 1..VIDEOS,
-- default S=1.1, VIDEOS=10000) over a fixed range (START..END, ISO 8601). The id is drawn from a
-- precomputed CDF by binary search, so wrk's own cost per request stays small. done() prints one
-- line "RESULT {json}" with requests, duration, errors and latency percentiles (microseconds).
-- Usage: VIDEOS=10000 START=2025-11-21T22:30:00Z END=2025-11-23T01:15:00Z \
--          wrk -t2 -c16 -d10s -s tests/bench/cluster_proxy_stats.lua http://127.0.0.1:PORT
-- (Environment variables, not script arguments: wrk runs done() in another Lua state than init().)
local videos = tonumber(os.getenv("VIDEOS") or "10000")
local s = tonumber(os.getenv("ZIPF_S") or "1.1")
local start_at = os.getenv("START") or "2025-11-21T22:30:00Z"
local end_at = os.getenv("END") or "2025-11-23T01:15:00Z"
local cdf = {}

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6) + tonumber(tostring({}):sub(8), 16) % 100000)
  local total = 0
  for k = 1, videos do
    total = total + 1 / (k ^ s)
    cdf[k] = total
  end
  for k = 1, videos do cdf[k] = cdf[k] / total end
end

local function zipf()
  local u = math.random()
  local lo, hi = 1, videos
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return lo
end

function request()
  return wrk.format("GET", "/v1/videos/v" .. zipf() .. "/stats?event_type=view&start=" ..
                    start_at .. "&end=" .. end_at)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write, errors.status,
    errors.timeout, latency:percentile(50), latency:percentile(99), latency.mean))
end
