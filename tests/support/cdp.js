// A headless Chromium driven over the DevTools protocol, in real time (no virtual time): for
// tests that must watch a page as a person would — a master that stops answering, say.
//
//   node --experimental-websocket tests/support/cdp.js BROWSER URL
//
// First prints {"chromium": PID}: Chromium runs in a process group of its own, PID, which the
// caller kills if this script cannot. Then reads commands from stdin, one a line, and answers
// each with one line of JSON:
//   wait MS EXPR   evaluate EXPR in the page until it is truthy (an exception counts as not yet),
//                  up to MS: {"ok":bool,"value":…, "error": the last exception's, if any}
//   eval EXPR      evaluate EXPR once: {"ok":true,"value":…}
//   shot PATH      save a PNG screenshot of the viewport: {"ok":true}
// Chromium is killed on stdin's end, on an error and on exit.
"use strict";
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const readline = require("node:readline");

const [browser, url] = process.argv.slice(2);
if (typeof WebSocket !== "function") {
  console.error("needs WebSocket: node 22, or node 20 with --experimental-websocket");
  process.exit(2);
}
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "cdp-"));
const chrome = spawn(browser, [
  "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
  "--window-size=1200,520", `--user-data-dir=${profile}`, "--remote-debugging-port=0", url,
], { stdio: ["ignore", "ignore", "pipe"], detached: true });
process.stdout.write(JSON.stringify({ chromium: chrome.pid }) + "\n");
function quit(code) {
  try { process.kill(-chrome.pid, "SIGKILL"); } catch {}
  fs.rmSync(profile, { recursive: true, force: true });
  process.exit(code);
}
process.on("exit", () => { try { process.kill(-chrome.pid, "SIGKILL"); } catch {} });
setTimeout(() => { console.error("no DevTools endpoint within 20 s"); quit(1); }, 20000).unref();

let port = null;
chrome.stderr.on("data", (chunk) => {
  const m = /DevTools listening on ws:\/\/[^:]+:(\d+)\//.exec(String(chunk));
  if (m && port === null) { port = m[1]; attach().catch((e) => { console.error(e); quit(1); }); }
});

let next = 1;
const pending = new Map();
let ws;
function send(method, params = {}) {
  const id = next++;
  ws.send(JSON.stringify({ id, method, params }));
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}
async function evaluate(expression) {
  const r = await send("Runtime.evaluate", { expression, returnByValue: true });
  if (r.exceptionDetails) throw new Error(r.exceptionDetails.text);
  return r.result.value;
}

async function attach() {
  let page;
  for (let i = 0; i < 100 && !page; i++) {
    const list = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
    page = list.find((t) => t.type === "page");
    if (!page) await new Promise((r) => setTimeout(r, 100));
  }
  ws = new WebSocket(page.webSocketDebuggerUrl);
  ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    const waiter = pending.get(msg.id);
    if (!waiter) return;
    pending.delete(msg.id);
    if (msg.error) waiter.reject(new Error(msg.error.message)); else waiter.resolve(msg.result);
  };
  ws.onerror = () => quit(1);
  await new Promise((resolve) => { ws.onopen = resolve; });
  const lines = readline.createInterface({ input: process.stdin });
  // One command at a time, in order; at stdin's end, once the last is answered.
  let chain = Promise.resolve();
  lines.on("line", (line) => { chain = chain.then(() => run(line)); });
  lines.on("close", () => { chain = chain.then(() => quit(0)); });
}

async function run(line) {
  const [command, ...rest] = line.split(" ");
  try {
    if (command === "wait") {
      const ms = Number(rest[0]), expr = rest.slice(1).join(" ");
      const until = Date.now() + ms;
      // An expression that throws (the page not loaded yet: no document.body) is not true yet.
      let value, error;
      do {
        try {
          value = await evaluate(expr);
          error = undefined;
        } catch (e) {
          value = undefined;
          error = String(e.message || e);
        }
        if (value) return answer({ ok: true, value });
        await new Promise((r) => setTimeout(r, 100));
      } while (Date.now() < until);
      answer({ ok: false, value, error });
    } else if (command === "eval") {
      answer({ ok: true, value: await evaluate(rest.join(" ")) });
    } else if (command === "shot") {
      const r = await send("Page.captureScreenshot", { format: "png" });
      fs.writeFileSync(rest.join(" "), Buffer.from(r.data, "base64"));
      answer({ ok: true });
    } else {
      answer({ ok: false, error: `unknown command ${command}` });
    }
  } catch (e) {
    answer({ ok: false, error: String(e.message || e) });
  }
}
function answer(value) { process.stdout.write(JSON.stringify(value) + "\n"); }
