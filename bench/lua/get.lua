-- GET the URL's path as is (list routes, list with a query string). Auth header only.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
