-- POST /api/tasks with a JSON body (title, description, priority, tags). Same body for ours and the floor.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
local priorities = {"low", "medium", "high"}
local n = 0

function request()
  n = n + 1
  local body = string.format(
    '{"title":"Bench task %d-%d","description":"Created by the benchmark","priority":"%s","tags":["bench","load"]}',
    tid, n, priorities[n % 3 + 1])
  return json_request("POST", "/api/tasks", body)
end
