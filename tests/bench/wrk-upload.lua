-- wrk script for the small authenticated upload: an OpenAI-style multipart POST of a short WAV (16 kHz mono PCM16,
-- BENCH_UPLOAD_SECONDS long, silence) for model BENCH_UPLOAD_MODEL. The key comes from the file named by
-- BENCH_KEY_FILE, so it never appears on a command line (ps) or in the bench output.
local path = os.getenv("BENCH_KEY_FILE")
local f = assert(io.open(path, "r"), "BENCH_KEY_FILE must name a readable file holding one API key")
local key = f:read("*l")
f:close()

local function le(value, bytes)
  local out = {}
  for i = 1, bytes do
    out[i] = string.char(value % 256)
    value = math.floor(value / 256)
  end
  return table.concat(out)
end

local samples = math.floor(16000 * tonumber(os.getenv("BENCH_UPLOAD_SECONDS") or "0.1"))
local data = string.rep("\0\0", samples)
local wav = "RIFF" .. le(36 + #data, 4) .. "WAVE" .. "fmt " .. le(16, 4) .. le(1, 2) .. le(1, 2) .. le(16000, 4)
  .. le(32000, 4) .. le(2, 2) .. le(16, 2) .. "data" .. le(#data, 4) .. data
local boundary = "infergate-bench-boundary"
local model = os.getenv("BENCH_UPLOAD_MODEL") or "whisper-upload"

wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
wrk.body = "--" .. boundary .. "\r\n"
  .. "Content-Disposition: form-data; name=\"model\"\r\n\r\n" .. model .. "\r\n"
  .. "--" .. boundary .. "\r\n"
  .. "Content-Disposition: form-data; name=\"file\"; filename=\"bench.wav\"\r\n"
  .. "Content-Type: audio/wav\r\n\r\n" .. wav .. "\r\n"
  .. "--" .. boundary .. "--\r\n"
