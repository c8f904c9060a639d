// The hello-world cluster app the benchmark runs under Node's own primary
// (NODE_CLUSTER_SCHED_POLICY=rr|none) and under rrbalancer (protocol = "node-cluster").
'use strict';
const cluster = require('cluster');
const http = require('http');

const port = Number(process.env.PORT) || 3000;
if (cluster.isPrimary) {
  const n = Number(process.env.WORKERS) || 2;
  for (let i = 0; i < n; i++) cluster.fork();
} else {
  http
    .createServer((req, res) => res.end(`handled by worker ${cluster.worker.id}, pid ${process.pid}\n`))
    .listen(port);
}
