// The rrbalancer [agent] of this example: the seeds' notification process. It does no business
// work: it polls one Redis key and, when the value changes, tells every worker through the
// master, as the retained value `redis` — so a worker started later (a restart, a reload, a
// scale-up) gets the current value before its first request.
//
// Run by rrbalancer (rrbalancer.toml, [agent] protocol = "node"): `process.send` reaches the
// master. It says 'ready' once the first value is retained: the workers start after that.
'use strict';
const { createClient } = require('redis');

const url = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const key = process.env.REDIS_KEY || 'rrb:value';
const every = Number(process.env.POLL_MS) || 500;

async function main() {
  const client = createClient({ url });
  client.on('error', (e) => console.error(`agent ${process.pid}: redis: ${e.message}`));
  await client.connect();
  let last;
  const poll = async () => {
    const value = await client.get(key);
    if (value !== last) {
      last = value;
      process.send({ cmd: 'rrbalancer:send', to: 'all', retain: 'redis', data: { key, value } });
      console.log(`agent ${process.pid}: ${key} = ${JSON.stringify(value)}`);
    }
  };
  await poll();
  process.send('ready');
  const timer = setInterval(() => poll().catch((e) => console.error(`agent: ${e.message}`)), every);
  // rrbalancer stops the agent after the workers: Node's `disconnect`, then SIGTERM.
  const stop = () => {
    clearInterval(timer);
    client.quit().finally(() => process.exit(0));
  };
  process.on('disconnect', stop);
  process.on('SIGTERM', stop);
}

main().catch((e) => {
  console.error(`agent ${process.pid}: ${e.message}`);
  process.exit(1);
});
