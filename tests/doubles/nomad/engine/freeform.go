package main

import (
	"math/big"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/nomad/api"
	"github.com/zclconf/go-cty/cty"
)

// A free-form block (a task's `config { ... }`, a sidecar's, a scaling policy's `policy`...) becomes a
// map[string]interface{}: each argument's value in plain Go (an object at the top becomes a one-element
// list of maps, a null argument is left out), each nested block a list of maps, a block's labels
// nesting maps: `a "x" { k = 1 }` is {"a": [{"x": [{"k": 1}]}]}. `dynamic` blocks inside are not
// expanded there (they stay blocks named "dynamic", as with Nomad's parser).

func (r *jobReader) readFreeform(block *hcl.Block) (map[string]interface{}, hcl.Diagnostics) {
	syntax := r.syntax[block.DefRange.Start.Byte]
	if syntax == nil { // JSON syntax: everything is an argument
		out := map[string]interface{}{}
		attrs, diags := block.Body.JustAttributes()
		for name, a := range attrs {
			diags = append(diags, r.setArgument(out, name, a.Expr)...)
		}
		return out, diags
	}
	return r.readNative(block.Body, syntax)
}

func (r *jobReader) setArgument(out map[string]interface{}, name string, expr hcl.Expression) hcl.Diagnostics {
	v, diags := expr.Value(r.ctx)
	if !v.IsWhollyKnown() {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Unknown value",
			Detail: "The value of this argument could not be determined.", Subject: expr.Range().Ptr()})
	}
	if g := plain(v, true); g != nil {
		out[name] = g
	}
	return diags
}

// readNative: `body` as HCL presents it (expressions carry a dynamic block's iterator), its layout
// from the syntax tree.
func (r *jobReader) readNative(body hcl.Body, syntax *hclsyntax.Body) (map[string]interface{}, hcl.Diagnostics) {
	out := map[string]interface{}{}
	schema := &hcl.BodySchema{}
	for name := range syntax.Attributes {
		schema.Attributes = append(schema.Attributes, hcl.AttributeSchema{Name: name})
	}
	labels := map[string]int{}
	var literal []*hclsyntax.Block
	for _, b := range syntax.Blocks {
		if b.Type == "dynamic" {
			literal = append(literal, b)
			continue
		}
		if _, seen := labels[b.Type]; !seen {
			labels[b.Type] = len(b.Labels)
			names := make([]string, len(b.Labels))
			for i := range names {
				names[i] = "label"
			}
			schema.Blocks = append(schema.Blocks, hcl.BlockHeaderSchema{Type: b.Type, LabelNames: names})
		}
	}
	content, _, diags := body.PartialContent(schema)
	for name, a := range content.Attributes {
		diags = append(diags, r.setArgument(out, name, a.Expr)...)
	}
	for _, b := range content.Blocks {
		inner := r.syntax[b.DefRange.Start.Byte]
		var m map[string]interface{}
		var d hcl.Diagnostics
		if inner != nil {
			m, d = r.readNative(b.Body, inner)
		} else {
			m = map[string]interface{}{}
		}
		diags = append(diags, d...)
		appendBlock(out, b.Type, b.Labels, m)
	}
	for _, b := range literal {
		m, d := r.readSyntax(b.Body)
		diags = append(diags, d...)
		appendBlock(out, b.Type, b.Labels, m)
	}
	return out, diags
}

// readSyntax: a block taken as written (inside a literal `dynamic` block).
func (r *jobReader) readSyntax(body *hclsyntax.Body) (map[string]interface{}, hcl.Diagnostics) {
	out := map[string]interface{}{}
	var diags hcl.Diagnostics
	for name, a := range body.Attributes {
		diags = append(diags, r.setArgument(out, name, a.Expr)...)
	}
	for _, b := range body.Blocks {
		m, d := r.readSyntax(b.Body)
		diags = append(diags, d...)
		appendBlock(out, b.Type, b.Labels, m)
	}
	return out, diags
}

func appendBlock(out map[string]interface{}, kind string, labels []string, m map[string]interface{}) {
	var v interface{} = m
	for i := len(labels) - 1; i >= 0; i-- {
		v = map[string]interface{}{labels[i]: []interface{}{v}}
	}
	list, _ := out[kind].([]interface{})
	out[kind] = append(list, v)
}

