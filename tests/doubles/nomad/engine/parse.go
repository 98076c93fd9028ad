package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	hcljson "github.com/hashicorp/hcl/v2/json"
	"github.com/hashicorp/nomad/api"
	"github.com/zclconf/go-cty/cty"
)

// ParseInput is the request of the `parse` sub-command: /v1/jobs/parse's body (JobHCL, Variables,
// Canonicalize) plus what `nomad job run -var k=v [-strict]` hands the parser (ArgVars, Strict). Path
// names the job file in diagnostics; the agent's is "input.hcl".
type ParseInput struct {
	JobHCL       string
	Variables    string
	Canonicalize bool
	ArgVars      []string
	Strict       bool
	Path         string
}

// ParseOutput is the answer: the job, or Error as the agent's 400 words it ("Failed to parse job: " +
// Cause).
type ParseOutput struct {
	Job   *api.Job `json:",omitempty"`
	Error string   `json:",omitempty"`
	Cause string   `json:",omitempty"`
}

// Parse reads one job file. A panic in the libraries becomes an error answer.
func Parse(in ParseInput) (out ParseOutput) {
	if in.JobHCL == "" {
		return ParseOutput{Error: "Job spec is empty"}
	}
	name := in.Path
	if name == "" {
		name = "input.hcl"
	}
	defer func() {
		if r := recover(); r != nil {
			out = ParseOutput{Error: fmt.Sprintf("nomadengine: the parser panicked: %v", r)}
		}
	}()
	s := &session{fileName: name, source: []byte(in.JobHCL), strict: in.Strict}
	job, err := s.run(in.Variables, in.ArgVars)
	if err != nil {
		return ParseOutput{Error: "Failed to parse job: " + err.Error(), Cause: err.Error()}
	}
	if in.Canonicalize {
		job.Canonicalize()
	}
	return ParseOutput{Job: job}
}

// session is one parse: the job file, its declared inputs and locals, and what the job block gave.
type session struct {
	fileName string
	source   []byte
	strict   bool

	inputs    *inputSet
	localVals map[string]cty.Value

	reader *jobReader
}

// readHCL picks the syntax as the agent does: JSON when the text starts (after spaces) with "{".
func readHCL(text []byte, name string) (*hcl.File, hcl.Diagnostics) {
	if strings.HasPrefix(strings.TrimLeft(string(text), " "), "{") {
		return hcljson.Parse(text, name)
	}
	return hclsyntax.ParseConfig(text, name, hcl.InitialPos)
}

var topLevel = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{
	{Type: "variable", LabelNames: []string{"name"}},
	{Type: "variables"},
	{Type: "locals"},
	{Type: "job", LabelNames: []string{"name"}},
}}

// lines: every diagnostic (warnings too), one a line, as the agent reports a failed decode.
func lines(diags hcl.Diagnostics) error {
	texts := make([]string, 0, len(diags))
	for _, d := range diags {
		texts = append(texts, d.Error())
	}
	return errors.New(strings.Join(texts, "\n"))
}

