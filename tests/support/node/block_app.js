// A cluster app whose `/block` request holds its worker's event loop for BLOCK_MS (default
// 2000) of CPU, as a large JSON.parse or a synchronous call would; every other request is
// answered at once. For the test that a busy worker is routed around.
'use strict';
const cluster = require('cluster');
const http = require('http');

const blockMs = Number(process.env.BLOCK_MS) || 2000;
http
  .createServer((req, res) => {
    if (req.url === '/block') {
      const until = Date.now() + blockMs;
      while (Date.now() < until);
    }
    res.end(`handled by worker ${cluster.worker.id}, pid ${process.pid}\n`);
  })
  .listen(Number(process.env.PORT) || 3000);
