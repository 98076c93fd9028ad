package main

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/dynblock"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/nomad/api"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/gocty"
)

// jobReader turns the job block into api.Job. The api structs' `hcl` tags give the schema (so unknown
// arguments and blocks get HCL's own diagnostics); gohcl's Decoder (HashiCorp's HCL as Nomad builds it,
// with per-type hooks) is given hooks for what the tags cannot say: durations, the shorthand
// arguments of constraint and affinity, map arguments written as `meta = {...}`, free-form blocks
// (`config`, `policy`...), and the job/group-level vault and secret blocks.
type jobReader struct {
	ctx     *hcl.EvalContext
	syntax  map[int]*hclsyntax.Body // block bodies of the job file by the byte offset of their header
	hooked  map[reflect.Type]gohcl.BodyDecoderFunc
	pending []func() hcl.Diagnostics // free-form blocks, evaluated once the job decoded cleanly

	jobVault   *api.Vault
	jobSecrets []*api.Secret
	soloTasks  []*api.Task
}

var (
	durationType    = reflect.TypeOf(time.Duration(0))
	durationPtrType = reflect.TypeOf((*time.Duration)(nil))
	anyMapType      = reflect.TypeOf(map[string]interface{}{})
)

func newJobReader(ctx *hcl.EvalContext, file *hcl.File) *jobReader {
	r := &jobReader{ctx: ctx, syntax: map[int]*hclsyntax.Body{}, hooked: map[reflect.Type]gohcl.BodyDecoderFunc{}}
	if body, ok := file.Body.(*hclsyntax.Body); ok {
		r.indexSyntax(body)
	}
	r.hooked[reflect.TypeOf(api.Constraint{})] = r.constraint
	r.hooked[reflect.TypeOf(api.Affinity{})] = r.affinity
	r.hooked[reflect.TypeOf(api.TaskGroup{})] = r.group
	r.hooked[reflect.TypeOf(api.Task{})] = r.task
	for _, t := range freeformHolders() {
		if _, taken := r.hooked[t]; !taken {
			r.hooked[t] = r.plainWithFreeform
		}
	}
	return r
}

func (r *jobReader) indexSyntax(body *hclsyntax.Body) {
	for _, b := range body.Blocks {
		r.syntax[b.DefRange().Start.Byte] = b.Body
		r.indexSyntax(b.Body)
	}
}

// decoder: a gohcl Decoder with every hook but the one of `skip` (the hook of a type decodes the rest
// of its body with the others).
func (r *jobReader) decoder(skip reflect.Type) *gohcl.Decoder {
	d := &gohcl.Decoder{}
	d.RegisterExpressionDecoder(durationType, durationHook)
	d.RegisterExpressionDecoder(durationPtrType, durationHook)
	for t, fn := range r.hooked {
		if t != skip {
			d.RegisterBlockDecoder(t, fn)
		}
	}
	return d
}

// --- durations ----------------------------------------------------------------------------------------

// durationHook: a time.Duration (or *time.Duration) from a string ("90s", time.ParseDuration) or a
// number of nanoseconds; null is refused.
func durationHook(expr hcl.Expression, ctx *hcl.EvalContext, target interface{}) hcl.Diagnostics {
	v, diags := expr.Value(ctx)
	refuse := func(summary, detail string) hcl.Diagnostics {
		return append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail,
			Subject: expr.StartRange().Ptr(), Context: expr.Range().Ptr()})
	}
	v, _ = v.Unmark()
	var d time.Duration
	switch {
	case v.IsNull():
		return refuse("Unsuitable value", "Unsuitable duration value: nil")
	case v.Type() == cty.String && !v.IsKnown(), v.Type() == cty.Number && !v.IsKnown():
		return refuse("Unsuitable value type", "Unsuitable value: value must be known")
	case v.Type() == cty.String:
		parsed, err := time.ParseDuration(v.AsString())
		if err != nil {
			return refuse("Unsuitable value type", "Unsuitable duration value: "+err.Error())
		}
		d = parsed
	case v.Type() == cty.Number:
		var n int64
		if err := gocty.FromCtyValue(v, &n); err != nil {
			return refuse("Unsuitable value type", "Unsuitable value: "+err.Error())
		}
		d = time.Duration(n)
	default:
		return refuse("Unsuitable value type", fmt.Sprintf("Unsuitable value: expected a string but found %s", v.Type()))
	}
	switch t := target.(type) {
	case *time.Duration:
		*t = d
	case **time.Duration:
		*t = &d
	}
	return diags
}

