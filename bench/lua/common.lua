-- Shared by every bench script (loaded with dofile from BENCH_LUA_DIR).
-- Env: BENCH_TOKEN (required; several, comma-separated, are used in turn), BENCH_TASK_IDS ("1,2,3"), BENCH_LIMIT_PER_THREAD (0 = no limit).
-- Gives: the Authorization header, next_id() cycling over the ids (per-thread offset),
-- a non-2xx count per status, an optional per-thread request limit (wrk.thread:stop()),
-- and done() printing one line "BENCH_JSON {...}" that run.py parses.
local env = os.getenv

local function required(name)
  local value = env(name)
  if value == nil or value == "" then error(name .. " is not set") end
  return value
end

-- BENCH_TOKEN may hold several tokens, comma-separated (several users): json_request() then
-- takes them in turn, so consecutive requests come from different users.
tokens = {}
for t in string.gmatch(required("BENCH_TOKEN"), "[^,]+") do tokens[#tokens + 1] = t end
token = tokens[1]
wrk.headers["Authorization"] = "Bearer " .. token
local turn = 0

local function next_token()
  turn = turn + 1
  return tokens[((tid * 7 + turn) % #tokens) + 1]
end

ids = {}
for id in string.gmatch(env("BENCH_TASK_IDS") or "", "%d+") do ids[#ids + 1] = id end

-- Per-thread globals (each wrk thread has its own Lua state); tid is set by setup().
tid = 0
counter = 0
non2xx = 0
statuses = {}
local limit = tonumber(env("BENCH_LIMIT_PER_THREAD") or "0") or 0

function next_id()
  if #ids == 0 then error("BENCH_TASK_IDS is empty") end
  counter = counter + 1
  return ids[((tid * 17 + counter) % #ids) + 1]
end

-- wrk.format() replaces wrk.headers (all but Host) when given headers: pass the token again.
function json_request(method, path, body, authorization)
  local headers = {["Authorization"] = authorization or ("Bearer " .. next_token()), ["Content-Type"] = "application/json"}
  return wrk.format(method, path, headers, body)
end

-- Main Lua state: remember every thread, to sum their counters in done().
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  threads[#threads + 1] = thread
end

local seen = 0
function response(status, headers, body)
  seen = seen + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
  end
  if limit > 0 and seen == limit then
    -- wrk's main thread sleeps for -d regardless; run.py sends SIGINT once every thread said this.
    io.write("BENCH_THREAD_DONE\n")
    io.stdout:flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local total_non2xx, codes = 0, {}
  for _, thread in ipairs(threads) do
    total_non2xx = total_non2xx + (thread:get("non2xx") or 0)
    for code, n in pairs(thread:get("statuses") or {}) do codes[code] = (codes[code] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(codes) do parts[#parts + 1] = string.format('"%s":%d', code, n) end
  local e = summary.errors
  io.write("BENCH_JSON ", string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"non2xx":%d,"statuses":{%s},' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes, total_non2xx, table.concat(parts, ","),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
