-- wrk script: a mix of visitors for deploy/pgo.sh to train kappe's build on, so that the paths
-- besides the comparison's common one are not laid out as rare. Of every 20 requests: 12 like
-- visitors.lua (one of 1,000,000 visitors, a Host and a Cookie), 3 with a browser's fields as in
-- browser.lua, and one each without a cookie (a new visitor), with Sec-GPC, with DNT, with
-- kappe's opt-out cookie, with a TCF consent string, and with a US Privacy opt-out.
math.randomseed(os.time())
local ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
local tc = "COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA"
local n = 0
local function visitor()
  return "kappe_id=v" .. math.random(1, 1000000)
end
request = function()
  n = n + 1
  local k = n % 20
  if k < 12 then
    return wrk.format("GET", "/ad?slot=top", { ["Cookie"] = visitor() })
  elseif k < 15 then
    return wrk.format("GET", "/ad?slot=top", {
      ["User-Agent"] = ua,
      ["Accept"] = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
      ["Accept-Language"] = "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7",
      ["Accept-Encoding"] = "gzip, deflate, br, zstd",
      ["Referer"] = "https://news.example/article/123",
      ["Sec-Fetch-Dest"] = "image",
      ["Sec-Fetch-Mode"] = "no-cors",
      ["Sec-Fetch-Site"] = "cross-site",
      ["Cookie"] = visitor() .. "; _ga=GA1.2.123456789.1700000000; consent=yes",
    })
  elseif k == 15 then
    return wrk.format("GET", "/ad?slot=top", { ["User-Agent"] = ua })
  elseif k == 16 then
    return wrk.format("GET", "/ad?slot=top", { ["Cookie"] = visitor(), ["Sec-GPC"] = "1" })
  elseif k == 17 then
    return wrk.format("GET", "/ad?slot=top", { ["Cookie"] = visitor(), ["DNT"] = "1" })
  elseif k == 18 then
    return wrk.format("GET", "/ad?slot=top", { ["Cookie"] = visitor() .. "; kappe_optout=1" })
  else
    return wrk.format("GET", "/ad?slot=top&gdpr=1&gdpr_consent=" .. tc .. "&us_privacy=1YYN",
      { ["Cookie"] = visitor() })
  end
end
