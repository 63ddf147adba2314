-- wrk script: POST /v1/users/{key}/rank with CANDIDATES random items of the demo shop
-- (sku-00000 .. ITEMS-1) for random users (user-00000 .. USERS-1). Prints one JSON line.
-- See docs/benchmarks.md. The API key comes from BESPOKE_KEY (`bespoke keys create`).
local key = os.getenv("BESPOKE_KEY") or error("set BESPOKE_KEY to an API key")
local users = tonumber(os.getenv("USERS") or "10000")
local items = tonumber(os.getenv("ITEMS") or "5000")
local candidates = tonumber(os.getenv("CANDIDATES") or "200")
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.headers["Content-Type"] = "application/json"

init = function(args)
  math.randomseed(11 + (tonumber(args[1] or "0") or 0))
end

request = function()
  local user = string.format("user-%05d", math.random(0, users - 1))
  local picked, list = {}, {}
  while #list < candidates do
    local i = math.random(0, items - 1)
    if not picked[i] then
      picked[i] = true
      list[#list + 1] = string.format('"sku-%05d"', i)
    end
  end
  local body = '{"items":[' .. table.concat(list, ",") .. ']}'
  return wrk.format("POST", "/v1/users/" .. user .. "/rank", nil, body)
end

done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    '{"bench":"http_rank","candidates":%d,"requests":%d,"seconds":%.2f,"requests_per_sec":%.0f,"latency_ms":{"p50":%.2f,"p90":%.2f,"p99":%.2f,"max":%.2f},"errors":%d}\n',
    candidates, summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, errors))
end
