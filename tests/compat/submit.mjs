// Submits one task to jetask with the official NATS JavaScript client (@nats-io/jetstream on
// @nats-io/transport-node), a client that knows nothing of jetask: publishes it twice with the
// same Nats-Msg-Id (the second PubAck is a duplicate), follows its events until it finishes,
// then reads its record over the NATS micro API (jetask.api.task.get). Prints one JSON object a
// line. Usage: node submit.mjs NATS_URL FUNCTION TASK_ID INPUT
// (`npm ci --prefix tests/compat` installs the client; .ci/run does it.)
import { connect, headers } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";

const FINAL = ["Succeeded", "Failed", "Stopped", "Expired", "Invalid"];

async function main([url, fn, taskId, input]) {
  const nc = await connect({ servers: url });
  const sub = nc.subscribe("jetask.events.>", { timeout: 20_000 });
  await nc.flush();
  const js = jetstream(nc);
  for (let i = 0; i < 2; i++) {
    const h = headers();
    h.set("Jetask-User", "js");
    h.set("Content-Type", "text/plain");
    const ack = await js.publish(`jetask.submit.${fn}`, input, { msgID: taskId, headers: h });
    console.log(JSON.stringify({ puback: { stream: ack.stream, seq: ack.seq, duplicate: Boolean(ack.duplicate) } }));
  }
  for await (const m of sub) {
    const record = m.json();
    if (record.id !== taskId) continue;
    console.log(JSON.stringify({ event: m.subject, status: record.status }));
    if (FINAL.includes(record.status)) break;
  }
  const reply = await nc.request("jetask.api.task.get", JSON.stringify({ id: taskId }), { timeout: 10_000 });
  const code = reply.headers?.get("Nats-Service-Error-Code");
  if (code) throw new Error(`jetask.api.task.get: error ${code}: ${reply.string()}`);
  console.log(JSON.stringify({ record: reply.json() }));
  await nc.close();
}

main(process.argv.slice(2)).catch((e) => {
  console.error(e);
  process.exit(1);
});