func (s *session) run(varText string, argVars []string) (*api.Job, error) {
	file, syntaxDiags := readHCL(s.source, s.fileName)
	var varFile *hcl.File
	if varText != "" {
		f, d := readHCL([]byte(varText), "input.hcl")
		if d.HasErrors() {
			return nil, fmt.Errorf("unable to parse var content: %v", d.Error())
		}
		varFile = f
	}
	if syntaxDiags.HasErrors() {
		return nil, syntaxDiags
	}

	top, diags := file.Body.Content(topLevel)
	if len(diags) > 0 {
		return nil, lines(diags)
	}

	// inputs, then locals: the job is not read while they are broken
	s.inputs = newInputSet(s.fileName)
	var localAttrs []*hcl.Attribute
	for _, block := range top.Blocks {
		switch block.Type {
		case "variable":
			diags = append(diags, s.inputs.declare(block)...)
		case "variables":
			diags = append(diags, s.inputs.declareDefaults(block)...)
		case "locals":
			attrs, more := block.Body.JustAttributes()
			diags = append(diags, more...)
			for _, a := range inSourceOrder(attrs) {
				for _, prev := range localAttrs {
					if prev.Name == a.Name {
						return nil, lines(append(diags, &hcl.Diagnostic{Severity: hcl.DiagError,
							Summary: "Duplicate value in locals", Detail: "Duplicate " + a.Name + " definition found.",
							Subject: a.NameRange.Ptr(), Context: block.DefRange.Ptr()}))
					}
				}
				localAttrs = append(localAttrs, a)
			}
		}
	}
	if varFile != nil {
		diags = append(diags, s.inputs.fromVarFile(varFile.Body, s.strict)...)
	}
	diags = append(diags, s.inputs.fromArgs(argVars, s.strict)...)
	diags = append(diags, s.inputs.settle()...)
	diags = append(diags, s.computeLocals(localAttrs)...)
	if diags.HasErrors() {
		return nil, lines(diags)
	}

	var jobBlock *hcl.Block
	for _, block := range top.Blocks {
		if block.Type != "job" {
			continue
		}
		if jobBlock != nil {
			diags = append(diags, duplicateBlock(jobBlock, block))
			continue
		}
		jobBlock = block
	}
	if jobBlock == nil {
		return nil, lines(append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Missing job block",
			Detail: "A job block is required"}))
	}
	s.reader = newJobReader(s.scope(), file)
	job, more := s.reader.readJob(jobBlock)
	diags = append(diags, more...)
	if diags.HasErrors() {
		return nil, lines(diags)
	}
	if later := s.reader.finishFreeform(); later.HasErrors() {
		return nil, later
	}
	s.reader.complete(job, jobBlock.Labels[0])
	return job, nil
}

func inSourceOrder(attrs hcl.Attributes) []*hcl.Attribute {
	out := make([]*hcl.Attribute, 0, len(attrs))
	for _, a := range attrs {
		out = append(out, a)
	}
	for i := 1; i < len(out); i++ { // insertion sort by position: small lists
		for j := i; j > 0 && out[j].Range.Start.Byte < out[j-1].Range.Start.Byte; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// computeLocals evaluates the locals in rounds: one whose references are not ready yet waits for the
// next round; a round that settles none ends it with the errors of the last one tried.
func (s *session) computeLocals(attrs []*hcl.Attribute) hcl.Diagnostics {
	s.localVals = map[string]cty.Value{}
	pending := attrs
	for len(pending) > 0 {
		var waiting []*hcl.Attribute
		var lastDiags hcl.Diagnostics
		for _, a := range pending {
			v, d := a.Expr.Value(s.scope())
			if d.HasErrors() {
				waiting = append(waiting, a)
				lastDiags = d
				continue
			}
			s.localVals[a.Name] = v
		}
		if len(waiting) == len(pending) {
			return lastDiags
		}
		pending = waiting
	}
	return nil
}

// scope: var.*, local.* and the function table; any other root (attr, node, meta, NOMAD_*...) is
// left as text for the client to interpolate.
func (s *session) scope() *hcl.EvalContext {
	return &hcl.EvalContext{
		Variables: map[string]cty.Value{"var": s.inputs.object(), "local": cty.ObjectVal(s.localVals)},
		Functions: hclFunctions(filepath.Dir(s.fileName), false),
		UndefinedVariable: func(t hcl.Traversal) (cty.Value, hcl.Diagnostics) {
			return cty.StringVal(s.clientReference(t.SourceRange())), nil
		},
	}
}

// clientReference: the reference as written. When it fills a whole "${ ... }" (spaces allowed), that
// interpolation is given back unchanged; otherwise it is wrapped in "${" and "}".
func (s *session) clientReference(r hcl.Range) string {
	src := s.source
	from, to := r.Start.Byte, r.End.Byte
	if from < 0 || to > len(src) || from > to {
		return ""
	}
	written := string(src[from:to])
	open := from
	for open > 0 && src[open-1] == ' ' {
		open--
	}
	if open < 2 || src[open-1] != '{' || src[open-2] != '$' {
		return "${" + written + "}"
	}
	closing := to
	for closing < len(src) && src[closing] == ' ' {
		closing++
	}
	return string(src[open-2:closing]) + "}"
}

// duplicateBlock: HCL's diagnostic for a second block of a type that may appear once.
func duplicateBlock(previous, again *hcl.Block) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: fmt.Sprintf("Duplicate %s block", again.Type),
		Detail: fmt.Sprintf("Only one block of type %q is allowed. Previous definition was at %s.",
			again.Type, previous.DefRange.String()),
		Subject: again.DefRange.Ptr()}
}
