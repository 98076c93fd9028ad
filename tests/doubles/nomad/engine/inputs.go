package main

import (
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// An input is a `variable "name" { ... }` declaration (or an entry of a `variables { }` block) and the
// value it ends up with: its default, then the var file's, then the -var argument's.
type input struct {
	name  string
	typ   cty.Type
	rules []inputRule

	hasValue bool
	broken   bool // its type, default or a given value was refused: no "Unset variable" besides
	value    cty.Value
	source   string    // "default", "varfile" or "cmd": the word in "Invalid value for ... variable"
	where    hcl.Range // the value's expression (empty for -var)
}

type inputRule struct {
	condition hcl.Expression
	message   string
	at        hcl.Range
}

type inputSet struct {
	fileName string
	order    []*input
	byName   map[string]*input
}

func newInputSet(fileName string) *inputSet {
	return &inputSet{fileName: fileName, byName: map[string]*input{}}
}

var declarationSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "type"}, {Name: "default"}, {Name: "description"}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: "validation"}},
}

type ruleBody struct {
	Condition hcl.Expression `hcl:"condition"`
	Message   string         `hcl:"error_message"`
}

func (s *inputSet) add(in *input) hcl.Diagnostics {
	if _, taken := s.byName[in.name]; taken {
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Duplicate variable",
			Detail: fmt.Sprintf("Duplicate %s variable definition found.", in.name)}}
	}
	s.byName[in.name] = in
	s.order = append(s.order, in)
	return nil
}

// declare reads a variable block. Its default and messages are constants (no variables, no functions).
func (s *inputSet) declare(block *hcl.Block) hcl.Diagnostics {
	in := &input{name: block.Labels[0], typ: cty.DynamicPseudoType}
	content, diags := block.Body.Content(declarationSchema)
	if t, ok := content.Attributes["type"]; ok {
		typ, more := typeexpr.TypeConstraint(t.Expr)
		diags = append(diags, more...)
		if more.HasErrors() {
			in.broken = true
		} else {
			in.typ = typ
		}
	}
	if d, ok := content.Attributes["default"]; ok {
		v, more := d.Expr.Value(nil)
		diags = append(diags, more...)
		in.broken = in.broken || more.HasErrors()
		if !in.broken {
			converted, err := convert.Convert(v, in.typ)
			if err != nil {
				in.broken = true
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError,
					Summary: "Invalid default value for variable",
					Detail: fmt.Sprintf("This default value is not compatible with the variable's type constraint: %s.",
						err.Error()),
					Subject: d.Expr.Range().Ptr()})
			} else {
				in.hasValue, in.value, in.source, in.where = true, converted, "default", d.Expr.Range()
			}
		}
	}
	for _, vb := range content.Blocks {
		var rb ruleBody
		diags = append(diags, gohcl.DecodeBody(vb.Body, nil, &rb)...)
		if rb.Condition == nil {
			continue
		}
		diags = append(diags, checkRuleReferences(in.name, rb.Condition)...)
		in.rules = append(in.rules, inputRule{condition: rb.Condition, message: rb.Message, at: vb.DefRange})
	}
	return append(diags, s.add(in)...)
}

// checkRuleReferences: a rule may look at its own variable only, and must look at it.
func checkRuleReferences(name string, cond hcl.Expression) hcl.Diagnostics {
	var diags hcl.Diagnostics
	own := false
	for _, ref := range cond.Variables() {
		if ref.RootName() != "var" || len(ref) < 2 {
			continue
		}
		step, ok := ref[1].(hcl.TraverseAttr)
		if !ok {
			continue
		}
		if step.Name == name {
			own = true
			continue
		}
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError,
			Summary: "Invalid reference in variable validation",
			Detail: fmt.Sprintf("The condition for variable %q can only refer to the variable itself, using var.%s.",
				name, name),
			Subject: ref.SourceRange().Ptr()})
	}
	if !own {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError,
			Summary: "Invalid variable validation condition",
			Detail: fmt.Sprintf("The condition for variable %q must refer to var.%s in order to test incoming values.",
				name, name),
			Subject: cond.Range().Ptr()})
	}
	return diags
}

// declareDefaults reads a `variables { name = default ... }` block: untyped inputs with defaults.
func (s *inputSet) declareDefaults(block *hcl.Block) hcl.Diagnostics {
	attrs, diags := block.Body.JustAttributes()
	for _, a := range inSourceOrder(attrs) {
		v, more := a.Expr.Value(nil)
		diags = append(diags, more...)
		in := &input{name: a.Name, typ: cty.DynamicPseudoType}
		if !more.HasErrors() {
			in.hasValue, in.value, in.source, in.where = true, v, "default", a.Expr.Range()
		}
		diags = append(diags, s.add(in)...)
	}
	return diags
}

func severity(strict bool) hcl.DiagnosticSeverity {
	if strict {
		return hcl.DiagError
	}
	return hcl.DiagWarning
}

