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
// How long idle keep-alive connections are kept once stopping (README: "Keep-alive clients: no
// error on reload"): longer than a busy client waits between two requests.
const DRAIN_GRACE_MS = 2000;
let served = 0;
let draining = false;
const open = new Set();
// The listening socket of shared-listener mode, once the master has sent it.
let listening = null;

const server = http.createServer((req, res) => {
  served += 1;
  if (maxRequests > 0 && served === maxRequests) {
    // The seeds' "I am leaving, start my replacement", then finish as when stopped.
    process.send({ act: 'suicide' });
    finish();
  }
  if (draining) res.setHeader('Connection', 'close');
  res.end(`handled by worker ${id}, pid ${process.pid}\n`);
});
// The server never listens (connections come from the master): it counts its connections
// itself, to exit once the last one is closed.
server.on('connection', (socket) => {
  open.add(socket);
  socket.on('close', () => {
    open.delete(socket);
    if (draining && open.size === 0) process.exit(0);
  });
});

process.on('message', (m, handle) => {
  if (m === 'socket' && handle) {
    // A connection the master accepted: serve it as if our own server had.
    server.emit('connection', handle);
  } else if (m === 'server' && handle) {
    // Shared-listener mode: the master sent the listening socket itself.
    handle.on('connection', (socket) => server.emit('connection', socket));
    listening = handle;
  }
});

// Stopping (stop, reload, scale-down): the master disconnects, then sends SIGTERM
// (`[shutdown] signal`). Either way: take nothing new; each answer from now on closes its
// connection; idle keep-alive connections are closed after the grace, not at once (that races
// a request already on its way); exit once the last connection is closed. Without a SIGTERM
// handler Node would exit at once, cutting requests in progress.
function finish() {
  if (draining) return;
  draining = true;
  listening?.close();
  if (open.size === 0) process.exit(0);
  setTimeout(() => server.closeIdleConnections?.(), DRAIN_GRACE_MS).unref();
}
process.on('disconnect', finish);
process.on('SIGTERM', finish);
