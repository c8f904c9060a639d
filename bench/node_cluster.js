// The hello-world cluster app the benchmark runs under Node's own primary
// (NODE_CLUSTER_SCHED_POLICY=rr|none) and under rrbalancer (protocol = "node-cluster").
//
// Uneven work (environment, like `demo-worker --slow-every N --slow-ms M`): SLOW_EVERY=N makes
// every Nth request a worker answers (its own count) busy-wait SLOW_MS (default 20) ms of CPU
// before res.end — a blocking JSON.parse: the worker's event loop does nothing else meanwhile.
'use strict';
const cluster = require('cluster');
const http = require('http');

const port = Number(process.env.PORT) || 3000;
const slowEvery = Number(process.env.SLOW_EVERY) || 0;
const slowMs = Number(process.env.SLOW_MS ?? 20);

function burnCpu(ms) {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

if (cluster.isPrimary) {
  const n = Number(process.env.WORKERS) || 2;
  for (let i = 0; i < n; i++) cluster.fork();
} else {
  let served = 0;
  http
    .createServer((req, res) => {
      served += 1;
      if (slowEvery > 0 && served % slowEvery === 0) burnCpu(slowMs);
      res.end(`handled by worker ${cluster.worker.id}, pid ${process.pid}\n`);
    })
    .listen(port);
}
