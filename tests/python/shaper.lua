-- A link like an object store's, in front of an origin server on the loopback address
-- (servers.py's Nginx sets the variables): each response's first byte after $shape_latency
-- seconds, its body paced at $shape_rate bytes a second (nginx's own limit_rate lets the
-- first second's worth of every response through at once), and with $shape_faults, that
-- share of requests each answered 503 SlowDown, cut after 64 KiB, or stalled $shape_stall s.
-- The request goes on to the origin as it came (headers, Host included: an S3 signature
-- covers it), and the answer streams back: nothing is held whole.

local latency = tonumber(ngx.var.shape_latency)
local rate = tonumber(ngx.var.shape_rate)
local faults = tonumber(ngx.var.shape_faults)
local CUT = 65536

if latency > 0 then
  ngx.sleep(latency)
end
local cut = false
if faults > 0 then
  local r = math.random()
  if r < faults then
    ngx.var.fault = "503"
    ngx.status = 503
    ngx.header["Content-Type"] = "application/xml"
    ngx.say("<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>")
    return ngx.exit(503)
  elseif r < 2 * faults then
    ngx.var.fault = "cut"
    cut = true
  elseif r < 3 * faults then
    ngx.var.fault = "stall"
    ngx.sleep(tonumber(ngx.var.shape_stall))
  end
end

local origin = ngx.socket.tcp()
origin:settimeouts(10000, 60000, 60000)
local ok, err = origin:connect(ngx.var.shape_origin_host, tonumber(ngx.var.shape_origin_port))
if not ok then
  ngx.log(ngx.ERR, "cannot reach the origin: ", err)
  return ngx.exit(502)
end
local method = ngx.req.get_method()
local lines = { method .. " " .. ngx.var.request_uri .. " HTTP/1.0" }
for name, value in pairs(ngx.req.get_headers(100, true)) do
  local lower = name:lower()
  if lower ~= "connection" and lower ~= "keep-alive" then
    if type(value) == "table" then
      value = table.concat(value, ", ")
    end
    lines[#lines + 1] = name .. ": " .. value
  end
end
ngx.req.read_body()
origin:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (ngx.req.get_body_data() or ""))

local status_line = origin:receive("*l")
local status = status_line and tonumber(status_line:match("^HTTP/%d%.%d (%d+)"))
if not status then
  ngx.log(ngx.ERR, "no answer from the origin")
  return ngx.exit(502)
end
local length
while true do
  local line = origin:receive("*l")
  if not line then
    return ngx.exit(502)
  end
  if line == "" then
    break
  end
  local name, value = line:match("^([^:]+):%s*(.*)$")
  local lower = name and name:lower()
  if lower == "content-length" then
    length = tonumber(value)
  end
  if lower and lower ~= "connection" and lower ~= "keep-alive" and lower ~= "server"
      and lower ~= "date" and lower ~= "transfer-encoding" then
    ngx.header[name] = value
  end
end
ngx.status = status
ngx.send_headers()
if method == "HEAD" then
  return ngx.exit(status)
end

ngx.update_time()
local start, sent = ngx.now(), 0
while length == nil or sent < length do
  local want = 262144
  if length then
    want = math.min(want, length - sent)
  end
  local data, _, partial = origin:receive(want)
  data = data or partial
  if not data or #data == 0 then
    break
  end
  if cut and sent + #data > CUT then
    ngx.print(data:sub(1, CUT - sent))
    ngx.flush(true)
    origin:close()
    return ngx.exit(ngx.ERROR)
  end
  if not ngx.print(data) or not ngx.flush(true) then
    break
  end
  sent = sent + #data
  if rate > 0 then
    ngx.update_time()
    local due = start + sent / rate - ngx.now()
    if due > 0 then
      ngx.sleep(due)
    end
  end
end
origin:close()
