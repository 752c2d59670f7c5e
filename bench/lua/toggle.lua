-- POST /api/tasks/{id}/toggle (no body), cycling over BENCH_TASK_IDS.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

function request()
  return wrk.format("POST", "/api/tasks/" .. next_id() .. "/toggle")
end
