// A child_process worker (`protocol = "node"`) that keeps a timer running, so that `disconnect`
// alone does not end it: it stops on SIGTERM, exiting 0 (a PM2- or Docker-style app).
'use strict';
const http = require('http');

const server = http.createServer((req, res) => res.end(`child pid ${process.pid}\n`));
process.on('message', (m, socket) => {
  if (m === 'socket' && socket) server.emit('connection', socket);
});
setInterval(() => {}, 1000);
process.on('SIGTERM', () => process.exit(0));
