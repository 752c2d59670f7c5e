-- PATCH /api/tasks/{id} (description + priority), cycling over BENCH_TASK_IDS.
-- Leaves title, tags and completed alone, so the list_query route's result stays the same.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
local priorities = {"low", "medium", "high"}

function request()
  local id = next_id()
  local body = string.format('{"description":"Edited by the benchmark (%d)","priority":"%s"}',
    counter, priorities[counter % 3 + 1])
  return json_request("PATCH", "/api/tasks/" .. id, body)
end