// fromVarFile: the request's Variables, `name = constant` lines.
func (s *inputSet) fromVarFile(body hcl.Body, strict bool) hcl.Diagnostics {
	attrs, diags := body.JustAttributes()
	for _, a := range inSourceOrder(attrs) {
		in, known := s.byName[a.Name]
		if !known {
			diags = append(diags, &hcl.Diagnostic{Severity: severity(strict), Summary: "Undefined variable",
				Detail: fmt.Sprintf("A %q variable was set but was not found in known variables. To declare "+
					"variable %q, place this block in your job files", a.Name, a.Name)})
			continue
		}
		v, more := a.Expr.Value(nil)
		diags = append(diags, more...)
		if more.HasErrors() {
			in.broken = true
			continue
		}
		converted, err := convert.Convert(v, in.typ)
		if err != nil {
			in.broken = true
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid value for variable",
				Detail: fmt.Sprintf("The value for %s is not compatible with the variable's type constraint: %s.",
					a.Name, err.Error()),
				Subject: a.Expr.Range().Ptr()})
			continue
		}
		in.hasValue, in.value, in.source, in.where = true, converted, "varfile", a.Expr.Range()
	}
	return diags
}

// fromArgs: `-var name=value`. A primitive (or untyped) input takes the text as a string converted to
// its type; a collection or structure takes it as a constant HCL expression.
func (s *inputSet) fromArgs(args []string, strict bool) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, arg := range args {
		name, text, found := strings.Cut(arg, "=")
		if !found || name == "" {
			continue
		}
		in, known := s.byName[name]
		if !known {
			diags = append(diags, &hcl.Diagnostic{Severity: severity(strict), Summary: "Undefined -var variable",
				Detail: fmt.Sprintf("A %q variable was passed in the command line but was not found in known "+
					"variables. To declare variable %q, place this block in your job file", name, name)})
			continue
		}
		raw := cty.StringVal(text)
		if !in.typ.IsPrimitiveType() && in.typ != cty.DynamicPseudoType {
			expr, more := hclsyntax.ParseExpression([]byte(text),
				fmt.Sprintf("<value for var.%s from arguments>", name), hcl.InitialPos)
			diags = append(diags, more...)
			if more.HasErrors() {
				in.broken = true
				continue
			}
			v, more := expr.Value(nil)
			diags = append(diags, more...)
			if more.HasErrors() {
				in.broken = true
				continue
			}
			raw = v
		}
		converted, err := convert.Convert(raw, in.typ)
		if err != nil {
			in.broken = true
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError,
				Summary: "Invalid argument value for -var variable",
				Detail: fmt.Sprintf("The received arg value for %s is not compatible with the variable's type "+
					"constraint: %s.", name, err.Error()),
				Subject: &hcl.Range{}})
			continue
		}
		in.hasValue, in.value, in.source, in.where = true, converted, "cmd", hcl.Range{}
	}
	return diags
}

// settle: every input must have a value; each value must pass its rules.
func (s *inputSet) settle() hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, in := range s.order {
		if !in.hasValue && !in.broken {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError,
				Summary: fmt.Sprintf("Unset variable %q", in.name),
				Detail: "A used variable must be set or have a default value; see " +
					"https://developer.hashicorp.com/nomad/docs/reference/hcl2/variables  for details."})
		}
	}
	for _, in := range s.order {
		if in.hasValue {
			diags = append(diags, s.check(in)...)
		}
	}
	return diags
}

func (s *inputSet) check(in *input) hcl.Diagnostics {
	var diags hcl.Diagnostics
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{"var": cty.ObjectVal(map[string]cty.Value{in.name: in.value})},
		Functions: hclFunctions(".", false),
	}
	for _, rule := range in.rules {
		result, more := rule.condition.Value(ctx)
		diags = append(diags, more...)
		if more.HasErrors() || !result.IsKnown() {
			continue
		}
		if result.IsNull() {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError,
				Summary: "Invalid variable validation result",
				Detail:  "Validation condition expression must return either true or false, not null.",
				Subject: rule.condition.Range().Ptr()})
			continue
		}
		ok, err := convert.Convert(result, cty.Bool)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError,
				Summary: "Invalid variable validation result",
				Detail:  fmt.Sprintf("Invalid validation condition result value: %s.", err.Error()),
				Subject: rule.condition.Range().Ptr()})
			continue
		}
		if ok.True() {
			continue
		}
		where := in.where
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError,
			Summary: fmt.Sprintf("Invalid value for %s variable", in.source),
			Detail:  fmt.Sprintf("%s\n\nThis was checked by the validation rule at %s.", rule.message, rule.at.String()),
			Subject: &where})
	}
	return diags
}

// object: var.* for the job's expressions (inputs without a value are left out).
func (s *inputSet) object() cty.Value {
	vals := map[string]cty.Value{}
	for _, in := range s.order {
		if in.hasValue {
			vals[in.name] = in.value
		}
	}
	return cty.ObjectVal(vals)
}
