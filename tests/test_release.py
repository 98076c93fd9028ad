"""inv release: refusals change nothing, a failed build leaves git as it was, a release lands everywhere.

Each test works on a real git repository in a temp folder holding a copy of the project's files,
with the real engine and registry (a unique image name per test).
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from mlflow_self_host.flows import release as rel
from mlflow_self_host.core.errors import UserError
from mlflow_self_host.core.settings import Settings
from mlflow_self_host.core.version import PARTS, Version
from tests.host.conftest import CLIENT_HCL, nomad_user  # noqa: F401 - the fixture
from tests.services import clean_env, free_port, project_repo
from tests.services.nomad_cluster import MLFLOW_TIMINGS
from tests.services.project_repo import git
from tests.services import ADMIN_PASSWORD  # auth: basic by default

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = ("tasks.py", "invoke.yaml", "version.txt", "docker", "nomad")


@pytest.fixture
def repo(tmp_path, project_env) -> Path:
    """A git repository holding a copy of the project, one commit, a clean tree, version 0.99."""
    return project_repo.make(tmp_path / "project", files=PROJECT_FILES)


_IMAGES: list[str] = []  # {registry}/{image} repositories a test may have built or tagged on the engine


@pytest.fixture
def engine(docker_engine_service, monkeypatch):
    """The package finds the engine as users do (DOCKER_HOST); the test's image tags are removed after."""
    monkeypatch.setenv("DOCKER_HOST", docker_engine_service.base_url)
    yield docker_engine_service
    client = docker_engine_service.client()
    for image in client.images.list():
        for tag in image.tags:
            if tag.rsplit(":", 1)[0] in _IMAGES:
                client.images.remove(tag)
    _IMAGES.clear()


@pytest.fixture(scope="module", autouse=True)
def lock_nomad():
    """The Nomad a release's deploy lock is taken on, where the test deploys nothing (no engine: the
    tests that deploy bring their own cluster)."""
    from tests.doubles.nomad import NomadDouble

    double = NomadDouble()
    _LOCK_NOMAD[:] = [double.address]
    yield double
    double.stop()


_LOCK_NOMAD: list[str] = []