// --- constraint and affinity ----------------------------------------------------------------------------

// A shorthand argument sets the operator and one side; they are applied in this order, a later one
// overriding an earlier one. For constraints set_contains_all/any and is_set/is_not_set are accepted
// and have no effect (as in Nomad's parser).
type shorthand struct {
	name string
	left bool // sets the left side (the attribute) instead of the value
}

var constraintShorthands = []shorthand{{name: "version"}, {name: "semver"}, {name: "regexp"},
	{name: "set_contains"}, {name: "distinct_hosts"}, {name: "distinct_property", left: true}}

var affinityShorthands = []shorthand{{name: "version"}, {name: "semver"}, {name: "regexp"},
	{name: "set_contains_any"}, {name: "set_contains_all"}, {name: "set_contains"}}

func placementSpec(stringNames []string, others map[string]cty.Type) hcldec.ObjectSpec {
	spec := hcldec.ObjectSpec{}
	for _, n := range stringNames {
		spec[n] = &hcldec.AttrSpec{Name: n, Type: cty.String}
	}
	for n, t := range others {
		spec[n] = &hcldec.AttrSpec{Name: n, Type: t}
	}
	return spec
}

var constraintArgs = placementSpec([]string{"attribute", "value", "operator", "version", "semver", "regexp",
	"set_contains", "set_contains_all", "set_contains_any", "distinct_property", "is_set", "is_not_set"},
	map[string]cty.Type{"distinct_hosts": cty.Bool})

var affinityArgs = placementSpec([]string{"attribute", "value", "operator", "version", "semver", "regexp",
	"set_contains", "set_contains_all", "set_contains_any"}, map[string]cty.Type{"weight": cty.Number})

// placement reads the arguments: left, right and operator after the shorthands.
func placement(obj cty.Value, order []shorthand) (left, right, op string) {
	text := func(name string) (string, bool) {
		v := obj.GetAttr(name)
		if v.IsNull() || !v.IsKnown() {
			return "", false
		}
		if v.Type() == cty.Bool {
			return strconv.FormatBool(v.True()), true
		}
		return v.AsString(), true
	}
	left, _ = text("attribute")
	right, _ = text("value")
	op, _ = text("operator")
	for _, s := range order {
		t, set := text(s.name)
		if !set {
			continue
		}
		op = s.name
		if s.left {
			left = t
		} else {
			right = t
		}
	}
	if op == "" {
		op = "="
	}
	return left, right, op
}

func (r *jobReader) constraint(body hcl.Body, ctx *hcl.EvalContext, target interface{}) hcl.Diagnostics {
	obj, diags := hcldec.Decode(body, constraintArgs, ctx)
	if diags.HasErrors() {
		return diags
	}
	c := target.(*api.Constraint)
	c.LTarget, c.RTarget, c.Operand = placement(obj, constraintShorthands)
	return diags
}

func (r *jobReader) affinity(body hcl.Body, ctx *hcl.EvalContext, target interface{}) hcl.Diagnostics {
	obj, diags := hcldec.Decode(body, affinityArgs, ctx)
	if diags.HasErrors() {
		return diags
	}
	a := target.(*api.Affinity)
	a.LTarget, a.RTarget, a.Operand = placement(obj, affinityShorthands)
	if w := obj.GetAttr("weight"); !w.IsNull() && w.IsKnown() {
		f, _ := w.AsBigFloat().Float64()
		weight := int8(int64(f))
		a.Weight = &weight
	}
	return diags
}

// --- map arguments, vault/secret, free-form blocks ----------------------------------------------------

// mapArgument: `name = { ... }` where the struct's tag wants a `name { ... }` block (meta, env). The
// map, and the body without it; nil and the body unchanged when it is written as a block or absent.
// Both forms at once are refused.
func (r *jobReader) mapArgument(body hcl.Body, name string) (map[string]string, hcl.Body, hcl.Diagnostics) {
	content, rest, diags := body.PartialContent(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: name}}})
	attr := content.Attributes[name]
	if diags.HasErrors() || attr == nil {
		return nil, body, nil
	}
	blocks, _, _ := rest.PartialContent(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: name}}})
	if len(blocks.Blocks) > 0 {
		return nil, rest, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Duplicate " + name + " block",
			Detail: fmt.Sprintf("%s may not be defined more than once. Another definition is defined at %s.",
				name, attr.Range.String()),
			Subject: blocks.Blocks[0].DefRange.Ptr()}}
	}
	out := map[string]string{}
	return out, rest, r.decoder(nil).DecodeExpression(attr.Expr, r.ctx, &out)
}

