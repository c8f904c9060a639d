// A Node cluster app whose shared state lives in Redis: each worker keeps the current value in
// memory and answers every request with it. It never polls Redis itself: the [agent]
// (agent.js) does, and its messages arrive here exactly as a cluster primary's
// `worker.send()` would deliver them.
'use strict';
const cluster = require('cluster');
const http = require('http');

let current = null;
process.on('message', (m) => {
  if (m && typeof m === 'object' && 'value' in m) current = m.value;
});

const server = http
  .createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ worker: cluster.worker.id, pid: process.pid, value: current }) + '\n');
  })
  .listen(Number(process.env.PORT) || 3000);
process.on('SIGTERM', () => server.close(() => process.exit(0)));
