-- wrk script for the timed runs of scripts/bench.sh: wrk's --latency prints only 50/75/90/99,
-- so print the percentiles the benchmark reports, in microseconds, as one parseable line:
--   "latency_us p50=<n> p90=<n> p99=<n> p99.9=<n> max=<n>"
-- Only done() is defined: no per-request callback, so the script costs wrk nothing while timed.
function done(summary, latency, requests)
  local line = "latency_us"
  for _, p in ipairs({ 50, 90, 99, 99.9 }) do
    line = line .. string.format(" p%g=%d", p, latency:percentile(p))
  end
  io.write(line .. string.format(" max=%d\n", latency.max))
end