// freeformHolders: the api structs (reachable from api.Job) with a free-form `x { ... }` block field
// (map[string]interface{}): a task's config, a sidecar's, a proxy's, a secret's, a scaling policy...
func freeformHolders() []reflect.Type {
	var out []reflect.Type
	seen := map[reflect.Type]bool{}
	var visit func(t reflect.Type)
	visit = func(t reflect.Type) {
		for t.Kind() == reflect.Ptr || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return
		}
		seen[t] = true
		if len(freeformFields(t)) > 0 {
			out = append(out, t)
		}
		for i := 0; i < t.NumField(); i++ {
			visit(t.Field(i).Type)
		}
	}
	visit(reflect.TypeOf(api.Job{}))
	return out
}

// freeformFields: block name -> field index.
func freeformFields(t reflect.Type) map[string]int {
	out := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("hcl")
		if f.Type == anyMapType && strings.HasSuffix(tag, ",block") {
			out[strings.TrimSuffix(tag, ",block")] = i
		}
	}
	return out
}

// takeFreeform removes the free-form blocks of `target`'s type from the body and schedules their
// reading into its fields.
func (r *jobReader) takeFreeform(body hcl.Body, target reflect.Value) (hcl.Body, hcl.Diagnostics) {
	fields := freeformFields(target.Type())
	if len(fields) == 0 {
		return body, nil
	}
	schema := &hcl.BodySchema{}
	for name := range fields {
		schema.Blocks = append(schema.Blocks, hcl.BlockHeaderSchema{Type: name})
	}
	// errors here (a label where none goes) are reported again, once, by the decode of the rest
	content, rest, _ := body.PartialContent(schema)
	var diags hcl.Diagnostics
	first := map[string]*hcl.Block{}
	for _, b := range content.Blocks {
		if prev := first[b.Type]; prev != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Duplicate " + b.Type + " block",
				Detail: fmt.Sprintf("Only one %s block is allowed. Another was defined at %s.", b.Type,
					prev.DefRange.String()),
				Subject: b.DefRange.Ptr()})
			continue
		}
		first[b.Type] = b
		block, field := b, target.Field(fields[b.Type])
		r.pending = append(r.pending, func() hcl.Diagnostics {
			m, d := r.readFreeform(block)
			field.Set(reflect.ValueOf(m))
			return d
		})
	}
	return rest, diags
}

// plainWithFreeform: a struct with free-form blocks and nothing else special.
func (r *jobReader) plainWithFreeform(body hcl.Body, ctx *hcl.EvalContext, target interface{}) hcl.Diagnostics {
	v := reflect.ValueOf(target).Elem()
	rest, diags := r.takeFreeform(body, v)
	return append(diags, r.decoder(v.Type()).DecodeBody(rest, ctx, target)...)
}

func refuseScaling(body hcl.Body, labelled bool) (hcl.Body, hcl.Diagnostics) {
	header := hcl.BlockHeaderSchema{Type: "scaling"}
	if labelled {
		header.LabelNames = []string{"name"}
	}
	content, rest, _ := body.PartialContent(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{header}})
	var diags hcl.Diagnostics
	for _, b := range content.Blocks {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Unsupported block type",
			Detail:  `The Nomad double's engine does not support "scaling" blocks (scaling policies are not implemented).`,
			Subject: b.DefRange.Ptr()})
	}
	return rest, diags
}

func (r *jobReader) decodeVault(block *hcl.Block) (*api.Vault, hcl.Diagnostics) {
	v := &api.Vault{}
	return v, r.decoder(nil).DecodeBody(block.Body, r.ctx, v)
}

func (r *jobReader) decodeSecret(block *hcl.Block) (*api.Secret, hcl.Diagnostics) {
	s := &api.Secret{}
	d := r.decoder(nil).DecodeBody(block.Body, r.ctx, s)
	s.Name = block.Labels[0]
	return s, d
}

