"""client_hcl.with_block against ansible-core's own blockinfile, byte for byte, on many files."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_self_host.core.errors import UserError
from mlflow_self_host.steps.host import client_hcl

BLOCK = client_hcl.client_config_block("/data/mlflow/backend", "/data/mlflow/artifacts")
OTHER_BLOCK = client_hcl.client_config_block("/old/backend", "/old/artifacts")
BEGIN, END = client_hcl.MARKER_BEGIN + "\n", client_hcl.MARKER_END + "\n"

PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.blockinfile:
        path: "{{ item }}"
        marker: "# {mark} ANSIBLE MANAGED BLOCK"
        marker_begin: MLFLOW_BEGIN
        marker_end: MLFLOW_END
        insertbefore: "}"
        block: "{{ block }}"
      loop: "{{ files }}"
"""

PIECES = ["client {\n", "  enabled = true\n", "}\n", "}", "  meta { role = \"x\" }\n", "\n", "# comment }\n",
          'data_dir = "/opt/nomad/data"\n', "plugin \"docker\" {\n", "  }\n", BEGIN, END, "x = 1", "\r\n",
          BEGIN + OTHER_BLOCK + END, BEGIN + BLOCK + END, "  # MLFLOW_BEGIN ANSIBLE MANAGED BLOCK\n",
          "é ünïcode }\n"]


def samples() -> list[bytes]:
    rng = random.Random(20261126)
    fixed = [
        b"client {\n  enabled = true\n}\n",
        b"client {\n  enabled = true\n}",  # no newline at the end
        b"client {\n  enabled = true\n}\n\nplugin \"docker\" {\n}\n",  # the last `}` line wins
        ("client {\n" + BEGIN + OTHER_BLOCK + END + "}\n").encode(),  # replaced in place
        ("client {\n" + END + OTHER_BLOCK + BEGIN + "}\n").encode(),  # markers the wrong way round
        ("client {\n" + BEGIN + BLOCK + END + "}\n").encode(),  # already right
        ("client {\n" + BEGIN + "}\n").encode(),  # only one marker: insert
        b"client {\r\n  enabled = true\r\n}\r\n",
        b"}\n",
    ]
    generated = ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12))).encode() for _ in range(30)]
    return [s for s in fixed + generated if b"}" in s]


