"""The README, CONTRIBUTING.md and docs/*.md stay true to the project: every relative link reaches a file of the
repository (and a heading of it, for an #anchor, as GitHub makes them), and every `inv ...` command they show,
in a code block or inline, names a task tasks.py has, with flags that task has (read by invoke's own parser)."""
import importlib.util
import re
import shlex
from pathlib import Path

import pytest
from invoke import Collection, Program, Task
from invoke.parser import Parser, ParseError

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^ *```.*?^ *```", re.S | re.M)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INV = re.compile(r"(?:^|(?<=[\s/(]))inv\s+[^`\n]+")
PLACEHOLDERS = {"…", "...", "\\"}
# A command named without the value a flag or the task needs (`inv restore`, `inv rollback --to`) still names them.
INCOMPLETE = ("did not receive required positional arguments", "needed value and was not given one")


def _tasks_module():
    spec = importlib.util.spec_from_file_location("_msh_tasks_for_docs", ROOT / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stub(name, flags):
    """A task with these flags and no short forms, for a task documented ahead."""
    params = ", ".join(f"{flag}={default!r}" for flag, default in flags.items())
    namespace = {}
    exec(f"def {name}(c, {params}):\n    pass\n", namespace)
    return Task(namespace[name], name=name, auto_shortflags=False)


def _collection():
    collection = Collection.from_module(_tasks_module())
    collection.add_task(_stub("TASK", {}))  # `inv --debug TASK`: any task
    return collection


COLLECTION = _collection()


def _text(path):
    return path.read_text()


def _slug(heading):
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation but - and _ removed, spaces to -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = re.sub(r"[^\w\- ]", "", text.replace("`", "").lower())
    return text.replace(" ", "-")


def _anchors(path):
    seen, anchors = {}, set()
    for line in FENCE.sub("", _text(path)).splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = _slug(heading.group(1))
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(path):
    return [target for target in LINK.findall(FENCE.sub("", _text(path)))
            if not re.match(r"[a-z][a-z0-9+.-]*:", target, re.I)]


def _code(path):
    """The text of every code block and inline code span."""
    text = _text(path)
    blocks = [block.split("\n", 1)[1] if "\n" in block else "" for block in FENCE.findall(text)]
    spans = re.findall(r"`([^`\n]+)`", FENCE.sub("", text))
    return blocks + spans


def _commands(path):
    commands = []
    for code in _code(path):
        for line in code.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else line.lstrip("# ")
            for part in re.split(r"&&|\|\||[|;)]", line):
                commands += [match.group(0).strip() for match in INV.finditer(part)]
    return commands


def _argv(command):
    words = shlex.split(command.replace("[", " ").replace("]", " "))[1:]
    return [word for word in words if word not in PLACEHOLDERS]


def _parse(argv):
    if argv[:1] in (["--help"], ["-h"]) and len(argv) > 1:  # `inv --help TASK`: invoke's Program reads it so
        if argv[1] not in COLLECTION.task_names:
            raise ParseError(f"no task {argv[1]!r} to show the help of")
        argv = argv[1:]
    parser = Parser(initial=Program().initial_context, contexts=COLLECTION.to_contexts(), ignore_unknown=False)
    return parser.parse_argv(argv)


def test_the_docs_exist_and_the_readme_links_each():
    readme_links = {(ROOT / target.split("#")[0]).resolve() for target in _links(ROOT / "README.md")}
    assert (ROOT / "docs").is_dir()
    for path in DOCS[1:]:
        assert path.resolve() in readme_links, f"README.md does not link {path.relative_to(ROOT)}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_heading_of_the_repository(path):
    wrong = []
    for target in _links(path):
        file, _, anchor = target.partition("#")
        where = (path.parent / file).resolve() if file else path
        if ROOT not in where.parents and where != ROOT:
            wrong.append(f"{target}: outside the repository")
        elif not where.exists():
            wrong.append(f"{target}: no such file")
        elif anchor and where.suffix == ".md" and anchor not in _anchors(where):
            wrong.append(f"{target}: {where.name} has no heading with that anchor")
    assert not wrong, f"{path.relative_to(ROOT)}: " + "; ".join(wrong)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_inv_command_names_real_tasks_and_their_flags(path):
    wrong = []
    for command in _commands(path):
        try:
            _parse(_argv(command))
        except (ParseError, ValueError) as exc:
            if any(words in str(exc) for words in INCOMPLETE):
                continue
            wrong.append(f"`{command}`: {exc}")
            continue
    assert not wrong, f"{path.relative_to(ROOT)}: " + "; ".join(wrong)


def test_the_readme_shows_the_five_commands_to_the_cluster():
    commands = _commands(ROOT / "README.md")
    for step in ["inv init", "inv doctor", "inv deploy", "inv dns", "inv release --bump minor"]:
        assert step in commands


def test_the_command_check_catches_what_it_is_for():
    """An unknown task, an unknown flag and a flag of another task are refused; chains, placeholders pass."""
    for command in ["inv deplyo", "inv deploy --force", "inv up --skip-build", "inv build push --json",
                    "inv --help deplyo"]:
        with pytest.raises(ParseError):
            _parse(_argv(command))
    for command in ["inv --debug deploy", "inv -r DIR up", "inv build push", "inv release --bump PART",
                    "inv logs [-f] [--stderr] [--lines N]", "inv lock --take -m \"disk swap\"", "inv --help TASK",
                    "inv restore BACKUP", "inv --debug migrate-store …"]:
        _parse(_argv(command))
    assert _slug("Where the proxy finds the service") == "where-the-proxy-finds-the-service"
    assert _slug("`inv up`: port N is in use (exit 16)") == "inv-up-port-n-is-in-use-exit-16"
    assert _slug("Doctor, backup and restore") == "doctor-backup-and-restore"
