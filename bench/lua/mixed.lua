-- The memory phase: every route in turn (list, get one, create, PATCH, toggle, list with query).
-- Creates go to BENCH_WRITER_TOKEN's user so the benchmark user's list stays at 50 tasks.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
local writer = "Bearer " .. (os.getenv("BENCH_WRITER_TOKEN") or token)
local query = os.getenv("BENCH_LIST_QUERY") or ""
local step = 0

function request()
  step = step + 1
  local kind = step % 6
  if kind == 0 then
    return wrk.format("GET", "/api/tasks")
  elseif kind == 1 then
    return wrk.format("GET", "/api/tasks/" .. next_id())
  elseif kind == 2 then
    local body = string.format('{"title":"Memory task %d-%d","priority":"low","tags":["bench","mem"]}', tid, step)
    return json_request("POST", "/api/tasks", body, writer)
  elseif kind == 3 then
    return json_request("PATCH", "/api/tasks/" .. next_id(), string.format('{"description":"mem %d"}', step))
  elseif kind == 4 then
    return wrk.format("POST", "/api/tasks/" .. next_id() .. "/toggle")
  else
    return wrk.format("GET", "/api/tasks" .. query)
  end
end
