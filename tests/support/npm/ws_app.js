// A WebSocket echo server (`ws` from npm) as Docker, Kubernetes or PM2 expect it: on its stop
// signal (STOP_SIGNAL, default SIGTERM; PM2 sends SIGINT) it closes every client with 1001
// "going away" — and any whose handshake completes after the signal — then exits. Runs under rrbalancer as a Node cluster worker
// (`protocol = "node-cluster"`): `listen()` asks the master for the server.
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

const signal = process.env.STOP_SIGNAL || 'SIGTERM';
const server = http.createServer((req, res) => res.end(`ws app pid ${process.pid}\n`));
const wss = new WebSocketServer({ server });
let stopping = false;
wss.on('connection', (ws) => {
  // A client whose handshake completes after the signal (its connection was already on its
  // way) is not among the clients closed below: close it too, or it holds the exit until
  // SIGKILL cuts it (1006).
  if (stopping) return ws.close(1001, 'going away');
  ws.on('message', (m) => ws.send(m));
});
server.listen(Number(process.env.PORT) || 3000);

process.on(signal, () => {
  stopping = true;
  for (const ws of wss.clients) ws.close(1001, 'going away');
  server.close(() => process.exit(0));
});
