-- wrk script: GET recommendations for random users, n=10, with the default model. Users are
-- USER_FORMAT with a number below USERS: the demo shop's user-00000 .. user-09999 by default;
-- USER_FORMAT=%d USERS=100000 for the anchors' synthetic sets. Prints one JSON line.
-- See docs/benchmarks.md.
-- The API key comes from BESPOKE_KEY (`bespoke keys create`).
local key = os.getenv("BESPOKE_KEY") or error("set BESPOKE_KEY to an API key")
wrk.headers["Authorization"] = "Bearer " .. key
local users = tonumber(os.getenv("USERS") or "10000")
local format = os.getenv("USER_FORMAT") or "user-%05d"


init = function(args)
  math.randomseed(7 + (tonumber(args[1] or "0") or 0))
end

request = function()
  local user = string.format(format, math.random(0, users - 1))
  local path = "/v1/users/" .. user .. "/recommendations?n=10"
  return wrk.format("GET", path)
end

done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    '{"bench":"http_recommend","requests":%d,"seconds":%.2f,"requests_per_sec":%.0f,"latency_ms":{"p50":%.2f,"p90":%.2f,"p99":%.2f,"max":%.2f},"errors":%d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, errors))
end
