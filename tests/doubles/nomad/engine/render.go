package main

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"text/template"

	"github.com/hashicorp/go-envparse"
)

// RenderInput: one template block of a task, the Nomad Variables its workload identity may read
// (path -> items; a path in another namespace than the task's as "path@namespace"), the task's
// namespace (Where: "namespace" or "namespace.region"; only the namespace counts, see nomadVarKey),
// and for env = true the destination as Nomad names it in its error (Dest, the client path).
type RenderInput struct {
	Template      string
	Variables     map[string]map[string]string
	Where         string
	Envvars       bool
	Dest          string
	LeftDelim     string
	RightDelim    string
	ErrMissingKey bool
}

// RenderOutput: Text (and Env with Envvars); or Missing, the dependencies consul-template waits for
// as Nomad's "Missing: ..." task event lists them; or Error, the text of the event with which Nomad
// kills the task ("Template failed: ..." or "Template failed to read environment variables: ...",
// the latter with Text). Unsupported names a consul-template function this engine does not have
// (the template would work on Nomad: the double's limit, not the job's fault).
type RenderOutput struct {
	Text        *string           `json:",omitempty"`
	Env         map[string]string `json:",omitempty"`
	Missing     string            `json:",omitempty"`
	Error       string            `json:",omitempty"`
	Unsupported string            `json:",omitempty"`
}

// Render is Nomad's template hook for one template (facts: client/allocrunner/taskrunner/template/
// template.go; consul-template's template/template.go Execute, template/nomad_funcs.go and
// dependency/nomad_var_get.go): Go's text/template with missingkey=zero (error_on_missing_key =
// false, Nomad's default) and consul-template's nomadVar/nomadVarExists; a Variable not there is a
// missing dependency (the task waits: "Missing: nomad.var.block(path@namespace.region)"); a
// rendered env template is read with go-envparse.
func Render(in RenderInput) RenderOutput {
	left, right := in.LeftDelim, in.RightDelim
	if left == "" {
		left = "{{"
	}
	if right == "" {
		right = "}}"
	}
	namespace, _, _ := strings.Cut(in.Where, ".")
	if namespace == "" {
		namespace = "default"
	}
	r := &renderer{variables: in.Variables, namespace: namespace, missing: map[string]bool{}}
	tmpl := template.New("").Delims(left, right).Funcs(template.FuncMap{
		"nomadVar":       r.nomadVar,
		"nomadVarExists": r.nomadVarExists,
	})
	if in.ErrMissingKey {
		tmpl.Option("missingkey=error")
	} else {
		tmpl.Option("missingkey=zero")
	}
	// consul-template wraps: (dynamic) is an embedded template's Source(), then parse / execute
	if _, err := tmpl.Parse(in.Template); err != nil {
		return RenderOutput{Error: "Template failed: (dynamic): parse: " + err.Error(), Unsupported: unsupported(err)}
	}
	var out strings.Builder
	if err := tmpl.Execute(&out, nil); err != nil {
		return RenderOutput{Error: "Template failed: (dynamic): execute: " + err.Error()}
	}
	if len(r.missing) > 0 {
		return RenderOutput{Missing: missingText(r.missing)}
	}
	text := out.String()
	result := RenderOutput{Text: &text}
	if in.Envvars {
		env, err := envparse.Parse(strings.NewReader(text))
		if err != nil {
			result.Error = fmt.Sprintf("Template failed to read environment variables: error parsing env "+
				"template %q: %v", in.Dest, err)
			return result
		}
		result.Env = env
	}
	return result
}

type renderer struct {
	variables map[string]map[string]string
	namespace string
	missing   map[string]bool
}

// nomadVarItem / nomadVarItems: consul-template's NomadVarItem (printed as its value) and
// NomadVarItems (a map of them, with Keys, Values, Tuples and ItemsMap; Metadata and Parent are
// left out). A missing item is the zero item, which prints "" (missingkey=zero).
type nomadVarItem struct {
	Key, Value string
}

func (i nomadVarItem) String() string { return i.Value }

type nomadVarItems map[string]nomadVarItem

func (v nomadVarItems) Keys() []string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (v nomadVarItems) Values() []string {
	var out []string
	for _, k := range v.Keys() {
		out = append(out, v[k].String())
	}
	return out
}

func (v nomadVarItems) Tuples() []struct{ K, V string } {
	var out []struct{ K, V string }
	for _, k := range v.Keys() {
		out = append(out, struct{ K, V string }{K: k, V: v[k].String()})
	}
	return out
}

