// A Node worker that breaks the IPC rules on purpose, for the tests. BAD (environment) picks how:
//   json    — writes a line that is not JSON to its channel
//   handle  — sends a NODE_HANDLE message with no fd attached
//   refuse  — a cluster worker whose server takes one connection and never answers it
//             (maxConnections = 1), so it answers every later `newconn` with accepted: false
//   flood   — writes 2 million valid user messages as fast as the channel takes them, while
//             it serves (legal, but the master must stay responsive and its log bounded)
//   send-fd — sends the master a handle with its fd attached (a listening socket of its own),
//             as process.send(message, handle) does
//   listen2 — a cluster worker that listens on a second port, for which the master has no
//             listener (its listen() fails; unhandled, the error ends the worker)
// Under protocol = "node-cluster" (cluster.isWorker) the worker listens on port 3000 through the
// primary, as a cluster app does; under "node" it takes sockets from process.on('message').
// Raw writes go straight to the channel fd (NODE_CHANNEL_FD), as process.send cannot do this.
'use strict';
const fs = require('fs');
const http = require('http');
const net = require('net');
const cluster = require('cluster');

const bad = process.env.BAD;
// Node takes NODE_CHANNEL_FD out of the environment at start; rrbalancer also sets RRB_CHANNEL_FD.
const fd = Number(process.env.RRB_CHANNEL_FD);
const body = () => `handled by worker ${process.env.RRB_WORKER_ID}, pid ${process.pid}\n`;

if (bad === 'refuse') {
  const server = http.createServer(() => {}); // never answers
  server.maxConnections = 1;
  server.listen(3000);
} else {
  const server = http.createServer((req, res) => res.end(body()));
  if (cluster.isWorker) {
    server.listen(3000);
  } else {
    process.on('message', (m, socket) => {
      if (socket) server.emit('connection', socket);
    });
  }
  if (bad === 'flood') {
    const chunk = '{"chatter":1}\n'.repeat(1000);
    let sent = 0;
    const burst = () => {
      try {
        fs.writeSync(fd, chunk);
        sent++;
      } catch (e) {
        if (e.code !== 'EAGAIN') return; // the channel is gone
      }
      if (sent < 2000) setImmediate(burst);
    };
    setTimeout(burst, 100);
  }
  setTimeout(() => {
    if (bad === 'json') fs.writeSync(fd, '{this is not json\n');
    if (bad === 'handle') fs.writeSync(fd, '{"cmd":"NODE_HANDLE","type":"net.Socket","msg":"x"}\n');
    if (bad === 'send-fd') {
      // exclusive: bound here, not through the primary.
      const own = net.createServer();
      own.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => process.send('x', own));
    }
    if (bad === 'listen2') http.createServer().listen(4000);
  }, 100);
}
