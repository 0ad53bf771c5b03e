-- For scripts/bench-access-http.sh: after a wrk run, prints how many requests were answered
-- and the latency (microseconds) at fine percentiles of the run, so that the rounds of one
-- benchmark can be pooled into the p99 of all their requests.
local points = { 50, 90, 95, 97, 98, 98.5, 99, 99.1, 99.2, 99.3, 99.4, 99.5, 99.6, 99.7,
  99.8, 99.9, 99.95, 99.99 }

done = function(summary, latency, _)
  io.write(string.format("requests %d\n", summary.requests))
  for _, p in ipairs(points) do
    io.write(string.format("percentile %s %d\n", p, latency:percentile(p)))
  end
  -- wrk's percentile(100) answers 0; the slowest request is its own figure.
  io.write(string.format("percentile 100 %d\n", latency.max))
end
