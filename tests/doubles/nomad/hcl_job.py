"""HCL2 job file -> the JSON job of json-jobs.mdx, as Nomad's /v1/jobs/parse returns it.

Parsing is python-hcl2's (a real HCL2 parser); this module evaluates the small expression language a
job file uses (variables, string templates, a few functions such as ``can(regex(...))``), checks
variable types and ``validation`` blocks, maps blocks to the API's field names, and, with
Canonicalize, fills Nomad's defaults. Unknown blocks and arguments are refused like Nomad does.
"""
from __future__ import annotations

import copy
import re

import hcl2

SECOND = 1_000_000_000


class ParseError(Exception):
    pass


# --- durations --------------------------------------------------------------------------------
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": SECOND, "m": 60 * SECOND, "h": 3600 * SECOND}


def duration(text, where: str) -> int:
    if isinstance(text, (int, float)):
        return int(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ParseError(f"{where}: time: invalid duration \"{text}\"")
    return int(sum(float(n) * _UNITS[u] for n, u in parts))


# --- expressions ------------------------------------------------------------------------------
class EvalError(ParseError):
    pass


_TOKEN = re.compile(r"""\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<str>"(?:[^"\\]|\\.)*")|(?P<name>[A-Za-z_][A-Za-z0-9_-]*)
                        |(?P<op>&&|\|\||==|!=|<=|>=|[-+*/%!<>?:()\[\].,{}=]))""", re.X)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise EvalError(f"Invalid expression: unexpected {text[pos:pos + 10]!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def _regex(pattern, value):
    m = re.search(pattern, value)
    if not m:
        raise EvalError("Error in function call: pattern did not match any part of the given string")
    return m.group(0)


FUNCTIONS = {
    "regex": _regex,
    "format": lambda fmt, *a: fmt.replace("%%", "\0") % a if "%" in fmt else fmt,
    "join": lambda sep, items: sep.join(str(i) for i in items),
    "lower": str.lower, "upper": str.upper, "trimspace": str.strip,
    "length": len, "contains": lambda items, v: v in items,
    "startswith": lambda s, p: s.startswith(p), "endswith": lambda s, p: s.endswith(p),
    "replace": lambda s, a, b: s.replace(a, b), "tostring": lambda v: _to_str(v), "tonumber": lambda v: _to_num(v),
    "compact": lambda items: _compact(items), "concat": lambda *lists: _concat(lists),
}


def _compact(items):
    """cty stdlib CompactFunc: a list of strings without the empty ones (and nulls)."""
    if not isinstance(items, list):
        raise EvalError("Invalid function argument: list of string required")
    return [_to_str(item) for item in items if item not in ("", None)]


def _concat(lists):
    """cty stdlib ConcatFunc: the lists one after the other (at least one)."""
    if not lists or not all(isinstance(items, list) for items in lists):
        raise EvalError("Invalid function argument: all arguments must be lists or tuples")
    return [item for items in lists for item in items]


class _Expr:
    def __init__(self, text: str, scope: dict):
        self.toks = _tokens(text)
        self.i = 0
        self.scope = scope

    def peek(self, value=None):
        if self.i >= len(self.toks):
            return None
        tok = self.toks[self.i]
        return tok if value is None or tok[1] == value else None

    def take(self, value=None):
        tok = self.peek(value)
        if tok is None:
            raise EvalError(f"Invalid expression: expected {value or 'a value'}")
        self.i += 1
        return tok

    def parse(self):
        value = self.ternary()
        if self.i != len(self.toks):
            raise EvalError(f"Invalid expression: extra {self.toks[self.i][1]!r}")
        return value

    def ternary(self):
        cond = self.binary(0)
        if self.peek("?"):
            self.take("?")
            a = self.ternary()
            self.take(":")
            b = self.ternary()
            return a if cond else b
        return cond

    LEVELS = [("||",), ("&&",), ("==", "!="), ("<", ">", "<=", ">="), ("+", "-"), ("*", "/", "%")]

    def binary(self, level):
        if level == len(self.LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek() and self.peek()[0] == "op" and self.peek()[1] in self.LEVELS[level]:
            op = self.take()[1]
            right = self.binary(level + 1)
            left = {"||": lambda: left or right, "&&": lambda: left and right, "==": lambda: left == right,
                    "!=": lambda: left != right, "<": lambda: left < right, ">": lambda: left > right,
                    "<=": lambda: left <= right, ">=": lambda: left >= right, "+": lambda: left + right,
                    "-": lambda: left - right, "*": lambda: left * right, "/": lambda: left / right,
                    "%": lambda: left % right}[op]()
        return left

    def unary(self):
        if self.peek("!"):
            self.take()
            return not self.unary()
        if self.peek("-"):
            self.take()
            return -self.unary()
        return self.postfix(self.primary())

    def postfix(self, value):
        while True:
            if self.peek("["):
                self.take()
                index = self.ternary()
                self.take("]")
                try:
                    value = value[int(index) if isinstance(value, list) else index]
                except (IndexError, KeyError, TypeError):
                    raise EvalError(f"Invalid index: {index!r}") from None
            elif self.peek("."):
                self.take()
                key = self.take()[1]
                if not isinstance(value, dict) or key not in value:
                    raise EvalError(f"Unsupported attribute: This object does not have an attribute named \"{key}\".")
                value = value[key]
            else:
                return value

    def primary(self):
        kind, text = self.take()
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind == "str":
            return template(text, self.scope)
        if kind == "op" and text == "(":
            value = self.ternary()
            self.take(")")
            return value
        if kind == "op" and text == "[":
            items = []
            while not self.peek("]"):
                items.append(self.ternary())
                if not self.peek("]"):
                    self.take(",")
            self.take("]")
            return items
        if kind == "name":
            if text in ("true", "false"):
                return text == "true"
            if text == "null":
                return None
            if self.peek("("):
                return self.call(text)
            if text not in self.scope:
                return self.undefined(text)
            return self.scope[text]
        raise EvalError(f"Invalid expression: unexpected {text!r}")

    def undefined(self, root):
        """Nomad's UndefinedVariable hook (jobspec2/types.config.go EvalContext): a reference to a variable
        the job does not define, like ${attr.cpu.arch} or ${node.unique.name}, is kept as its literal text,
        for the scheduler or the client to interpolate later."""
        parts = [root]
        while self.peek("."):
            self.take()
            parts.append(self.take()[1])
        if root in ("var", "local"):
            raise EvalError(f"Unknown variable: There is no variable named \"{'.'.join(parts)}\".")
        return "${" + ".".join(parts) + "}"

    def call(self, name):
        self.take("(")
        if name in ("can", "try"):
            start, depth = self.i, 0
            while True:  # find the matching ")" and evaluate the argument, failures caught
                tok = self.take()
                depth += tok[1] == "(" and tok[0] == "op"
                if tok == ("op", ")"):
                    if depth == 0:
                        break
                    depth -= 1
            inner = _Expr("", self.scope)
            inner.toks = self.toks[start:self.i - 1]
            try:
                value = inner.parse()
                return True if name == "can" else value
            except EvalError:
                if name == "can":
                    return False
                raise
        args = []
        while not self.peek(")"):
            args.append(self.ternary())
            if not self.peek(")"):
                self.take(",")
        self.take(")")
        if name not in FUNCTIONS:
            raise EvalError(f"Call to unknown function: There is no function named \"{name}\".")
        try:
            return FUNCTIONS[name](*args)
        except EvalError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise EvalError(f"Error in function call: {name}: {exc}") from None


def _to_str(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float, str)):
        return str(value)
    raise EvalError(f"Invalid template interpolation value: cannot include a {type(value).__name__} in a string")


def _to_num(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise EvalError(f"a number is required, not {value!r}") from None
    return int(number) if number.is_integer() else number


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def template(quoted: str, scope: dict):
    """A quoted HCL string (escapes, ``${...}`` interpolation, ``$${`` literal) to its value."""
    text, out, i = quoted[1:-1], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "u":
                out.append(chr(int(text[i + 2:i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
        elif text.startswith("$${", i) or text.startswith("%%{", i):
            out.append(text[i + 1:i + 3])
            i += 3
        elif text.startswith("%{", i):
            raise EvalError("template directives (%{...}) are not supported by this double")
        elif text.startswith("${", i):
            depth, j, in_str = 1, i + 2, False
            while j < len(text) and depth:
                c = text[j]
                if in_str:
                    if c == "\\":
                        j += 1
                    elif c == '"':
                        in_str = False
                elif c == '"':
                    in_str = True
                elif c == "{":
                    depth += 1
                elif c == "}":
                    depth -= 1
                j += 1
            value = _Expr(text[i + 2:j - 1].strip().strip("~").strip(), scope).parse()
            if i == 0 and j == len(text):
                return value  # a lone interpolation keeps its type
            out.append(_to_str(value))
            i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def evaluate(value, scope: dict):
    """A python-hcl2 value (quoted strings, ``${expr}``, lists, objects) to a plain value."""
    if isinstance(value, list):
        return [evaluate(v, scope) for v in value]
    if isinstance(value, dict):
        return {_key(k): evaluate(v, scope) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, str):
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            return template(value, scope)
        if value.startswith("${") and value.endswith("}"):
            return _Expr(value[2:-1], scope).parse()
        return _Expr(value, scope).parse()
    return value


def _key(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == '"' and key[-1] == '"' else key


# --- variables --------------------------------------------------------------------------------
def _type_name(raw) -> str:
    text = raw if isinstance(raw, str) else str(raw)
    if text.startswith("${") and text.endswith("}"):
        text = text[2:-1]
    return text.replace(" ", "").strip('"')


def _convert(name: str, value, type_name: str):
    bad = ParseError(f"Invalid value for variable \"{name}\": a {type_name} is required")
    if type_name in ("any", ""):
        return value
    if type_name == "string":
        if isinstance(value, (list, dict)) or value is None:
            raise bad
        return _to_str(value)
    if type_name == "number":
        try:
            return _to_num(value)
        except EvalError:
            raise bad from None
    if type_name == "bool":
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise bad
    m = re.fullmatch(r"(list|set)\((.+)\)", type_name)
    if m:
        if not isinstance(value, list):
            raise bad
        return [_convert(name, v, m.group(2)) for v in value]
    m = re.fullmatch(r"map\((.+)\)", type_name)
    if m:
        if not isinstance(value, dict):
            raise bad
        return {k: _convert(name, v, m.group(1)) for k, v in value.items()}
    return value


def _load(text: str, filename: str) -> dict:
    try:
        options = hcl2.SerializationOptions(with_comments=False, preserve_heredocs=False)
        return hcl2.loads(text, serialization_options=options)
    except Exception as exc:  # noqa: BLE001 - the parser's own error text is what Nomad shows too
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ParseError(f"{filename}: {first}") from None


def _labelled(blocks) -> list[tuple[str, dict]]:
    out = []
    for block in blocks or []:
        for label, body in block.items():
            if label.startswith("__"):
                continue
            out.append((_key(label), body))
    return out


def variables(doc: dict, var_text: str) -> dict:
    declared = {}
    for name, body in _labelled(doc.get("variable")):
        declared[name] = body
    given = {}
    if var_text and var_text.strip():
        for key, raw in _load(var_text, "variables.hcl").items():
            if key.startswith("__"):
                continue
            if key not in declared:
                continue  # /v1/jobs/parse is not strict (jobspec2): an undeclared variable is a warning, dropped
            given[key] = evaluate(raw, {})
    values = {}
    for name, body in declared.items():
        type_name = _type_name(body.get("type", "any"))
        if name in given:
            value = given[name]
        elif "default" in body:
            value = evaluate(body["default"], {})
        else:
            raise ParseError(f"input.hcl: Unset variable \"{name}\"; A used variable must be set or have a "
                             "default value; see https://developer.hashicorp.com/nomad/docs/job-specification/"
                             "hcl2/variables for details.")
        values[name] = _convert(name, value, type_name)
    for name, body in declared.items():
        for rule in body.get("validation") or []:
            ok = evaluate(rule["condition"], {"var": values})
            if ok is not True:
                message = evaluate(rule.get("error_message", '"invalid"'), {"var": values})
                raise ParseError(f"input.hcl: Invalid value for variable; {message}")
    return values


# --- the job ----------------------------------------------------------------------------------
def _is_block(item) -> bool:
    if not isinstance(item, dict):
        return False
    if item.get("__is_block__"):
        return True
    inner = [v for k, v in item.items() if not k.startswith("__")]
    return len(inner) == 1 and isinstance(inner[0], dict) and bool(inner[0].get("__is_block__"))


class _Block:
    """One block's attributes and sub-blocks, refusing what Nomad would not expect there."""

    def __init__(self, kind: str, body: dict, scope: dict, attrs: set, blocks: set):
        scope = body.get("__scope__", scope)  # a dynamic block's content: its iterator in scope
        self.kind, self.scope = kind, scope
        self.values, self.blocks = {}, {}
        for key, raw in body.items():
            if key.startswith("__"):
                continue
            if key == "dynamic" and isinstance(raw, list) and all(_is_block(b) for b in raw):
                for label, dynamic in _labelled(raw):
                    if label not in blocks:
                        raise ParseError(f"input.hcl: Unsupported block type; Blocks of type \"{label}\" are not "
                                         f"expected here (in {kind}).")
                    self.blocks.setdefault(label, []).extend(_dynamic(label, dynamic, scope))
                continue
            is_block = isinstance(raw, list) and raw and all(_is_block(b) for b in raw)
            if is_block:
                if key not in blocks:
                    raise ParseError(f"input.hcl: Unsupported block type; Blocks of type \"{key}\" are not "
                                     f"expected here (in {kind}).")
                self.blocks[key] = raw
            else:
                if key not in attrs:
                    raise ParseError(f"input.hcl: Unsupported argument; An argument named \"{key}\" is not "
                                     f"expected here (in {kind}).")
                value = evaluate(raw, scope)
                if value is not None:  # HCL2: an attribute set to null is as if it were not set
                    self.values[key] = value

    def get(self, key, default=None):
        return self.values.get(key, default)

    def dur(self, key):
        return duration(self.values[key], f"{self.kind}.{key}") if key in self.values else None

    def sub(self, key) -> list:
        return self.blocks.get(key) or []


def _dynamic(label: str, body: dict, scope: dict) -> list[dict]:
    """``dynamic "label" { for_each = ... content { ... } }`` (HCL2's dynblock, which jobspec2 takes): one
    ``label`` block per element, its content evaluated with ``label.key`` and ``label.value`` in scope. An
    empty collection gives no block at all."""
    iterator = _key(str(body.get("iterator", label))) if "iterator" in body else label
    items = evaluate(body.get("for_each", "[]"), scope)
    contents = body.get("content") or []
    if len(contents) != 1:
        raise ParseError(f"input.hcl: dynamic \"{label}\" needs exactly one content block")
    pairs = items.items() if isinstance(items, dict) else enumerate(items or [])
    out = []
    for key, value in pairs:
        inner = dict(contents[0])
        inner["__scope__"] = {**scope, iterator: {"key": key, "value": value}}
        out.append(inner)
    return out


def _map_block(blocks, scope) -> dict | None:
    if not blocks:
        return None
    out = {}
    for block in blocks:
        out.update({k: _to_str(v) for k, v in evaluate(block, scope).items()})
    return out


def _restart(blocks, scope):
    if not blocks:
        return None
    b = _Block("restart", blocks[0], scope, {"attempts", "interval", "delay", "mode", "render_templates"}, set())
    return {"Attempts": b.get("attempts"), "Interval": b.dur("interval"), "Delay": b.dur("delay"),
            "Mode": b.get("mode"), "RenderTemplates": b.get("render_templates")}


def _update(blocks, scope):
    if not blocks:
        return None
    b = _Block("update", blocks[0], scope, {"max_parallel", "health_check", "min_healthy_time", "healthy_deadline",
                                            "progress_deadline", "auto_revert", "auto_promote", "canary", "stagger"},
               set())
    return {"Stagger": b.dur("stagger"), "MaxParallel": b.get("max_parallel"), "HealthCheck": b.get("health_check"),
            "MinHealthyTime": b.dur("min_healthy_time"), "HealthyDeadline": b.dur("healthy_deadline"),
            "ProgressDeadline": b.dur("progress_deadline"), "Canary": b.get("canary"),
            "AutoRevert": b.get("auto_revert"), "AutoPromote": b.get("auto_promote")}


def _reschedule(blocks, scope):
    if not blocks:
        return None
    b = _Block("reschedule", blocks[0], scope, {"attempts", "interval", "delay", "delay_function", "max_delay",
                                                "unlimited"}, set())
    return {"Attempts": b.get("attempts"), "Interval": b.dur("interval"), "Delay": b.dur("delay"),
            "DelayFunction": b.get("delay_function"), "MaxDelay": b.dur("max_delay"), "Unlimited": b.get("unlimited")}


def _constraints(blocks, scope):
    out = []
    for block in blocks:
        b = _Block("constraint", block, scope, {"attribute", "operator", "value", "distinct_hosts"}, set())
        out.append({"LTarget": b.get("attribute", ""), "RTarget": _to_str(b.get("value", "")),
                    "Operand": b.get("operator", "=")})
    return out or None


def _service(block, scope):
    b = _Block("service", block, scope, {"name", "port", "tags", "canary_tags", "provider", "address_mode",
                                         "address", "task", "on_update", "enable_tag_override"},
               {"check", "meta", "check_restart"})
    checks = []
    for cblock in b.sub("check"):
        c = _Block("check", cblock, scope, {"name", "type", "path", "port", "interval", "timeout", "method",
                                            "protocol", "command", "args", "address_mode", "tls_skip_verify",
                                            "initial_status", "on_update", "body"}, {"header", "check_restart"})
        checks.append({"Name": c.get("name", ""), "Type": c.get("type", ""), "Path": c.get("path", ""),
                       "PortLabel": c.get("port", ""), "Interval": c.dur("interval") or 0,
                       "Timeout": c.dur("timeout") or 0, "Method": c.get("method", ""),
                       "Protocol": c.get("protocol", ""), "Command": c.get("command", ""), "Args": c.get("args"),
                       "AddressMode": c.get("address_mode", ""), "TLSSkipVerify": c.get("tls_skip_verify", False),
                       "InitialStatus": c.get("initial_status", ""), "OnUpdate": c.get("on_update", ""),
                       "Body": c.get("body", "")})
    return {"Name": b.get("name", ""), "Tags": b.get("tags"), "CanaryTags": b.get("canary_tags"),
            "EnableTagOverride": b.get("enable_tag_override", False), "PortLabel": _to_str(b.get("port", "")),
            "AddressMode": b.get("address_mode", ""), "Address": b.get("address", ""), "Checks": checks or None,
            "CheckRestart": None, "Connect": None, "Meta": _map_block(b.sub("meta"), scope), "CanaryMeta": None,
            "TaggedAddresses": None, "TaskName": b.get("task", ""), "OnUpdate": b.get("on_update", ""),
            "Provider": b.get("provider", "")}


def _env(b, scope) -> dict | None:
    """``env { K = "v" }`` or ``env = { K = "v" }`` (jobspec2 takes both; the original recipe wrote
    ``env = {}``, an empty map: Env null, as a missing block)."""
    if "env" in b.values:
        return {k: _to_str(v) for k, v in (b.get("env") or {}).items()} or None
    return _map_block(b.sub("env"), scope)


def _task(name, body, scope):
    b = _Block(f"task \"{name}\"", body, scope,
               {"driver", "user", "kill_timeout", "kill_signal", "leader", "shutdown_delay", "kind", "env"},
               {"config", "env", "resources", "volume_mount", "service", "logs", "meta", "restart", "constraint",
                "template", "artifact", "lifecycle"})
    if "artifact" in b.blocks or "lifecycle" in b.blocks:
        raise ParseError("input.hcl: artifact/lifecycle blocks are not supported by this double")
    resources = None
    if b.sub("resources"):
        r = _Block("resources", b.sub("resources")[0], scope, {"cpu", "memory", "memory_max", "cores"}, {"device"})
        resources = {"CPU": r.get("cpu"), "Cores": r.get("cores"), "MemoryMB": r.get("memory"),
                     "MemoryMaxMB": r.get("memory_max"), "DiskMB": None, "Networks": None, "Devices": None,
                     "IOPS": None}
    mounts = []
    for mblock in b.sub("volume_mount"):
        m = _Block("volume_mount", mblock, scope, {"volume", "destination", "read_only", "propagation_mode",
                                                   "selinux_label"}, set())
        mounts.append({"Volume": m.get("volume"), "Destination": m.get("destination"),
                       "ReadOnly": m.get("read_only", False), "PropagationMode": m.get("propagation_mode", ""),
                       "SELinuxLabel": m.get("selinux_label", "")})
    log_config = None
    if b.sub("logs"):
        lg = _Block("logs", b.sub("logs")[0], scope, {"max_files", "max_file_size", "disabled"}, set())
        log_config = {"MaxFiles": lg.get("max_files"), "MaxFileSizeMB": lg.get("max_file_size"),
                      "Disabled": lg.get("disabled")}
    config = None
    if b.sub("config"):
        config = {}
        for block in b.sub("config"):
            config.update(evaluate(block, scope))
    return {"Name": name, "Driver": b.get("driver"), "User": b.get("user", ""), "Lifecycle": None,
            "Config": config, "Constraints": _constraints(b.sub("constraint"), scope), "Affinities": None,
            "Env": _env(b, scope), "Services": [_service(s, scope) for s in b.sub("service")] or None,
            "Resources": resources, "RestartPolicy": _restart(b.sub("restart"), scope),
            "Meta": _map_block(b.sub("meta"), scope), "KillTimeout": b.dur("kill_timeout"), "LogConfig": log_config,
            "Artifacts": None, "Vault": None, "Templates": _templates(b.sub("template"), scope), "DispatchPayload": None,
            "VolumeMounts": mounts or None, "Leader": b.get("leader", False),
            "ShutdownDelay": b.dur("shutdown_delay") or 0, "KillSignal": b.get("kill_signal", ""),
            "Kind": b.get("kind", ""), "ScalingPolicies": None}


def _templates(blocks, scope) -> list | None:
    """``template`` blocks (jobspec2 parse.go / api.Template): inline ``data`` only (no source file)."""
    out = []
    for block in blocks:
        t = _Block("template", block, scope, {"data", "destination", "env", "change_mode", "change_signal", "splay",
                                              "perms", "left_delimiter", "right_delimiter", "source",
                                              "error_on_missing_key"}, {"wait", "change_script"})
        if t.get("source"):
            raise ParseError("input.hcl: template source files are not supported by this double (use data)")
        out.append({"SourcePath": "", "DestPath": t.get("destination"), "EmbeddedTmpl": t.get("data"),
                    "ChangeMode": t.get("change_mode"), "ChangeSignal": t.get("change_signal"), "ChangeScript": None,
                    "Splay": t.dur("splay"), "Perms": t.get("perms"), "Uid": None, "Gid": None,
                    "LeftDelim": t.get("left_delimiter"), "RightDelim": t.get("right_delimiter"),
                    "Envvars": t.get("env"), "VaultGrace": None, "Wait": None,
                    "ErrMissingKey": t.get("error_on_missing_key")})
    return out or None


def _group(name, body, scope):
    b = _Block(f"group \"{name}\"", body, scope, {"count", "shutdown_delay"},
               {"task", "network", "volume", "restart", "update", "service", "ephemeral_disk", "meta", "constraint",
                "reschedule"})
    networks = []
    for nblock in b.sub("network"):
        n = _Block("network", nblock, scope, {"mode", "hostname"}, {"port", "dns"})
        dynamic, reserved = [], []
        for label, pbody in _labelled(n.sub("port")):
            p = _Block(f"port \"{label}\"", pbody, scope, {"static", "to", "host_network"}, set())
            port = {"Label": label, "Value": p.get("static", 0), "To": p.get("to", 0),
                    "HostNetwork": p.get("host_network", "")}
            (reserved if "static" in p.values else dynamic).append(port)
        networks.append({"Mode": n.get("mode", ""), "Device": "", "CIDR": "", "IP": "", "DNS": None,
                         "ReservedPorts": reserved or None, "DynamicPorts": dynamic or None,
                         "Hostname": n.get("hostname", ""), "MBits": None})
    volumes = {}
    for label, vbody in _labelled(b.sub("volume")):
        v = _Block(f"volume \"{label}\"", vbody, scope, {"type", "source", "read_only", "access_mode",
                                                          "attachment_mode", "per_alloc"}, {"mount_options"})
        volumes[label] = {"Name": label, "Type": v.get("type", ""), "Source": v.get("source", ""),
                          "ReadOnly": v.get("read_only", False), "AccessMode": v.get("access_mode", ""),
                          "AttachmentMode": v.get("attachment_mode", ""), "MountOptions": None,
                          "PerAlloc": v.get("per_alloc", False)}
    disk = None
    if b.sub("ephemeral_disk"):
        d = _Block("ephemeral_disk", b.sub("ephemeral_disk")[0], scope, {"size", "sticky", "migrate"}, set())
        disk = {"Sticky": d.get("sticky"), "Migrate": d.get("migrate"), "SizeMB": d.get("size")}
    tasks = [_task(tname, tbody, scope) for tname, tbody in _labelled(b.sub("task"))]
    return {"Name": name, "Count": b.get("count"), "Constraints": _constraints(b.sub("constraint"), scope),
            "Disconnect": None, "Affinities": None, "Tasks": tasks, "Spreads": None, "Volumes": volumes or None,
            "RestartPolicy": _restart(b.sub("restart"), scope),
            "ReschedulePolicy": _reschedule(b.sub("reschedule"), scope), "EphemeralDisk": disk,
            "Update": _update(b.sub("update"), scope), "Migrate": None, "Networks": networks or None,
            "Meta": _map_block(b.sub("meta"), scope),
            "Services": [_service(s, scope) for s in b.sub("service")] or None, "ShutdownDelay": b.dur("shutdown_delay"),
            "StopAfterClientDisconnect": None, "MaxClientDisconnect": None, "Scaling": None, "Consul": None}


def parse(hcl: str, var_text: str = "", canonicalize: bool = False) -> dict:
    """The JSON job (not wrapped in {"Job": ...}), as /v1/jobs/parse returns it."""
    doc = _load(hcl, "input.hcl")
    for key in doc:
        if key not in ("job", "variable", "locals") and not key.startswith("__"):
            raise ParseError(f"input.hcl: Unsupported block type; Blocks of type \"{key}\" are not expected here.")
    scope = {"var": variables(doc, var_text)}
    jobs = _labelled(doc.get("job"))
    if len(jobs) != 1:
        raise ParseError("input.hcl: exactly one job block is required" if not jobs else
                         "input.hcl: Duplicate job block; Only one block of type \"job\" is allowed.")
    name, body = jobs[0]
    b = _Block(f"job \"{name}\"", body, scope,
               {"type", "region", "namespace", "datacenters", "priority", "node_pool", "all_at_once", "id"},
               {"group", "update", "meta", "constraint", "reschedule", "migrate"})
    job = {"Region": b.get("region"), "Namespace": b.get("namespace"), "ID": b.get("id", name), "Name": name,
           "Type": b.get("type"), "Priority": b.get("priority"), "AllAtOnce": b.get("all_at_once"),
           "Datacenters": b.get("datacenters"), "NodePool": b.get("node_pool"),
           "Constraints": _constraints(b.sub("constraint"), scope), "Affinities": None,
           "TaskGroups": [_group(gname, gbody, scope) for gname, gbody in _labelled(b.sub("group"))],
           "Update": _update(b.sub("update"), scope), "Multiregion": None, "Spreads": None, "Periodic": None,
           "ParameterizedJob": None, "Reschedule": _reschedule(b.sub("reschedule"), scope), "Migrate": None, "Meta": _map_block(b.sub("meta"), scope),
           "ConsulToken": None, "VaultToken": None, "Stop": None, "ParentID": None, "Dispatched": False,
           "DispatchIdempotencyToken": None, "Payload": None, "ConsulNamespace": None, "VaultNamespace": None,
           "NomadTokenID": None, "Status": None, "StatusDescription": None, "Stable": None, "Version": None,
           "SubmitTime": None, "CreateIndex": None, "ModifyIndex": None, "JobModifyIndex": None}
    return canonical(job) if canonicalize else job


# --- canonicalize (api/jobs.go Canonicalize, the parts our jobs use) ---------------------------
def _fill(obj: dict | None, defaults: dict) -> dict:
    out = dict(obj or {})
    for key, value in defaults.items():
        if out.get(key) is None:
            out[key] = copy.deepcopy(value)
    return out


SERVICE_RESTART = {"Attempts": 2, "Interval": 1800 * SECOND, "Delay": 15 * SECOND, "Mode": "fail",
                   "RenderTemplates": False}
SERVICE_RESCHEDULE = {"Attempts": 0, "Interval": 0, "Delay": 30 * SECOND, "DelayFunction": "exponential",
                      "MaxDelay": 3600 * SECOND, "Unlimited": True}  # api/tasks.go, service jobs
DEFAULT_UPDATE = {"Stagger": 30 * SECOND, "MaxParallel": 1, "HealthCheck": "checks", "MinHealthyTime": 10 * SECOND,
                  "HealthyDeadline": 300 * SECOND, "ProgressDeadline": 600 * SECOND, "Canary": 0,
                  "AutoRevert": False, "AutoPromote": False}


TEMPLATE_DEFAULTS = {"SourcePath": "", "DestPath": "", "EmbeddedTmpl": "", "ChangeMode": "restart", "ChangeSignal": "",
                     "Splay": 5 * SECOND, "Perms": "0644", "LeftDelim": "{{", "RightDelim": "}}", "Envvars": False,
                     "VaultGrace": 0, "ErrMissingKey": False}  # api/tasks.go Template.Canonicalize


def canonical(job: dict) -> dict:
    job = copy.deepcopy(job)
    job = _fill(job, {"Region": "global", "Namespace": "default", "Type": "service", "Priority": 50,
                      "AllAtOnce": False, "Datacenters": ["*"], "NodePool": "default", "Stop": False,
                      "ParentID": "", "Status": "", "StatusDescription": "", "Stable": False, "Version": 0,
                      "CreateIndex": 0, "ModifyIndex": 0, "JobModifyIndex": 0})
    job_update = job.get("Update")
    if job_update is not None:
        job["Update"] = _fill(job_update, {k: DEFAULT_UPDATE[k] for k in ("Stagger", "MaxParallel")})
    for group in job.get("TaskGroups") or []:
        group["Count"] = 1 if group.get("Count") is None else group["Count"]
        group["RestartPolicy"] = _fill(group.get("RestartPolicy"), SERVICE_RESTART)
        group["EphemeralDisk"] = _fill(group.get("EphemeralDisk"), {"Sticky": False, "Migrate": False, "SizeMB": 300})
        group["ReschedulePolicy"] = _fill(group.get("ReschedulePolicy") or job.get("Reschedule"),
                                          SERVICE_RESCHEDULE)
        group["Migrate"] = _fill(group.get("Migrate"), {"MaxParallel": 1, "HealthCheck": "checks",
                                                        "MinHealthyTime": 10 * SECOND,
                                                        "HealthyDeadline": 300 * SECOND})
        if group.get("Update") is not None or job_update is not None:
            merged = dict(job_update or {})
            merged.update({k: v for k, v in (group.get("Update") or {}).items() if v is not None})
            group["Update"] = _fill(merged, DEFAULT_UPDATE)
        for network in group.get("Networks") or []:
            for port in (network.get("DynamicPorts") or []) + (network.get("ReservedPorts") or []):
                port["HostNetwork"] = port.get("HostNetwork") or "default"
        for service in group.get("Services") or []:
            service["Provider"] = service.get("Provider") or "consul"
            service["AddressMode"] = service.get("AddressMode") or "auto"
        for task in group.get("Tasks") or []:
            for service in task.get("Services") or []:  # api/services.go Canonicalize, task services too
                service["Provider"] = service.get("Provider") or "consul"
                service["AddressMode"] = service.get("AddressMode") or "auto"
            task["Resources"] = _fill(task.get("Resources"), {"CPU": 100, "MemoryMB": 300})
            task["KillTimeout"] = 5 * SECOND if task.get("KillTimeout") is None else task["KillTimeout"]
            task["LogConfig"] = _fill(task.get("LogConfig"), {"MaxFiles": 10, "MaxFileSizeMB": 10, "Disabled": False})
            task["RestartPolicy"] = _fill(task.get("RestartPolicy"), group["RestartPolicy"])
            for mount in task.get("VolumeMounts") or []:
                mount["PropagationMode"] = mount.get("PropagationMode") or "private"
            task["Templates"] = [_fill(t, TEMPLATE_DEFAULTS) for t in task.get("Templates") or []] or None
    return job
