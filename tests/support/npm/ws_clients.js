// Opens N WebSocket clients to ws://127.0.0.1:PORT, each echoing a message once, prints
// `open N` when all are open, then `closed {code: count}` as JSON once every client has closed
// (or after TIMEOUT_MS, counting those still open as "open"). With a fourth argument
// `reconnect`, a client closed with 1001 ("going away": its server is stopping) connects
// again at once, as a browser app does, and the report comes at TIMEOUT_MS.
'use strict';
const WebSocket = require('ws');

const [port, n, timeoutMs] = process.argv.slice(2, 5).map(Number);
const reconnect = process.argv[5] === 'reconnect';
const codes = {};
let open = 0;
let closed = 0;
const clients = [];

function report() {
  const still = clients.filter((c) => c.readyState !== WebSocket.CLOSED).length;
  if (still) codes.open = still;
  console.log(`closed ${JSON.stringify(codes)}`);
  process.exit(0);
}

function connect(i, first) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
  clients.push(ws);
  ws.on('open', () => ws.send(`hello ${i}`));
  ws.on('message', () => {
    if (!first) return;
    open += 1;
    if (open === n) console.log(`open ${n}`);
  });
  ws.on('error', () => {});
  ws.on('close', (code) => {
    codes[code] = (codes[code] || 0) + 1;
    closed += 1;
    if (reconnect && code === 1001) connect(i, false);
    else if (!reconnect && closed === n) report();
  });
}

for (let i = 0; i < n; i++) connect(i, true);
setTimeout(report, timeoutMs);
