-- wrk script: the visitors of visitors.lua (one of 1,000,000 at random per request), paced so
-- that each connection sends RATE_PER_CONN requests a second. The pause follows each response,
-- so a stalled response delays the next request on its connection (wrk has no latency
-- correction); at half of the weakest maximum the bias is small, and it is the same for every
-- target. done() prints the percentiles in microseconds for compare.sh to parse.
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
end
