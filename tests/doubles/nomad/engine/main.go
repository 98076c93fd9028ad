// Command nomadengine is the test double's Nomad engine: the parts of Nomad the double cannot imitate
// faithfully in Python, written in Go on the libraries Nomad itself uses (hashicorp/hcl/v2 as Nomad
// builds it, with gohcl's per-type decoders, ext/dynblock and ext/typeexpr; go-cty and go-cty-funcs; the
// nomad/api structs (MPL) and their Canonicalize; text/template; go-envparse). No code of
// hashicorp/nomad (BUSL) is used or copied: the job parser (parse.go, inputs.go, decode.go,
// freeform.go) is our own design, written from HashiCorp's public documentation and the observable
// behaviour of /v1/jobs/parse.
//
// Each sub-command reads one JSON object on stdin and writes one JSON object on stdout; it exits 0 even
// for a user error (the JSON says it), 2 for a wrong invocation, 1 when the input is not JSON.
//
//	nomadengine parse      {"JobHCL", "Variables", "Canonicalize", "ArgVars", "Strict", "Path"}
//	                       -> {"Job": <api.Job>} | {"Error": "Failed to parse job: ...", "Cause": "..."}
//	nomadengine render     {"Template", "Variables", "Where", "Envvars", "Dest", "LeftDelim", "RightDelim",
//	                        "ErrMissingKey"}
//	                       -> {"Text", "Env"} | {"Missing"} | {"Error"} | {"Text", "Error"} |
//	                          {"Error", "Unsupported"}
//	nomadengine functions  {} -> {"Functions": [names of the job parser's HCL functions]}
//	nomadengine cron       {"Spec", "Specs", "TimeZone", "From"} -> {"Next"} | {"Error"}
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: nomadengine parse|render|functions|cron < request.json")
		os.Exit(2)
	}
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading stdin:", err)
		os.Exit(1)
	}
	var out any
	switch os.Args[1] {
	case "parse":
		out = Parse(request[ParseInput](raw, "parse"))
	case "render":
		out = Render(request[RenderInput](raw, "render"))
	case "cron":
		out = Cron(request[CronInput](raw, "cron"))
	case "functions":
		out = map[string][]string{"Functions": FunctionNames()}
	default:
		fmt.Fprintf(os.Stderr, "unknown sub-command %q: parse, render, functions or cron\n", os.Args[1])
		os.Exit(2)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "writing the answer:", err)
		os.Exit(1)
	}
}

// request decodes a sub-command's JSON request; input that is not one ends the program (exit 1).
func request[T any](raw []byte, command string) T {
	var in T
	if err := json.Unmarshal(raw, &in); err != nil {
		fmt.Fprintf(os.Stderr, "%s: the input is not a JSON request: %v\n", command, err)
		os.Exit(1)
	}
	return in
}