// plain: a cty value as Go's encoding/json would give it back, numbers as int64 when whole and in
// range, else float64.
func plain(v cty.Value, top bool) interface{} {
	v, _ = v.UnmarkDeep()
	if v.IsNull() || !v.IsKnown() {
		return nil
	}
	t := v.Type()
	switch {
	case t == cty.String:
		return v.AsString()
	case t == cty.Bool:
		return v.True()
	case t == cty.Number:
		return number(v.AsBigFloat())
	case t.IsListType() || t.IsSetType() || t.IsTupleType():
		list := make([]interface{}, 0, v.LengthInt())
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			list = append(list, plain(e, false))
		}
		return list
	case t.IsMapType() || t.IsObjectType():
		m := make(map[string]interface{}, v.LengthInt())
		for it := v.ElementIterator(); it.Next(); {
			k, e := it.Element()
			m[k.AsString()] = plain(e, false)
		}
		if top && t.IsObjectType() {
			return []interface{}{m}
		}
		return m
	}
	return nil
}

func number(f *big.Float) interface{} {
	if f.IsInt() {
		if i, acc := f.Int64(); acc == big.Exact {
			return i
		}
	}
	x, _ := f.Float64()
	return x
}

// --- after decoding -------------------------------------------------------------------------------------

func ptr[T any](v T) *T { return &v }

// complete fills in what the job parser sets after decoding: ID and name from the label, the periodic
// spec type, tasks written outside a group as groups of their own, static ports as reserved ports,
// template and vault defaults, the job's vault and secrets given to each task, the default identity.
func (r *jobReader) complete(job *api.Job, label string) {
	if job.ID == nil {
		job.ID = ptr(label)
	}
	if job.Name == nil {
		job.Name = ptr(label)
	}
	if p := job.Periodic; p != nil && (p.Spec != nil || p.Specs != nil) {
		p.SpecType = ptr("cron")
	}
	withVaultDefaults(r.jobVault)
	var solo []*api.TaskGroup
	for _, t := range r.soloTasks {
		solo = append(solo, &api.TaskGroup{Name: ptr(t.Name), Tasks: []*api.Task{t}})
	}
	if len(solo) > 0 {
		job.TaskGroups = append(solo, job.TaskGroups...)
	}
	for _, tg := range job.TaskGroups {
		reservePorts(tg.Networks)
		for _, t := range tg.Tasks {
			if t.Resources != nil {
				reservePorts(t.Resources.Networks)
			}
			for _, tpl := range t.Templates {
				withTemplateDefaults(tpl)
			}
			withVaultDefaults(t.Vault)
			if t.Vault == nil {
				t.Vault = r.jobVault
			}
			if len(t.Secrets) == 0 {
				t.Secrets = r.jobSecrets
			} else {
				t.Secrets = append(t.Secrets, r.jobSecrets...)
			}
			for i, id := range t.Identities {
				if id.Name == "" || id.Name == "default" {
					t.Identity = id
					t.Identities = append(append([]*api.WorkloadIdentity{}, t.Identities[:i]...), t.Identities[i+1:]...)
					break
				}
			}
		}
	}
}

func withVaultDefaults(v *api.Vault) {
	if v == nil {
		return
	}
	if v.Env == nil {
		v.Env = ptr(true)
	}
	if v.DisableFile == nil {
		v.DisableFile = ptr(false)
	}
	if v.ChangeMode == nil {
		v.ChangeMode = ptr("restart")
	}
}

// reservePorts: a `port` block with a static number is a reserved port, one without a dynamic port.
func reservePorts(networks []*api.NetworkResource) {
	for _, n := range networks {
		if len(n.DynamicPorts) == 0 {
			continue
		}
		all := n.DynamicPorts
		n.DynamicPorts, n.ReservedPorts = nil, nil
		for _, p := range all {
			if p.Value > 0 {
				n.ReservedPorts = append(n.ReservedPorts, p)
			} else {
				n.DynamicPorts = append(n.DynamicPorts, p)
			}
		}
	}
}

func withTemplateDefaults(t *api.Template) {
	if t.ChangeMode == nil {
		t.ChangeMode = ptr("restart")
	}
	if t.Perms == nil {
		t.Perms = ptr("0644")
	}
	if t.Splay == nil {
		t.Splay = ptr(5 * time.Second)
	}
	if t.ErrMissingKey == nil {
		t.ErrMissingKey = ptr(false)
	}
	if s := t.ChangeScript; s != nil {
		if s.Args == nil {
			s.Args = []string{}
		}
		if s.Timeout == nil {
			s.Timeout = ptr(5 * time.Second)
		}
		if s.FailOnError == nil {
			s.FailOnError = ptr(false)
		}
		if s.RunOnFirstRender == nil {
			s.RunOnFirstRender = ptr(false)
		}
	}
}