func (v nomadVarItems) ItemsMap() map[string]interface{} {
	out := map[string]interface{}{}
	for k, item := range v {
		out[k] = item.String()
	}
	return out
}

// consul-template's NVGetQueryRe: path, then optional @namespace and .region.
var nomadVarQuery = regexp.MustCompile(`\A/?(?P<path>[^@]+)(@(?P<namespace>[[:word:]\-\_]+))?(\.(?P<region>[[:word:]\-\_]+))?\z`)

// nomadVarKey: the dependency's name as consul-template's NVGetQuery.String() makes it (blocking:
// "nomad.var.block(path@namespace.region)", the namespace the task's unless the query names one, the
// region "global" unless the query names one: not the agent's region) and the key of Variables.
func (r *renderer) nomadVarKey(query string) (name, key string, err error) {
	query = strings.Trim(strings.TrimSpace(query), "/")
	m := nomadVarQuery.FindStringSubmatch(query)
	if m == nil {
		return "", "", fmt.Errorf("nomad.var.get: invalid format: %q", query)
	}
	path, namespace, region := m[1], m[3], m[5]
	key = path
	if namespace != "" && namespace != r.namespace {
		key = path + "@" + namespace
	}
	if namespace == "" {
		namespace = r.namespace
	}
	if region == "" {
		region = "global"
	}
	return fmt.Sprintf("nomad.var.block(%s@%s.%s)", path, namespace, region), key, nil
}

func (r *renderer) nomadVar(query string) (nomadVarItems, error) {
	if query == "" {
		return nil, nil
	}
	name, key, err := r.nomadVarKey(query)
	if err != nil {
		return nil, err
	}
	items, ok := r.variables[key]
	if !ok {
		r.missing[name] = true
		return nil, nil
	}
	out := nomadVarItems{}
	for k, v := range items {
		out[k] = nomadVarItem{Key: k, Value: v}
	}
	return out, nil
}

// nomadVarExists: false for a Variable not there (not a missing dependency once known; here the
// Variables given are all there is).
func (r *renderer) nomadVarExists(query string) (bool, error) {
	if query == "" {
		return false, nil
	}
	_, key, err := r.nomadVarKey(query)
	if err != nil {
		return false, err
	}
	_, ok := r.variables[key]
	return ok, nil
}

// missingText: Nomad's "Missing: " event lists at most 3, sorted, then "and N more".
func missingText(missing map[string]bool) string {
	names := sortedKeys(missing)
	const limit = 3
	if len(names) > limit {
		names = append(names[:limit], fmt.Sprintf("and %d more", len(names)-limit))
	}
	return strings.Join(names, ", ")
}

// consul-template's functions (template/template.go funcMap) this engine does not have.
var consulTemplateFunctions = strings.Fields(`datacenters exportedServices importedServices file key keyExists
	keyOrDefault ls safeLs node nodes partitions peerings secret secrets service connect services tree safeTree
	caRoots caLeaf pkiCert nomadServices nomadService nomadVarList nomadVarListSafe scratch base64Decode
	base64Encode base64URLDecode base64URLEncode byKey byPort byTag contains containsAll containsAny containsNone
	containsNotAll env mustEnv envOrDefault executeTemplate explode explodeMap mergeMap mergeMapWithOverride in
	indent loop join trim trimPrefix trimSuffix trimSpace parseBool parseFloat parseInt parseJSON parseUint
	parseYAML plugin regexReplaceAll regexMatch replaceAll sha256Hex md5sum hmacSHA256Hex timestamp toLower
	toJSON toJSONPretty toUnescapedJSON toUnescapedJSONPretty toTitle toTOML toUpper toYAML split splitToMap
	byMeta sockaddr writeToFile add subtract multiply divide modulo minimum maximum spew_dump spew_printf
	spew_sdump spew_sprintf`)

var undefinedFunction = regexp.MustCompile(`function "([^"]+)" not defined`)

func unsupported(err error) string {
	m := undefinedFunction.FindStringSubmatch(err.Error())
	if m == nil {
		return ""
	}
	for _, name := range consulTemplateFunctions {
		if name == m[1] {
			return name
		}
	}
	if strings.HasPrefix(m[1], "sprig_") {
		return m[1]
	}
	return ""
}

// sortedKeys: a map's keys in order, where Go's map order would make the output vary.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
