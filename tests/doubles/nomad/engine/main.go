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
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: nomadengine parse|render|functions < request.json")
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
		var in ParseInput
		if err := json.Unmarshal(raw, &in); err != nil {
			fmt.Fprintln(os.Stderr, "parse: the input is not a JSON request:", err)
			os.Exit(1)
		}
		out = Parse(in)
	case "render":
		var in RenderInput
		if err := json.Unmarshal(raw, &in); err != nil {
			fmt.Fprintln(os.Stderr, "render: the input is not a JSON request:", err)
			os.Exit(1)
		}
		out = Render(in)
	case "functions":
		out = map[string][]string{"Functions": FunctionNames()}
	default:
		fmt.Fprintf(os.Stderr, "unknown sub-command %q: parse, render or functions\n", os.Args[1])
		os.Exit(2)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "writing the answer:", err)
		os.Exit(1)
	}
}
