-- wrk script: the visitors of visitors.lua (one of 1,000,000 at random per request), paced so
-- that each connection sends RATE_PER_CONN requests a second. The pause follows each response,
-- so a stalled response delays the next request on its connection (wrk has no latency
-- correction); at half of the weakest maximum the bias is small, and it is the same for every
-- target. done() prints the percentiles in microseconds for report.py to parse.
math.randomseed(os.time())
local period_ms = 1000 / tonumber(os.getenv("RATE_PER_CONN") or "100")
request = function()
  return wrk.format("GET", "/ad?slot=top", { ["Cookie"] = "kappe_id=v" .. math.random(1, 1000000) })
end
delay = function()
  -- wrk takes whole milliseconds: round at random so the mean period is exact.
  return math.floor(period_ms + math.random())
end
done = function(summary, latency, requests)
  io.write(string.format("PACED requests=%d seconds=%.3f non2xx=%d errors=%d p50=%d p99=%d p999=%d\n",
    summary.requests, summary.duration / 1e6, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
  -- The run's quantiles on a grid that is finer towards the tail (0.5% steps to the 90th,
  -- 0.05% to the 99th, 0.01% to the 100th), so that report.py can pool the runs of a target
  -- into one distribution and read its percentiles from all of their requests.
  local q = {}
  local function add(from, to, step)
    for i = 0, math.floor((to - from) / step + 0.5) - 1 do
      local p = from + i * step
      q[#q + 1] = string.format("%g:%d", p, latency:percentile(p))
    end
  end
  add(0.5, 90, 0.5)
  add(90, 99, 0.05)
  add(99, 100, 0.01)
  q[#q + 1] = string.format("100:%d", latency.max)
  io.write("QUANTILES ", table.concat(q, " "), "\n")
end
