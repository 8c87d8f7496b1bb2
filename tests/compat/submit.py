"""Submits one task to jetask with nats-py, a client that knows nothing of jetask, and follows
its events until it finishes. Usage: submit.py NATS_URL FUNCTION TASK_ID INPUT"""
import asyncio
import json
import sys

import nats


async def main(url, function, task_id, payload):
    nc = await nats.connect(url)
    sub = await nc.subscribe(f"jetask.events.{function}.>")
    js = nc.jetstream()
    ack = await js.publish(
        f"jetask.submit.{function}",
        payload.encode(),
        headers={"Nats-Msg-Id": task_id, "Jetask-User": "py", "Content-Type": "text/plain"},
    )
    print(json.dumps({"puback": {"stream": ack.stream, "seq": ack.seq, "duplicate": bool(ack.duplicate)}}), flush=True)
    while True:
        msg = await sub.next_msg(timeout=20)
        record = json.loads(msg.data)
        if record["id"] != task_id:
            continue
        print(json.dumps({"event": msg.subject, "status": record["status"]}), flush=True)
        if record["status"] in ("Succeeded", "Failed", "Stopped", "Expired", "Invalid"):
            print(json.dumps({"record": record}), flush=True)
            break
    await nc.close()


asyncio.run(main(*sys.argv[1:5]))