@pytest.fixture(scope="module")
def ansible_results(tmp_path_factory):
    """Each sample file as ansible-core's blockinfile leaves it."""
    root = tmp_path_factory.mktemp("blockinfile")
    files = []
    for i, sample in enumerate(samples()):
        path = root / f"client-{i}.hcl"
        path.write_bytes(sample)
        files.append(str(path))
    (root / "play.yml").write_text(PLAYBOOK)
    (root / "vars.json").write_text(json.dumps({"block": BLOCK, "files": files}))
    exe = Path(sys.executable).parent / "ansible-playbook"
    result = subprocess.run([str(exe if exe.exists() else "ansible-playbook"), "-i", "localhost,", "-c", "local",
                             "-e", f"@{root / 'vars.json'}", str(root / "play.yml")],
                            capture_output=True, text=True, timeout=300,
                            env={"PATH": "/usr/bin:/bin", "ANSIBLE_NOCOLOR": "1", "HOME": str(root),
                                 "ANSIBLE_LOCALHOST_WARNING": "false"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [(sample, Path(f).read_bytes()) for sample, f in zip(samples(), files)]


def test_with_block_matches_ansible_blockinfile_byte_for_byte(ansible_results):
    mismatches = [(before, after) for before, after in ansible_results if client_hcl.with_block(before, BLOCK) != after]
    assert not mismatches, mismatches[:3]
    assert len(ansible_results) > 30


def test_with_block_is_idempotent(ansible_results):
    """As blockinfile is, on files with no marker or one of each (not with a stray marker)."""
    checked = 0
    for before, after in ansible_results:
        lines = before.splitlines(True)
        if lines.count(BEGIN.encode()) == lines.count(END.encode()) <= 1:
            assert client_hcl.with_block(after, BLOCK) == after
            checked += 1
    assert checked > 12


def test_block_is_inserted_before_the_closing_brace_of_the_client_stanza():
    before = b'client {\n  enabled = true\n}\n'
    after = client_hcl.with_block(before, BLOCK)
    assert after == b'client {\n  enabled = true\n' + (BEGIN + BLOCK + END).encode() + b'}\n'
    assert client_hcl.current_block(after) == BLOCK


def test_no_closing_brace_outside_the_block_is_an_error():
    with pytest.raises(UserError, match="no closing"):
        client_hcl.check_closing_brace(("client {\n" + BEGIN + BLOCK + END).encode(), "client.hcl")
    client_hcl.check_closing_brace(b"client {\n}\n", "client.hcl")  # fine


# The block as the original recipe's playbook wrote it (`block: |`): the same stanzas at column 0.
RECIPE_BLOCK = """\
host_volume "mlflow-backend-store" {
  path      = "/data/mlflow/backend"
  read_only = false
}
host_volume "mlflow-artifacts" {
  path      = "/data/mlflow/artifacts"
  read_only = false
}
"""


def in_client(block: str) -> bytes:
    return ('client {\n  enabled = true\n' + BEGIN + block + END + '}\n').encode()


@pytest.mark.parametrize("block", [
    RECIPE_BLOCK,
    BLOCK,
    RECIPE_BLOCK.replace("\n", "\r\n"),  # CRLF
    BLOCK.replace("  ", "\t"),  # tabs
    RECIPE_BLOCK.replace("\n", "   \n"),  # trailing spaces
    "\n" + RECIPE_BLOCK.replace("}\nhost", "}\n\n\nhost") + "\n",  # blank lines
    RECIPE_BLOCK.replace("      = ", "=").replace(" = ", "=").replace('" {', '"{'),  # no spaces around = and {
], ids=["recipe, unindented", "ours", "CRLF", "tabs", "trailing spaces", "blank lines", "no spaces around = {"])
def test_a_block_differing_only_in_whitespace_is_in_place(block):
    assert client_hcl.block_in_place(in_client(block), BLOCK)
    assert client_hcl.with_block(in_client(block), BLOCK) != in_client(block) or block == BLOCK


@pytest.mark.parametrize("block", [
    OTHER_BLOCK,  # other paths
    RECIPE_BLOCK.replace('"/data/mlflow/backend"', '"/data/mlflow/backend "'),  # whitespace inside a string
    RECIPE_BLOCK.replace('"/data/mlflow/backend"', '"/data/mlflow/ backend"'),
    RECIPE_BLOCK.replace('"/data/mlflow/backend"', '"/data/mlflow/backend\t"'),
    RECIPE_BLOCK.replace("read_only = false", "read_only = true", 1),
    RECIPE_BLOCK.replace("mlflow-artifacts", "mlflow-artefacts"),
    RECIPE_BLOCK.replace("read_only", "read-only", 1),
    RECIPE_BLOCK.replace("read_only = false", "read_only = false # kept", 1),  # a comment is no whitespace
    RECIPE_BLOCK.replace("  read_only = false\n}", "  read_only = false }", 1),  # a newline ends an attribute
    RECIPE_BLOCK.split("host_volume \"mlflow-artifacts\"")[0],  # a volume missing
    "",
], ids=["other paths", "space at the end of a path", "space inside a path", "tab in a path", "read_only",
        "volume name", "attribute name", "comment", "newline", "one volume", "empty"])
def test_any_other_difference_is_a_change(block):
    assert not client_hcl.block_in_place(in_client(block), BLOCK)


def test_markers_the_wrong_way_round_or_missing_are_no_block_in_place():
    assert not client_hcl.block_in_place(('client {\n' + END + RECIPE_BLOCK + BEGIN + '}\n').encode(), BLOCK)
    assert not client_hcl.block_in_place(('client {\n' + RECIPE_BLOCK + '}\n').encode(), BLOCK)
    assert not client_hcl.block_in_place(('client {\n' + BEGIN + RECIPE_BLOCK + '}\n').encode(), BLOCK)
