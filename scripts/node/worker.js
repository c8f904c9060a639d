// A worker in the seeds' style: it never listens; the master sends it each connection with
// child_process's handle passing, `process.on('message', (m, socket) => …)`. Unchanged, it runs
// under `node master.js` (a hand-written fork() master) and under rrbalancer with
// `protocol = "node"` (config/node-child.toml).
//
// Options (environment): MAX_REQUESTS=N: after N requests send {act: 'suicide'} — the seeds'
// "I am leaving, start my replacement" — finish, and exit.
'use strict';
const http = require('http');

const id = process.env.RRB_WORKER_ID ?? process.pid;
const maxRequests = Number(process.env.MAX_REQUESTS) || 0;
let served = 0;

const server = http.createServer((req, res) => {
  served += 1;
  const leaving = maxRequests > 0 && served === maxRequests;
  if (leaving) res.setHeader('Connection', 'close');
  res.end(`handled by worker ${id}, pid ${process.pid}\n`);
  if (leaving) {
    process.send({ act: 'suicide' });
    server.close(() => process.exit(0));
    // Keep-alive connections of other clients close after their current request.
    server.closeIdleConnections?.();
  }
});

process.on('message', (m, handle) => {
  if (m === 'socket' && handle) {
    // A connection the master accepted: serve it as if our own server had.
    server.emit('connection', handle);
  } else if (m === 'server' && handle) {
    // Shared-listener mode: the master sent the listening socket itself.
    handle.on('connection', (socket) => server.emit('connection', socket));
  }
});

// Stopping (stop, reload, scale-down): the master disconnects, then sends SIGTERM
// (`[shutdown] signal`). Either way: take nothing new, finish what we have, then exit 0.
// Without a SIGTERM handler Node would exit at once, cutting requests in progress.
function finish() {
  server.close(() => process.exit(0));
  server.closeIdleConnections?.();
}
process.on('disconnect', finish);
process.on('SIGTERM', finish);