def load(repo: Path, registry=None, **overrides) -> Settings:
    values = {"image": f"release-{uuid.uuid4().hex[:8]}", "nomad_addr": _LOCK_NOMAD[0]}
    if registry is not None:
        values["registry"] = getattr(registry, "address", registry)  # the fixture, or an address
    values.update(overrides)
    settings = Settings.load(root=repo, env={"MSH_MLFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD}, overrides=values)
    _IMAGES.append(settings.image_repo())
    return settings


def snapshot(repo: Path, registry=None, settings: Settings | None = None) -> dict:
    """Everything a release could change: files, git status/log/tags/HEAD, the registry's tags."""
    files = {}
    for path in sorted(repo.rglob("*")):
        if path.is_file() and ".git" not in path.relative_to(repo).parts:
            files[str(path.relative_to(repo))] = hashlib.sha256(path.read_bytes()).hexdigest()
    state = {
        "files": files,
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
        "staged": git(repo, "diff", "--cached"),
        "log": git(repo, "log", "--all", "--format=%H %s"),
        "tags": git(repo, "tag", "--list"),
        "head": git(repo, "rev-parse", "HEAD"),
    }
    if registry is not None and settings is not None:
        state["registry"] = registry.tags(settings.image)
    return state


def push_tiny_image(docker_client, registry, image: str, tag: str) -> None:
    """Put some image under ``{registry}/{image}:{tag}`` (a one-file image, pushed for real)."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("Dockerfile", b"FROM scratch\nCOPY marker /marker\n"), ("marker", tag.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    ref = f"{registry.address}/{image}"
    docker_client.images.build(fileobj=context, custom_context=True, tag=f"{ref}:{tag}", rm=True)
    for line in docker_client.images.push(ref, tag=tag, stream=True, decode=True):
        assert "error" not in line, line
    docker_client.images.remove(f"{ref}:{tag}", force=True)


# --- what to release (no services) ---------------------------------------------------------------
versions = st.lists(st.integers(0, 10**5), min_size=1, max_size=4).map(lambda ns: ".".join(map(str, ns)))


@given(versions)
def test_list_shows_for_each_part_exactly_what_bump_would_release(text):
    current = Version.parse(text)
    listed = rel.next_versions(current)
    assert list(listed) == list(PARTS)
    for part, version in listed.items():
        assert rel.target_version(current, part, None) == version == current.bump(part)
    # And --set gives back what it is given.
    assert rel.target_version(current, None, listed["major"].text) == listed["major"]


@hsettings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(versions)
def test_release_list_prints_one_row_per_part(tmp_path, capsys, text):
    shutil.copy(ROOT / "invoke.yaml", tmp_path / "invoke.yaml")
    (tmp_path / "version.txt").write_text(text + "\n")
    capsys.readouterr()
    assert rel.release(Settings.load(root=tmp_path, env={}), list_only=True) is None
    out = capsys.readouterr().out
    for part in PARTS:
        row = next(line for line in out.splitlines() if f" {part} " in line)
        assert f" {Version(text).bump(part)} " in row
    assert (tmp_path / "version.txt").read_text() == text + "\n"


@pytest.mark.parametrize("bump,set_version,says", [
    ("micro", None, "valid parts: major, minor, patch"),
    ("minor", "2.0", "either --bump or --set"),
    (None, None, "give --bump PART or --set VERSION"),
    (None, "v2", "not a version"),
    (None, "0.99", "already says 0.99"),
])
def test_a_bad_request_is_refused_before_anything(repo, bump, set_version, says):
    before = snapshot(repo)
    with pytest.raises(UserError, match=says) as err:
        rel.release(load(repo), bump=bump, set_version=set_version)
    assert err.value.code == 2
    assert snapshot(repo) == before


def inv(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = clean_env()
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)


def test_inv_release_with_a_bad_part_is_one_red_line_listing_the_parts(repo):
    result = inv(repo, "release", "--bump", "micro")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "major, minor, patch" in lines[0] and "Traceback" not in result.stderr


def test_inv_release_list(repo):
    result = inv(repo, "release", "--list")
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in result.stdout.splitlines() if line.count("│") == 3}
    assert rows == {"major": "1.0", "minor": "0.100", "patch": "0.99.1"}


# --- refusals (git, registry) --------------------------------------------------------------------
@pytest.mark.parametrize("make_dirty", ["tracked", "staged", "untracked"])
def test_a_dirty_tree_is_refused(repo, make_dirty):
    if make_dirty == "untracked":
        (repo / "notes.txt").write_text("wip\n")
    else:
        (repo / "invoke.yaml").write_text((repo / "invoke.yaml").read_text() + "# edited\n")
        if make_dirty == "staged":
            git(repo, "add", "invoke.yaml")
    before = snapshot(repo)
    with pytest.raises(UserError, match="git tree is not clean") as err:
        rel.release(load(repo), bump="minor")
    assert "--allow-dirty" in err.value.hint
    assert ("notes.txt" if make_dirty == "untracked" else "invoke.yaml") in err.value.message
    assert snapshot(repo) == before


def test_inv_release_from_a_dirty_tree_exits_1_with_the_way_out(repo):
    (repo / "notes.txt").write_text("wip\n")
    result = inv(repo, "release", "--bump", "minor")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not clean" in result.stderr and "notes.txt" in result.stderr and "--allow-dirty" in result.stderr
    assert (repo / "version.txt").read_text() == "0.99\n" and git(repo, "tag", "--list") == ""


def test_ignored_files_do_not_make_the_tree_dirty(repo, registry):
    (repo / ".gitignore").write_text("data/\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "--quiet", "-m", "ignore data")
    (repo / "data").mkdir()
    (repo / "data" / "mlflow.db").write_text("x")
    rel.release(load(repo, registry), bump="minor", deploy=False, dry_run=True)  # no refusal


def test_an_existing_git_tag_is_refused(repo):
    git(repo, "tag", "v0.100")
    before = snapshot(repo)
    with pytest.raises(UserError, match="git tag v0.100 already exists"):
        rel.release(load(repo), bump="minor")
    assert snapshot(repo) == before


def test_an_image_tag_already_in_the_registry_is_refused(repo, registry, docker_client):
    settings = load(repo, registry)
    push_tiny_image(docker_client, registry, settings.image, "v1.0")
    before = snapshot(repo, registry, settings)
    with pytest.raises(UserError, match=f"registry already has {registry.address}/{settings.image}:v1.0"):
        rel.release(settings, bump="major")
    assert snapshot(repo, registry, settings) == before


def test_not_a_git_repository_is_refused(repo):
    shutil.rmtree(repo / ".git")
    with pytest.raises(UserError, match="not in a git repository"):
        rel.release(load(repo), bump="patch")
    assert (repo / "version.txt").read_text() == "0.99\n"


# --- dry run -------------------------------------------------------------------------------------
def test_dry_run_prints_every_step_with_its_values_and_changes_nothing(repo, registry, capsys):
    """Nomad does not answer: the release's own steps are shown, the deploy's job step says it cannot read its
    part, and the dry run ends with that error (a real run would stop there)."""
    settings = load(repo, registry, nomad_addr="http://nomad.example:4646")
    before = snapshot(repo, registry, settings)
    with pytest.raises(UserError) as caught:
        rel.release(settings, bump="minor", dry_run=True, skip_host=True)
    assert "nomad.example" in caught.value.message
    said = capsys.readouterr().err
    image = f"{registry.address}/{settings.image}"
    for value in ("0.99 → 0.100", "Release v0.100", f"{image}:v0.100", f"{image}:latest",
                  settings.base_image, "http://nomad.example:4646", "http://mlflow.lan/", "nothing was changed",
                  "job: would stop here"):
        assert value in said, value
    assert snapshot(repo, registry, settings) == before


def test_dry_run_with_no_deploy_has_no_deploy_step(repo, registry, capsys):
    rel.release(load(repo, registry), set_version="2.0", deploy=False, dry_run=True)
    said = capsys.readouterr().err
    assert "v2.0" in said
    assert [line.split()[0] for line in said.splitlines() if line.startswith("  ")] == \
        ["write", "commit", "tag", "build", "push", "push"]


# --- failures before the push: the repository as it was -------------------------------------------
@pytest.mark.slow
def test_a_failed_build_leaves_git_and_version_txt_as_they_were(repo, registry, engine):
    # A realistic mistake: a base image the engine does not have (and no registry can serve).
    settings = load(repo, registry, base_image=f"{registry.address}/no-such-base:{uuid.uuid4().hex[:6]}")
    before = snapshot(repo, registry, settings)
    with pytest.raises(UserError):
        rel.release(settings, bump="minor")
    assert snapshot(repo, registry, settings) == before
    assert (repo / "version.txt").read_text() == "0.99\n"


@pytest.mark.slow
def test_a_failed_build_with_allow_dirty_puts_back_the_users_own_changes(repo, registry, engine):
    (repo / "invoke.yaml").write_text((repo / "invoke.yaml").read_text() + "# staged\n")
    git(repo, "add", "invoke.yaml")
    (repo / "invoke.yaml").write_text((repo / "invoke.yaml").read_text() + "# and not staged\n")
    (repo / "notes.txt").write_text("untracked\n")
    settings = load(repo, registry, base_image=f"{registry.address}/no-such-base:{uuid.uuid4().hex[:6]}")
    before = snapshot(repo, registry, settings)
    with pytest.raises(UserError):
        rel.release(settings, bump="patch", allow_dirty=True)
    assert snapshot(repo, registry, settings) == before


@pytest.mark.slow
def test_a_failed_first_release_in_a_repository_without_commits_leaves_it_without_commits(repo, registry, engine):
    shutil.rmtree(repo / ".git")
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "config", "user.name", "Release Tester")
    git(repo, "config", "user.email", "release@example.com")
    status = git(repo, "status", "--porcelain", "--untracked-files=all")
    settings = load(repo, registry, base_image=f"{registry.address}/no-such-base:{uuid.uuid4().hex[:6]}")
    with pytest.raises(UserError):
        rel.release(settings, bump="minor", allow_dirty=True)
    assert subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", "HEAD"]).returncode != 0
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == status
    assert git(repo, "tag", "--list") == "" and (repo / "version.txt").read_text() == "0.99\n"


@pytest.mark.slow
def test_a_failed_push_leaves_git_and_version_txt_as_they_were(repo, base_image, engine, lan_address):
    # A plain-HTTP registry outside loopback: the engine refuses to push to it (not "insecure" allowed).
    from tests.doubles.fake_registry import FakeRegistry

    with FakeRegistry("plain", host=lan_address) as fake:
        settings = load(repo, fake.address, base_image=base_image)
        before = snapshot(repo)
        with pytest.raises(UserError, match="insecure"):
            rel.release(settings, bump="major")
        assert any(method == "HEAD" and "/manifests/v1.0" in path for method, path, _ in fake.requests)
    assert snapshot(repo) == before


# --- a release --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_release_without_deploy_commits_tags_and_pushes_the_same_image_twice(repo, registry, base_image, engine,
                                                                             capsys):
    settings = load(repo, registry, base_image=base_image)
    result = rel.release(settings, bump="minor", deploy=False)

    assert (repo / "version.txt").read_text() == "0.100\n"
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(repo, "log", "-1", "--format=%s").strip() == "Release v0.100"
    assert git(repo, "show", "--stat", "--format=", "HEAD").split()[0] == "version.txt"
    assert git(repo, "cat-file", "-t", "v0.100").strip() == "tag"  # annotated
    assert git(repo, "rev-parse", "v0.100^{commit}") == git(repo, "rev-parse", "HEAD")

    assert registry.tags(settings.image) == ["latest", "v0.100"]
    digest = registry.digest(settings.image, "v0.100")
    assert digest and registry.digest(settings.image, "latest") == digest
    assert result.digest == digest and result.job_version is None

    table = re.sub(r"[│┃\s]", "", capsys.readouterr().out)  # a narrow terminal folds the digest's cell
    assert "v0.100" in table and digest in table and "notdeployed" in table


@pytest.mark.slow
def test_a_deploy_that_fails_after_the_push_keeps_the_release_and_names_the_next_command(repo, registry, base_image,
                                                                                         engine):
    # Nothing listens on the Nomad address nor on the SSH port: the deploy cannot succeed.
    settings = load(repo, registry, base_image=base_image, host="127.0.0.1", ssh_port=free_port())
    with pytest.raises(UserError) as err:
        rel.release(settings, bump="patch")
    assert "v0.99.1 is released" in err.value.message and "deploy" in err.value.message
    assert err.value.hint.endswith("then run: inv deploy --skip-build")
    assert git(repo, "tag", "--list").split() == ["v0.99.1"]
    assert (repo / "version.txt").read_text() == "0.99.1\n"
    assert git(repo, "status", "--porcelain") == ""
    assert registry.tags(settings.image) == ["latest", "v0.99.1"]


def nomad_client(cluster, root: Path, ssh_server) -> dict:
    """The cluster's client as a host configure-host never saw (client.hcl without the MLflow volumes, no
    volume folders; the agent restarted with that), and the settings that reach it over SSH. Its restart
    command is the host's `systemctl restart nomad`: it restarts the double's agent, which reads
    client.hcl again, and returns once the old agent is gone."""
    cluster.client_config.write_text(CLIENT_HCL)
    shutil.rmtree(cluster.root / "data")
    cluster.nomad.restart_agent(0.1)
    root.mkdir(parents=True)
    os.chmod(root, 0o755)
    script = root / "restart-nomad.sh"
    agent = cluster.nomad.address
    script.write_text(f"#!/bin/sh\necho restarted >> {root / 'restarts.log'}\n"
                      f"curl -fsS -o /dev/null -X POST -d '{{\"seconds\": 1}}' {agent}/_double/agent/restart\n"
                      f"while curl -fsS -o /dev/null --max-time 1 {agent}/v1/agent/health; do sleep 0.05; done\n")
    os.chmod(script, 0o755)
    return dict(ssh_server.settings(), nomad_client_config=str(cluster.client_config),
                backend_path=str(cluster.backend), artifacts_path=str(cluster.artifacts),
                job_dir=str(root / "jobs" / "mlflow"), backups_path=str(root / "backups"),
                folder_owner="nomad", folder_group="root", nomad_restart_command=str(script),
                nomad_health_timeout=10)


def running_mlflow(nomad) -> tuple[str, str]:
    """(image, the answer of /version) of the job's one running allocation: what the release left running."""
    import requests

    (alloc,) = nomad.running_allocs()
    port = alloc["AllocatedResources"]["Shared"]["Ports"][0]["Value"]
    image = nomad.container_of(alloc["ID"]).attrs["Config"]["Image"]
    # auth: basic (the default): /version too asks for credentials
    return image, requests.get(f"http://127.0.0.1:{port}/version", timeout=10, auth=("admin", ADMIN_PASSWORD)).text


@pytest.mark.slow
def test_two_releases_deploy_each_pinned_tag_and_a_failed_deploy_keeps_the_release(
        repo, registry, base_image, engine, ssh_server, nomad_user, nomad_cluster, tmp_path, capsys):
    nomad = nomad_cluster.nomad
    settings = load(repo, registry, base_image=base_image, nomad_addr=nomad.address, deploy_poll="0.1",
                    deploy_timeout=300, deploy_check=False, **MLFLOW_TIMINGS,
                    **nomad_client(nomad_cluster, tmp_path / "host", ssh_server))
    first = rel.release(settings, bump="minor")
    job = nomad.job()
    released = f"{registry.address}/{settings.image}:v0.100"
    assert job["TaskGroups"][0]["Tasks"][0]["Config"]["image"] == released
    assert job["Stable"] is True and first.job_version == job["Version"]
    assert 'host_volume "mlflow-backend-store"' in nomad_cluster.client_config.read_text()
    assert (tmp_path / "host" / "restarts.log").read_text() == "restarted\n"  # configure-host restarted Nomad
    assert running_mlflow(nomad) == (released, "3.17.2")  # the release's MLflow runs on the host's folders
    assert (nomad_cluster.backend / "mlflow.db").exists()
    table = re.sub(r"[│┃\s]", "", capsys.readouterr().out)
    assert f"Nomadjobversion{job['Version']}(deployed)" in table and "http://mlflow.lan/" in table
    assert first.digest in table and first.digest == registry.digest(settings.image, "v0.100")

    # The next release ships a typo in the entrypoint: its task exits at start, the deployment fails, and
    # Nomad reverts to v0.100.
    entrypoint = repo / "docker" / "entrypoint.sh"
    entrypoint.write_text(entrypoint.read_text().replace('/mlflow-serve.py"', '/mlflow_serve.py"', 1))
    git(repo, "commit", "--quiet", "--all", "--message", "entrypoint: tidy")
    with pytest.raises(UserError) as err:
        rel.release(settings, bump="patch")
    assert err.value.code == 12  # deploy's "failed and reverted"
    assert err.value.message.startswith("v0.100.1 is released (committed, tagged, pushed) but the deploy failed")
    assert err.value.hint.endswith("then run: inv deploy --skip-build")
    assert "can't open file '/usr/local/bin/mlflow_serve.py'" in capsys.readouterr().err  # the task's stderr
    assert nomad.job()["TaskGroups"][0]["Tasks"][0]["Config"]["image"] == released
    assert running_mlflow(nomad) == (released, "3.17.2")
    assert list((tmp_path / "host" / "backups").glob("mlflow-*-v0.100.db"))  # the deploy backed up first

    assert git(repo, "tag", "--list").split() == ["v0.100", "v0.100.1"]
    assert (repo / "version.txt").read_text() == "0.100.1\n"
    assert git(repo, "status", "--porcelain") == ""
    assert registry.tags(settings.image) == ["latest", "v0.100", "v0.100.1"]
    assert registry.digest(settings.image, "latest") == registry.digest(settings.image, "v0.100.1")


@pytest.mark.slow
def test_skip_host_releases_to_nomad_without_touching_the_host(repo, registry, base_image, engine, nomad_cluster):
    """`inv release --skip-host`: no SSH at all (nothing listens on the SSH port), the job is registered
    and the released MLflow runs on the client (configured already)."""
    nomad = nomad_cluster.nomad
    settings = load(repo, registry, base_image=base_image, nomad_addr=nomad.address, deploy_poll="0.1",
                    deploy_timeout=300, deploy_check=False, host="127.0.0.1", ssh_port=free_port(),
                    **MLFLOW_TIMINGS)
    result = rel.release(settings, bump="minor", skip_host=True)
    image = nomad.job()["TaskGroups"][0]["Tasks"][0]["Config"]["image"]
    assert image == f"{registry.address}/{settings.image}:v0.100"
    assert result.deploy_status == "deployed" and result.job_version == 0
    assert running_mlflow(nomad) == (image, "3.17.2")


def test_a_release_while_the_deploy_lock_is_held_changes_nothing(repo, lock_nomad, registry):
    """The whole release runs under the deploy lock: the bump, the tag and the push of one at a time."""
    from mlflow_self_host.adapters import lock

    settings = load(repo, registry)
    lock.acquire(settings, "release v9.9 from another laptop")
    lock._held.clear()  # held by "someone else"
    head, tags = git(repo, "rev-parse", "HEAD"), git(repo, "tag", "--list")
    try:
        with pytest.raises(UserError) as caught:
            rel.release(settings, bump="minor")
    finally:
        lock.release(settings)
    assert caught.value.code == 14 and "for `release v9.9 from another laptop`" in caught.value.message
    assert (git(repo, "rev-parse", "HEAD"), git(repo, "tag", "--list")) == (head, tags)
    assert (repo / "version.txt").read_text() == "0.99\n"
