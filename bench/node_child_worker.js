// scripts/node/worker.js (the seeds-style worker, protocol = "node") with the benchmark's
// uneven work added, for bench/node-child-uneven.toml. worker.js itself stays unchanged: this
// wraps the request handler it passes to http.createServer, then loads it.
//
// Uneven work (environment, like `demo-worker --slow-every N --slow-ms M` and
// bench/node_cluster.js): SLOW_EVERY=N makes every Nth request this worker answers busy-wait
// SLOW_MS (default 20) ms of CPU before worker.js's handler runs (and calls res.end). Unset,
// the handler is worker.js's own.
'use strict';
const http = require('http');

const slowEvery = Number(process.env.SLOW_EVERY) || 0;
const slowMs = Number(process.env.SLOW_MS ?? 20);

function burnCpu(ms) {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

if (slowEvery > 0) {
  const createServer = http.createServer;
  let served = 0;
  http.createServer = (handler) =>
    createServer((req, res) => {
      served += 1;
      if (served % slowEvery === 0) burnCpu(slowMs);
      handler(req, res);
    });
}
require('../scripts/node/worker.js');
