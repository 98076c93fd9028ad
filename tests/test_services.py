"""The real services the other tests stand on: each starts and does its job."""
import subprocess


def test_docker_engine_runs_a_container_with_host_networking(docker_client, base_image):
    out = docker_client.containers.run(base_image, ["python3", "-c", "print(6*7)"], network_mode="host",
                                       remove=True)
    assert out.strip() == b"42"


def test_base_image_trusts_the_machines_extra_certificates(docker_client, base_image):
    from tests.services.base_image import _extra_certs

    names = " ".join(p.name for p in _extra_certs())
    out = docker_client.containers.run(base_image, ["ls", "/usr/local/share/ca-certificates"], remove=True)
    for name in names.split():
        assert name.encode() in out


def test_registry_answers_v2(registry):
    import urllib.request

    with urllib.request.urlopen(registry.url("/v2/"), timeout=5) as resp:
        assert resp.status == 200
    assert registry.tags("nothing-here") == []


def test_ssh_server_runs_sudo_for_the_test_user(ssh_server):
    result = subprocess.run(
        ["ssh", "-i", str(ssh_server.key_file), "-p", str(ssh_server.port),
         "-o", f"UserKnownHostsFile={ssh_server.known_hosts}", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", f"{ssh_server.user}@{ssh_server.host}", "sudo -n id -u"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_dnsmasq_answers_and_restarts_with_new_records(dns_server):
    from tests.services.dns_server import PROXY_NAME

    (dns_server.conf_dir / "10-test.conf").write_text(f"cname=probe.lan,{PROXY_NAME}\n")
    before = dns_server.pid()
    subprocess.run([dns_server.restart_command], check=True)
    assert dns_server.pid() != before
    answer = dns_server.resolve("probe.lan")
    assert [r.address for r in answer] == ["127.0.0.1"]
    (dns_server.conf_dir / "10-test.conf").unlink()
    subprocess.run([dns_server.restart_command], check=True)
