-- GET /api/tasks/{id}, cycling over BENCH_TASK_IDS.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

function request()
  return wrk.format("GET", "/api/tasks/" .. next_id())
end
