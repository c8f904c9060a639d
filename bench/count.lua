-- wrk script: tally which worker served each response ("… pid <pid>" in the body) and print
-- the counts at the end as one line: "workers <pid>=<n> <pid>=<n> …".
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

counts = {}

function response(status, headers, body)
  local pid = body and string.match(body, "pid (%d+)")
  if pid then
    counts[pid] = (counts[pid] or 0) + 1
  end
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    if c then
      for pid, n in pairs(c) do
        total[pid] = (total[pid] or 0) + n
      end
    end
  end
  local line = "workers"
  for pid, n in pairs(total) do
    line = line .. " " .. pid .. "=" .. n
  end
  io.write(line .. "\n")
end
