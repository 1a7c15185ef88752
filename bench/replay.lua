-- Replays pre-signed requests with wrk: `wrk -s replay.lua URL -- FILE`.
-- FILE.<n> holds thread n's requests, each as "<length>\n<raw HTTP request>". Each thread
-- sends its own requests in order and starts over when it runs out (counted as `wraps`, so
-- the harness can tell when an ingest run re-sent ids). done() prints one JSON line.
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local requests, n, i = {}, 0, 0
-- Globals, so that done() can read them from each thread with thread:get().
statuses = {}
wraps = 0

function init(args)
  local f = assert(io.open(args[1] .. "." .. id, "rb"))
  while true do
    local line = f:read("*l")
    if not line then break end
    n = n + 1
    requests[n] = f:read(tonumber(line))
  end
  f:close()
end

function request()
  i = i + 1
  if i > n then
    i = 1
    wraps = wraps + 1
  end
  return requests[i]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local merged, total_wraps = {}, 0
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      merged[tostring(status)] = (merged[tostring(status)] or 0) + count
    end
    total_wraps = total_wraps + thread:get("wraps")
  end
  local parts = {}
  for status, count in pairs(merged) do
    table.insert(parts, string.format('"%s": %d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us": %d, "requests": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "mean_us": %.1f, "wraps": %d, "statuses": {%s}, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.duration, summary.requests, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, total_wraps, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.status, e.timeout))
end
