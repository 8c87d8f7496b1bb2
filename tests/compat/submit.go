// Submits one task to jetask with the Go NATS client (nats.go's JetStreamContext), a client that
// knows nothing of jetask: publishes it twice with the same Nats-Msg-Id (the second PubAck is a
// duplicate), follows its events until it finishes, then reads its record over the NATS micro
// API (jetask.api.task.get). Prints one JSON object a line.
// Usage: submit NATS_URL FUNCTION TASK_ID INPUT
// Built offline from Debian's golang-github-nats-io-go-nats-dev (see tests/compat.rs).
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
)

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
	os.Exit(1)
}

func emit(v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		fail("encode", err)
	}
	fmt.Println(string(b))
}

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: submit NATS_URL FUNCTION TASK_ID INPUT")
		os.Exit(2)
	}
	url, function, taskID, input := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	nc, err := nats.Connect(url)
	if err != nil {
		fail("connect", err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("jetask.events.>")
	if err != nil {
		fail("subscribe", err)
	}
	if err := nc.Flush(); err != nil {
		fail("flush", err)
	}
	js, err := nc.JetStream()
	if err != nil {
		fail("jetstream", err)
	}
	for i := 0; i < 2; i++ {
		msg := nats.NewMsg("jetask.submit." + function)
		msg.Data = []byte(input)
		msg.Header.Set("Jetask-User", "go")
		msg.Header.Set("Content-Type", "text/plain")
		ack, err := js.PublishMsg(msg, nats.MsgId(taskID))
		if err != nil {
			fail("publish", err)
		}
		emit(map[string]interface{}{"puback": map[string]interface{}{
			"stream": ack.Stream, "seq": ack.Sequence, "duplicate": ack.Duplicate,
		}})
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			fail("next event", err)
		}
		var record map[string]interface{}
		if err := json.Unmarshal(m.Data, &record); err != nil {
			fail("event body", err)
		}
		if record["id"] != taskID {
			continue
		}
		status, _ := record["status"].(string)
		emit(map[string]interface{}{"event": m.Subject, "status": status})
		if status == "Succeeded" || status == "Failed" || status == "Stopped" || status == "Expired" || status == "Invalid" {
			break
		}
	}
	req, _ := json.Marshal(map[string]string{"id": taskID})
	reply, err := nc.Request("jetask.api.task.get", req, 10*time.Second)
	if err != nil {
		fail("jetask.api.task.get", err)
	}
	if code := reply.Header.Get("Nats-Service-Error-Code"); code != "" {
		fail("jetask.api.task.get", fmt.Errorf("error %s: %s", code, reply.Data))
	}
	var record map[string]interface{}
	if err := json.Unmarshal(reply.Data, &record); err != nil {
		fail("task.get body", err)
	}
	emit(map[string]interface{}{"record": record})
}
