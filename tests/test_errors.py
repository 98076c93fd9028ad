"""The few words a red line gives for a failed connection, from what real libraries raise."""
import pytest
import requests

from mlflow_self_host.core.errors import connection_reason
from tests.services import free_port


def _raised(url: str) -> Exception:
    with pytest.raises(requests.RequestException) as caught:
        requests.get(url, timeout=5)
    return caught.value


def test_a_closed_port_is_connection_refused():
    assert connection_reason(_raised(f"http://127.0.0.1:{free_port()}/")) == "connection refused"


def test_a_name_that_does_not_resolve_is_unknown_host_name():
    assert connection_reason(_raised("http://no-such-host.invalid/")) == "unknown host name"


def test_anything_else_is_its_first_line_not_a_repr_chain():
    assert connection_reason(RuntimeError("disk on fire\nmore detail")) == "disk on fire"
    assert connection_reason(RuntimeError("")) == "RuntimeError"


def test_the_exit_code_table_is_the_enum():
    """The "Exit codes" table (docs/troubleshooting.md, linked from the README) lists every ExitCode number once,
    and nothing else."""
    import re
    from pathlib import Path

    from mlflow_self_host.core.errors import ExitCode

    page = (Path(__file__).resolve().parent.parent / "docs" / "troubleshooting.md").read_text()
    section = page.split("## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    numbers = [int(n) for n in re.findall(r"^\| (\d+) \|", section, re.M)]
    assert numbers == sorted(code.value for code in ExitCode)
    assert len(set(code.value for code in ExitCode)) == len(ExitCode)  # one meaning per number
