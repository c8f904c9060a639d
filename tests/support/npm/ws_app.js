// A WebSocket echo server (`ws` from npm) as Docker, Kubernetes or PM2 expect it: on its stop
// signal (STOP_SIGNAL, default SIGTERM; PM2 sends SIGINT) it closes every client with 1001
// "going away", then exits. Runs under rrbalancer as a Node cluster worker
// (`protocol = "node-cluster"`): `listen()` asks the master for the server.
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

const signal = process.env.STOP_SIGNAL || 'SIGTERM';
const server = http.createServer((req, res) => res.end(`ws app pid ${process.pid}\n`));
const wss = new WebSocketServer({ server });
wss.on('connection', (ws) => ws.on('message', (m) => ws.send(m)));
server.listen(Number(process.env.PORT) || 3000);

process.on(signal, () => {
  for (const ws of wss.clients) ws.close(1001, 'going away');
  server.close(() => process.exit(0));
});
