package main

import (
	"crypto/fips140"
	"errors"
	"sort"

	"github.com/hashicorp/go-cty-funcs/cidr"
	"github.com/hashicorp/go-cty-funcs/crypto"
	"github.com/hashicorp/go-cty-funcs/encoding"
	"github.com/hashicorp/go-cty-funcs/filesystem"
	"github.com/hashicorp/go-cty-funcs/uuid"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	ctyyaml "github.com/zclconf/go-cty-yaml"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// hclFunctions is the job parser's HCL function table: exactly the names of Nomad's
// jobspec2/functions.go (Functions), each bound to the library function Nomad binds it to. Nomad's
// table has regex_replace but neither regex nor regexall (nor Terraform's others: startswith,
// endswith, tostring, ...): a job file calling one gets "Call to unknown function". Nothing of
// Nomad's table is missing here. md5 and sha1 are there only when the process is not in FIPS 140
// mode, as Nomad's. The filesystem functions are there but refuse to run: /v1/jobs/parse parses
// with AllowFS false (command/agent/job_endpoint.go), so they fail at type checking.
func hclFunctions(basedir string, allowFS bool) map[string]function.Function {
	fs := func(fn function.Function) function.Function {
		if allowFS {
			return fn
		}
		return refusingFS(fn)
	}
	table := map[string]function.Function{
		"abs":             stdlib.AbsoluteFunc,
		"base64decode":    encoding.Base64DecodeFunc,
		"base64encode":    encoding.Base64EncodeFunc,
		"bcrypt":          crypto.BcryptFunc,
		"can":             tryfunc.CanFunc,
		"ceil":            stdlib.CeilFunc,
		"chomp":           stdlib.ChompFunc,
		"chunklist":       stdlib.ChunklistFunc,
		"cidrhost":        cidr.HostFunc,
		"cidrnetmask":     cidr.NetmaskFunc,
		"cidrsubnet":      cidr.SubnetFunc,
		"cidrsubnets":     cidr.SubnetsFunc,
		"coalesce":        stdlib.CoalesceFunc,
		"coalescelist":    stdlib.CoalesceListFunc,
		"compact":         stdlib.CompactFunc,
		"concat":          stdlib.ConcatFunc,
		"contains":        stdlib.ContainsFunc,
		"convert":         typeexpr.ConvertFunc,
		"csvdecode":       stdlib.CSVDecodeFunc,
		"distinct":        stdlib.DistinctFunc,
		"element":         stdlib.ElementFunc,
		"flatten":         stdlib.FlattenFunc,
		"floor":           stdlib.FloorFunc,
		"format":          stdlib.FormatFunc,
		"formatdate":      stdlib.FormatDateFunc,
		"formatlist":      stdlib.FormatListFunc,
		"indent":          stdlib.IndentFunc,
		"index":           stdlib.IndexFunc,
		"join":            stdlib.JoinFunc,
		"jsondecode":      stdlib.JSONDecodeFunc,
		"jsonencode":      stdlib.JSONEncodeFunc,
		"keys":            stdlib.KeysFunc,
		"length":          stdlib.LengthFunc,
		"log":             stdlib.LogFunc,
		"lookup":          stdlib.LookupFunc,
		"lower":           stdlib.LowerFunc,
		"max":             stdlib.MaxFunc,
		"merge":           stdlib.MergeFunc,
		"min":             stdlib.MinFunc,
		"parseint":        stdlib.ParseIntFunc,
		"pow":             stdlib.PowFunc,
		"range":           stdlib.RangeFunc,
		"reverse":         stdlib.ReverseFunc,
		"replace":         stdlib.ReplaceFunc,
		"regex_replace":   stdlib.RegexReplaceFunc,
		"rsadecrypt":      crypto.RsaDecryptFunc,
		"setintersection": stdlib.SetIntersectionFunc,
		"setproduct":      stdlib.SetProductFunc,
		"setunion":        stdlib.SetUnionFunc,
		"sha256":          crypto.Sha256Func,
		"sha512":          crypto.Sha512Func,
		"signum":          stdlib.SignumFunc,
		"slice":           stdlib.SliceFunc,
		"sort":            stdlib.SortFunc,
		"split":           stdlib.SplitFunc,
		"strlen":          stdlib.StrlenFunc,
		"strrev":          stdlib.ReverseFunc, // Nomad binds strrev to the list reverse, as written there
		"substr":          stdlib.SubstrFunc,
		"timeadd":         stdlib.TimeAddFunc,
		"title":           stdlib.TitleFunc,
		"trim":            stdlib.TrimFunc,
		"trimprefix":      stdlib.TrimPrefixFunc,
		"trimspace":       stdlib.TrimSpaceFunc,
		"trimsuffix":      stdlib.TrimSuffixFunc,
		"try":             tryfunc.TryFunc,
		"upper":           stdlib.UpperFunc,
		"urlencode":       encoding.URLEncodeFunc,
		"uuidv4":          uuid.V4Func,
		"uuidv5":          uuid.V5Func,
		"values":          stdlib.ValuesFunc,
		"yamldecode":      ctyyaml.YAMLDecodeFunc,
		"yamlencode":      ctyyaml.YAMLEncodeFunc,
		"zipmap":          stdlib.ZipmapFunc,

		"abspath":    fs(filesystem.AbsPathFunc),
		"basename":   fs(filesystem.BasenameFunc),
		"dirname":    fs(filesystem.DirnameFunc),
		"file":       fs(filesystem.MakeFileFunc(basedir, false)),
		"filebase64": fs(filesystem.MakeFileFunc(basedir, true)),
		"fileexists": fs(filesystem.MakeFileExistsFunc(basedir)),
		"fileset":    fs(filesystem.MakeFileSetFunc(basedir)),
		"pathexpand": fs(filesystem.PathExpandFunc),
	}
	if !fips140.Enabled() {
		table["md5"] = crypto.Md5Func
		table["sha1"] = crypto.Sha1Func
	}
	return table
}

// refusingFS: the function's signature with a type check that always fails, so a call is an
// "Error in function call" diagnostic and its value unknown.
func refusingFS(fn function.Function) function.Function {
	return function.New(&function.Spec{
		Description: fn.Description(),
		Params:      fn.Params(),
		VarParam:    fn.VarParam(),
		Type: func([]cty.Value) (cty.Type, error) {
			return cty.NilType, errors.New("filesystem function disabled")
		},
		Impl: func([]cty.Value, cty.Type) (cty.Value, error) {
			return cty.NilVal, errors.New("filesystem function disabled")
		},
	})
}

// FunctionNames: the table's names, sorted (the `functions` sub-command, for the tests).
func FunctionNames() []string {
	var names []string
	for name := range hclFunctions(".", false) {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
