-- wrk script: the visitors of visitors.lua (one of 1,000,000 at random per request), each
-- request carrying the fields a desktop Chrome sends for a cross-site ad image, and two cookies
-- besides kappe's. For benches/load/instructions.sh --script: what a visitor's real request costs.
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/ad?slot=top", {
    ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ["Accept"] = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
    ["Accept-Language"] = "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7",
    ["Accept-Encoding"] = "gzip, deflate, br, zstd",
    ["Referer"] = "https://news.example/article/123",
    ["Sec-Ch-Ua"] = "\"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"",
    ["Sec-Ch-Ua-Mobile"] = "?0",
    ["Sec-Ch-Ua-Platform"] = "\"Linux\"",
    ["Sec-Fetch-Dest"] = "image",
    ["Sec-Fetch-Mode"] = "no-cors",
    ["Sec-Fetch-Site"] = "cross-site",
    ["Priority"] = "i",
    ["Cookie"] = "kappe_id=v" .. math.random(1, 1000000) .. "; _ga=GA1.2.123456789.1700000000; consent=yes",
  })
end
