// The whole token lifecycle against tokend with ioredis.
//
//   (cd examples/node && npm install) && node examples/node/lifecycle.js [host] [port]
//
// Generates tokens, acquires one with a lease and keeps it alive in a loop,
// gives it back, lets a lease and the lifetimes run out, and prints the
// expiry notifications tokend publishes. Exits 0 once it saw every event.
const Redis = require("ioredis");

const host = process.argv[2] || "127.0.0.1";
const port = Number(process.argv[3] || 6380);
const pool = "example-node";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const r = new Redis({ host, port, lazyConnect: true });
  const sub = new Redis({ host, port, lazyConnect: true });
  await r.connect();
  await sub.connect();

  const events = [];
  sub.on("message", (channel, message) => events.push([channel.split(":").pop(), message]));
  await sub.subscribe("__keyevent@0__:expired", "__keyevent@0__:leaseexpired");

  const tokens = await r.call("TOKEN.GEN", pool, "PX", 1500, "COUNT", 3);
  console.log("generated", tokens);

  const token = await r.call("TOKEN.ACQUIRE", pool, "PX", 400);
  console.log("acquired", token);
  for (let i = 0; i < 5; i++) {
    await sleep(200);
    console.log("kept alive; lifetime left (ms):", await r.call("TOKEN.KEEPALIVE", pool, token));
  }
  console.log("info", await r.call("TOKEN.INFO", pool, token));
  await r.call("TOKEN.UNBLOCK", pool, token);
  console.log("unblocked", token);

  const other = await r.call("TOKEN.ACQUIRE", pool, "PX", 100);
  console.log("acquired", other, "and let its lease end");

  const waitFor = async (pred, timeoutMs = 10000) => {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      if (Date.now() > deadline) return false;
      await sleep(20);
    }
    return true;
  };
  const ok = await waitFor(() => events.some(([e, m]) => e === "leaseexpired" && m === `${pool}:${other}`));
  console.log("leaseexpired event for", other, ok ? "received" : "MISSING");
  const ok2 = await waitFor(() => events.filter(([e, m]) => e === "expired" && m.startsWith(pool + ":")).length >= 3);
  console.log("expired events:", events.filter(([e]) => e === "expired").map(([, m]) => m));
  console.log("stats", await r.call("TOKEN.STATS", pool));
  r.disconnect();
  sub.disconnect();
  process.exit(ok && ok2 ? 0 : 1);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