var holderBlocks = []hcl.BlockHeaderSchema{{Type: "vault"}, {Type: "secret", LabelNames: []string{"name"}}}

// --- job, group, task ----------------------------------------------------------------------------------

func (r *jobReader) readJob(block *hcl.Block) (*api.Job, hcl.Diagnostics) {
	job := &api.Job{}
	body := dynblock.Expand(block.Body, r.ctx)
	meta, body, diags := r.mapArgument(body, "meta")
	extra, rest, more := body.PartialContent(&hcl.BodySchema{Blocks: append(holderBlocks[:2:2],
		hcl.BlockHeaderSchema{Type: "task", LabelNames: []string{"name"}})})
	diags = append(diags, more...)
	var vaultAt *hcl.Block
	for _, b := range extra.Blocks {
		switch b.Type {
		case "vault":
			if vaultAt != nil {
				diags = append(diags, duplicateBlock(vaultAt, b))
				continue
			}
			vaultAt = b
			v, d := r.decodeVault(b)
			diags = append(diags, d...)
			r.jobVault = v
		case "secret":
			s, d := r.decodeSecret(b)
			diags = append(diags, d...)
			r.jobSecrets = append(r.jobSecrets, s)
		case "task":
			t := &api.Task{}
			diags = append(diags, r.decoder(nil).DecodeBody(b.Body, r.ctx, t)...)
			t.Name = b.Labels[0]
			r.soloTasks = append(r.soloTasks, t)
		}
	}
	diags = append(diags, r.decoder(nil).DecodeBody(rest, r.ctx, job)...)
	if meta != nil {
		job.Meta = meta
	}
	return job, diags
}

// group: meta as an argument, a group-level vault and secrets handed to its tasks. As with Nomad's
// parser, errors in the group's meta stop the group there, while those of its vault and secret blocks
// are not reported (the last vault block wins).
func (r *jobReader) group(body hcl.Body, ctx *hcl.EvalContext, target interface{}) hcl.Diagnostics {
	tg := target.(*api.TaskGroup)
	meta, body, diags := r.mapArgument(body, "meta")
	body, more := refuseScaling(body, false)
	diags = append(diags, more...)
	extra, rest, more := body.PartialContent(&hcl.BodySchema{Blocks: holderBlocks})
	diags = append(diags, more...)
	if len(diags) > 0 {
		return diags
	}
	var vault *api.Vault
	var secrets []*api.Secret
	for _, b := range extra.Blocks {
		if b.Type == "vault" {
			vault, _ = r.decodeVault(b)
		} else {
			s, _ := r.decodeSecret(b)
			secrets = append(secrets, s)
		}
	}
	diags = r.decoder(reflect.TypeOf(api.TaskGroup{})).DecodeBody(rest, ctx, tg)
	if meta != nil {
		tg.Meta = meta
	}
	for _, t := range tg.Tasks {
		if t.Vault == nil {
			t.Vault = vault
		}
		switch {
		case len(secrets) == 0:
		case len(t.Secrets) == 0:
			t.Secrets = secrets
		default: // Nomad's parser doubles the task's own list here rather than adding the group's
			t.Secrets = append(t.Secrets, t.Secrets...)
		}
	}
	return diags
}

// task: env and meta as arguments, free-form config; scaling policies are refused.
func (r *jobReader) task(body hcl.Body, ctx *hcl.EvalContext, target interface{}) hcl.Diagnostics {
	t := target.(*api.Task)
	env, body, diags := r.mapArgument(body, "env")
	meta, body, more := r.mapArgument(body, "meta")
	diags = append(diags, more...)
	body, more = refuseScaling(body, true)
	diags = append(diags, more...)
	body, more = r.takeFreeform(body, reflect.ValueOf(t).Elem())
	diags = append(diags, more...)
	diags = append(diags, r.decoder(reflect.TypeOf(api.Task{})).DecodeBody(body, ctx, t)...)
	if env != nil {
		t.Env = env
	}
	if meta != nil {
		t.Meta = meta
	}
	return diags
}

// finishFreeform reads the free-form blocks (after a clean decode, as Nomad's parser does: their
// errors come as one Diagnostics).
func (r *jobReader) finishFreeform() hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, read := range r.pending {
		diags = append(diags, read()...)
	}
	return diags
}
