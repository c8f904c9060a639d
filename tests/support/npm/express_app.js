// An Express 5 app (from npm) that follows README's advice for keep-alive clients: on its stop
// signal it answers every further request with `Connection: close`, and closes the connections
// still idle only after a grace period, then exits. Runs as a Node cluster worker under
// rrbalancer (`protocol = "node-cluster"`).
'use strict';
const express = require('express');

const GRACE_MS = Number(process.env.GRACE_MS) || 2000;
const app = express();
let draining = false;
app.use((req, res, next) => {
  if (draining) res.set('Connection', 'close');
  next();
});
app.get('/', (req, res) => res.send(`express pid ${process.pid}\n`));
const server = app.listen(Number(process.env.PORT) || 3000);

process.on('SIGTERM', () => {
  draining = true;
  setTimeout(() => server.close(() => process.exit(0)), GRACE_MS).unref();
});
