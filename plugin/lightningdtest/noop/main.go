// Command noop is a do-nothing Core Lightning plugin: it registers the
// db_write hook and answers every call {"result": "continue"} at once,
// storing nothing. The benchmarks run it beside the backup plugin as the
// floor of a hook's round trip (pipes, JSON, scheduling).
//
// lightningdtest's own tests use misbehaving variants, chosen by NOOP_MODE:
// "fragment" writes every response in two writes with a pause between them,
// preceded in the first write by a log notification (the driver must
// reassemble split and joined messages); "badid" answers db_write with the
// id's type changed (7 becomes "7"); "garbage" prints a line that is not
// JSON on stdout.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os"
	"time"
)

type request struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
}

func main() {
	mode := os.Getenv("NOOP_MODE")
	fragment := mode == "fragment"
	if mode == "garbage" {
		os.Stdout.WriteString("hello from a plugin that prints\n")
	}
	dec := json.NewDecoder(bufio.NewReader(os.Stdin))
	for {
		var req request
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return
			}
			os.Stderr.WriteString("noop: " + err.Error() + "\n")
			os.Exit(1)
		}
		if req.ID == nil {
			continue // a notification from lightningd
		}
		var result any
		var rpcErr any
		switch req.Method {
		case "getmanifest":
			result = map[string]any{
				"options": []any{}, "rpcmethods": []any{}, "subscriptions": []any{},
				"hooks": []any{map[string]string{"name": "db_write"}}, "dynamic": true, "nonnumericids": true,
			}
		case "init":
			result = map[string]any{}
		case "db_write":
			result = map[string]string{"result": "continue"}
		default:
			rpcErr = map[string]any{"code": -32601, "message": "unknown method " + req.Method}
		}
		resp := map[string]any{"jsonrpc": "2.0", "id": req.ID}
		if mode == "badid" && req.Method == "db_write" && req.ID[0] != '"' {
			resp["id"] = string(req.ID)
		}
		if rpcErr != nil {
			resp["error"] = rpcErr
		} else {
			resp["result"] = result
		}
		out, err := json.Marshal(resp)
		if err != nil {
			os.Exit(1)
		}
		out = append(out, '\n', '\n')
		if !fragment {
			os.Stdout.Write(out)
			continue
		}
		logMsg, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "log",
			"params": map[string]string{"level": "debug", "message": "answering " + req.Method}})
		half := len(out) / 2
		os.Stdout.Write(append(append(logMsg, '\n'), out[:half]...))
		time.Sleep(2 * time.Millisecond)
		os.Stdout.Write(out[half:])
	}
}
