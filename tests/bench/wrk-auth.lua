-- wrk script for the authenticated HTTP bench: reads the API key from the file named by BENCH_KEY_FILE so the
-- key never appears on a command line (ps) or in the bench output.
local path = os.getenv("BENCH_KEY_FILE")
local f = assert(io.open(path, "r"), "BENCH_KEY_FILE must name a readable file holding one API key")
local key = f:read("*l")
f:close()
wrk.headers["Authorization"] = "Bearer " .. key
