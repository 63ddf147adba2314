-- wrk script: one event per POST /v1/events, each with a fresh event_id, so every request is a
-- durable insert (not a replay). Usage (see docs/benchmarks.md):
--   wrk -t2 -c32 -d20s -s bench/wrk-single-event.lua http://127.0.0.1:8080
-- The API key comes from BESPOKE_KEY (`bespoke keys create`).
local key = os.getenv("BESPOKE_KEY") or error("set BESPOKE_KEY to an API key")
wrk.headers["Authorization"] = "Bearer " .. key
local counter = 0
local thread_id = 0

setup = function(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end

init = function(args)
  math.randomseed(42 + (tid or 0))
end

request = function()
  counter = counter + 1
  local user = math.random(1, 50000)
  local item = math.random(1, 20000)
  local body = string.format(
    '{"events":[{"event_id":"wrk-%d-%d","user":"u%d","item":"i%d","type":"view"}]}',
    tid or 0, counter, user, item)
  return wrk.format("POST", "/v1/events", { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key }, body)
end

done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    '{"bench":"ingest_single_event","connections":32,"requests":%d,"seconds":%.2f,"requests_per_sec":%.0f,"latency_ms":{"p50":%.2f,"p99":%.2f,"max":%.2f},"errors":%d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000, errors))
end
