-- Page views over many signed-in sessions, for wrk (bench/wrk_outside.py).
-- Each request carries the cookies of the next session in the file given after "--" (one
-- "Cookie:" value per line), round robin: every request is a page view, a new <sentifyd-bot>
-- instance asking for its first tokens with its visitor's site login and bridge session.

local cookies = {}
local turn = 0

function init(args)
  for line in io.lines(args[1]) do
    if line ~= "" then
      cookies[#cookies + 1] = line
    end
  end
  assert(#cookies > 0, "no cookies in " .. tostring(args[1]))
end

function request()
  turn = turn % #cookies + 1
  return wrk.format("GET", nil, {
    ["Cookie"] = cookies[turn],
    ["Accept"] = "application/json",
    ["Sec-Fetch-Site"] = "same-origin",
  })
end
