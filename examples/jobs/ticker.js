// A background job for config/apps.toml (PM2's fork mode): no listener, a batch of work every
// second, messages from `rrbalancer send --app jobs`, and a clean stop on SIGTERM or when the
// master disconnects.
'use strict';

let batches = 0;
const timer = setInterval(() => {
  batches += 1;
  console.log(`jobs: batch ${batches} done (pid ${process.pid}, APP_ENV=${process.env.APP_ENV})`);
}, 1000);

function stop(why) {
  clearInterval(timer);
  console.log(`jobs: stopping (${why}) after ${batches} batches`);
  process.exit(0);
}

process.on('SIGTERM', () => stop('SIGTERM'));
process.on('disconnect', () => stop('the master disconnected'));
process.on('message', (message) => console.log(`jobs: message ${JSON.stringify(message)}`));
