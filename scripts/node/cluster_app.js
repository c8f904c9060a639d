// A textbook Node.js cluster app: run it with `node cluster_app.js` and Node's own primary
// forks the workers; run it under rrbalancer (config/node-cluster.toml) and rrbalancer is the
// primary: `cluster.isPrimary` is false in every process it starts. Its one addition to the
// textbook is the SIGTERM handler every Node server needs to stop without cutting requests
// (Docker, Kubernetes, systemd, PM2 and rrbalancer all stop a process with a signal), written
// as README's "Keep-alive clients: no error on reload" says: from the signal on, each answer
// closes its connection, and idle keep-alive connections are closed only after a grace —
// closing them at once races a request already on its way.
'use strict';
const cluster = require('cluster');
const http = require('http');
const os = require('os');

const port = Number(process.env.PORT) || 3000;

if (cluster.isPrimary) {
  const n = Number(process.env.WORKERS) || os.availableParallelism();
  console.log(`primary ${process.pid}: forking ${n} workers`);
  for (let i = 0; i < n; i++) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    console.log(`worker ${worker.process.pid} died (${signal || code}); forking a new one`);
    cluster.fork();
  });
} else {
  let draining = false;
  const server = http
    .createServer((req, res) => {
      if (draining) res.setHeader('Connection', 'close');
      res.end(`handled by worker ${cluster.worker.id}, pid ${process.pid}\n`);
    })
    .listen(port);
  // Stopping: every answer now closes its connection; after a grace (longer than a busy client
  // waits between two requests) the idle ones are closed too, and the process exits once the
  // requests in progress are done.
  process.on('SIGTERM', () => {
    draining = true;
    setTimeout(() => server.close(() => process.exit(0)), 2000).unref();
  });
}
