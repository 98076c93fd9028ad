"""release: from version.txt to a healthy deployment, or back to where it started.

Refuse first (read-only checks), then: bump version.txt, commit it, annotated tag ``v{new}``, build,
push ``v{new}``, push ``latest`` (the same image), deploy, summary. A failure before the image is in
the registry undoes the commit, the tag and version.txt exactly; after that, the release stands and the
error names the command(s) that finish it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import git
from .errors import ExitCode, UserError
from .plan import Plan
from .settings import Settings
from .version import FILE_NAME, PARTS, Version, read_version, version_file, write_version


# --- what to release -----------------------------------------------------------------------------
def next_versions(current: Version) -> dict[str, Version]:
    """The version each part would give, in PARTS order (``inv release --list``)."""
    return {part: current.bump(part) for part in PARTS}


def target_version(current: Version, bump: str | None, set_version: str | None) -> Version:
    """The new version from exactly one of ``--bump PART`` and ``--set X``."""
    if bump and set_version:
        raise UserError("give either --bump or --set, not both", hint="e.g. inv release --bump minor", code=ExitCode.BAD_ARGUMENT)
    if not bump and not set_version:
        raise UserError("nothing to release: give --bump PART or --set VERSION",
                        hint=f"parts: {', '.join(PARTS)}; `inv release --list` shows what each gives", code=ExitCode.BAD_ARGUMENT)
    if set_version:
        new = Version.parse(str(set_version), origin="--set")
        if new == current:
            raise UserError(f"version.txt already says {current}", hint="give a different version to --set", code=ExitCode.BAD_ARGUMENT)
        return new
    return current.bump(str(bump).strip().lower())


@dataclass(frozen=True)
class Release:
    """The values a release uses, computed before anything changes."""

    settings: Settings
    current: Version
    new: Version
    deploy: bool
    skip_host: bool = False  # passed to the deploy step

    @property
    def tag(self) -> str:
        return self.new.tag

    @property
    def message(self) -> str:
        return f"Release {self.tag}"

    @property
    def image_ref(self) -> str:
        return self.settings.image_ref(self.new.text)

    @property
    def latest_ref(self) -> str:
        return f"{self.settings.image_repo()}:latest"

    @property
    def root(self) -> Path:
        return self.settings.root


# The operations of a release, in order. Those up to the push are undone when one fails; after the
# push the release stands and a failure names what finishes it.
UNDONE_ON_FAILURE = ("version", "commit", "tag", "build", "push")
AFTER_PUSH = ("push_latest", "deploy")


def make_plan(rel: Release) -> Plan:
    """Every step of the release with the values it uses: what --dry-run prints, and what `run` does
    (each change's ``op`` names its operation)."""
    s = rel.settings
    plan = Plan(f"release {rel.current} → {rel.new}")
    plan.add("write", FILE_NAME, f"{rel.current} → {rel.new}", op="version")
    plan.add("commit", FILE_NAME, f'"{rel.message}"', op="commit")
    plan.add("tag", rel.tag, f'annotated, "{rel.message}"', op="tag")
    plan.add("build", rel.image_ref, f"from {s.base_image}, context docker/", op="build")
    plan.add("push", rel.image_ref, f"to {s.registry}", op="push")
    plan.add("push", rel.latest_ref, f"the same image as {rel.tag}, no second build", op="push_latest")
    if rel.deploy:
        plan.add("deploy", f"job {s.job_name}", f"image {rel.image_ref} on {s.nomad_addr} "
                 f"(namespace {s.nomad_namespace}, region {s.nomad_region}), then check {s.service_url()}",
                 op="deploy")
    return plan


# --- refusals (read-only) ------------------------------------------------------------------------
def check(rel: Release, allow_dirty: bool = False) -> None:
    """Refuse, before anything changes, a release that cannot or should not happen."""
    root = rel.root
    if not git.is_repository(root):
        raise UserError(f"{root} is not in a git repository", hint="a release commits and tags: run `git init` "
                        "and commit the project first")
    if git.identity(root) is None:
        raise UserError("git has no identity to commit the release with",
                        hint='git config --global user.name "Your Name" && git config --global user.email you@example.com')
    dirty = git.dirty_paths(root)
    if dirty and not allow_dirty:
        shown = ", ".join(line[3:] for line in dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        raise UserError(f"the git tree is not clean ({len(dirty)} changed or untracked: {shown})",
                        hint="commit or remove them (`git status`), or release anyway with --allow-dirty")
    if git.tag_exists(root, rel.tag):
        raise UserError(f"git tag {rel.tag} already exists",
                        hint="that version was released: bump again, or --set a version not yet tagged (`git tag`)")
    from .image import registry

    if registry.tag_exists(rel.settings, rel.tag):
        raise UserError(f"the registry already has {rel.image_ref}",
                        hint="image tags are never overwritten: release another version (--bump or --set)")


# --- doing it, and undoing it --------------------------------------------------------------------
@dataclass
class _Undo:
    """What the release changed in the repository so far, to put back exactly."""

    root: Path
    version_text: bytes
    index: git.IndexEntry | None
    head: str | None
    commit: str | None = None
    tag: str | None = None
    wrote_version: bool = False

    def run(self) -> list[str]:
        """Undo, newest first; returns the commands left for the user when an undo step fails."""
        left: list[str] = []
        if self.tag:
            try:
                git.delete_tag(self.root, self.tag)
            except UserError:
                left.append(f"git tag -d {self.tag}")
        if self.commit:
            try:
                git.move_head_back(self.root, self.commit, self.head)
            except UserError:
                left.append(f"git reset --soft {self.head}" if self.head else "git update-ref -d HEAD")
        if self.wrote_version:
            try:
                git.set_index_entry(self.root, FILE_NAME, self.index)
            except UserError:
                left.append(f"git restore --staged {FILE_NAME}")
            version_file(self.root).write_bytes(self.version_text)
        return left


@dataclass
class ReleaseResult:
    version: str
    tag: str
    commit: str
    image: str
    digest: str | None
    job_version: int | None = None
    deploy_status: str | None = None
    url: str | None = None
    next_commands: list[str] = field(default_factory=list)


def _after_push_failure(rel: Release, exc: BaseException, what: str, commands: list[str]) -> UserError:
    """The release stands (tag and image exist): say so, and exactly what finishes it."""
    message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    hint = getattr(exc, "hint", None)
    todo = " && ".join(commands)
    return UserError(
        f"{rel.tag} is released (committed, tagged, pushed) but {what} failed: {message}",
        hint=(f"{hint}; " if hint else "") + f"then run: {todo}",
        code=getattr(exc, "code", 1) if isinstance(exc, UserError) else 1,
    )


def _remaining(rel: Release, done_latest: bool) -> list[str]:
    commands = [] if done_latest else ["inv pushlatest"]
    if rel.deploy:
        commands.append("inv deploy --skip-build")
    return commands


class Apply:
    """Each release operation (a change's ``op``), with what it leaves for the undo and the result."""

    def __init__(self, rel: Release):
        self.rel = rel
        root = rel.root
        self.undo = _Undo(root, version_file(root).read_bytes(), git.index_entry(root, FILE_NAME), git.head(root))
        self.digest: str | None = None
        self.outcome = None

    def apply_one(self, change) -> None:
        getattr(self, "_" + change.op)()

    def _version(self) -> None:
        from . import console

        console.step(f"version.txt {self.rel.current} → {self.rel.new}")
        self.undo.wrote_version = True
        write_version(self.rel.root, self.rel.new)

    def _commit(self) -> None:
        self.undo.commit = git.commit_path(self.rel.root, FILE_NAME, self.rel.message)

    def _tag(self) -> None:
        from . import console

        console.step(f"tag {self.rel.tag} on {self.undo.commit[:12]}")
        git.create_annotated_tag(self.rel.root, self.rel.tag, self.rel.message)
        self.undo.tag = self.rel.tag

    def _build(self) -> None:
        from .image import build as image_build

        image_build.build(self.rel.settings, self.rel.new)

    def _push(self) -> None:
        from .image import push as image_push

        self.digest = image_push.push(self.rel.settings, self.rel.new)

    def _push_latest(self) -> None:
        from .image import push as image_push

        image_push.push_latest(self.rel.settings, self.rel.new)

    def _deploy(self) -> None:
        from . import console
        from .job import deploy as job_deploy

        s = self.rel.settings
        console.step(f"deploy {self.rel.image_ref} to {s.nomad_addr}")
        self.outcome = job_deploy.deploy(s, self.rel.new, skip_build=True, skip_host=self.rel.skip_host)


def run(rel: Release, plan: Plan | None = None) -> ReleaseResult:
    """Apply the release's plan (``make_plan``), change by change; the checks must have passed."""
    from . import console
    from .image import registry

    s = rel.settings
    plan = plan or make_plan(rel)
    applying = Apply(rel)
    pushing = False
    try:
        for change in plan:
            if change.op not in UNDONE_ON_FAILURE:
                continue
            pushing = pushing or change.op == "push"
            applying.apply_one(change)
    except BaseException as exc:
        applying.digest = _pushed(s, rel.tag, registry) if pushing else None
        if not applying.digest:
            _raise_undone(rel, exc, applying.undo.run())
        # The push reported an error after the manifest landed: the image is there, the release stands.
        console.warn(f"the push of {rel.tag} reported an error, but the registry has it: keeping the release")
    result = ReleaseResult(rel.new.text, rel.tag, applying.undo.commit, rel.image_ref, applying.digest)
    if not rel.deploy:
        result.next_commands = ["inv deploy --skip-build"]

    step = f"pushing {rel.latest_ref}"
    try:
        for change in plan:
            if change.op not in AFTER_PUSH:
                continue
            step = "the deploy" if change.op == "deploy" else step
            applying.apply_one(change)
    except Exception as exc:
        raise _after_push_failure(rel, exc, step, _remaining(rel, step == "the deploy")) from exc
    except KeyboardInterrupt:
        console.warn(f"{rel.tag} is released (committed, tagged, pushed); to finish it run: "
                     + " && ".join(_remaining(rel, step == "the deploy")))
        raise
    if rel.deploy:
        result.job_version = getattr(applying.outcome, "job_version", None)
        result.deploy_status = getattr(applying.outcome, "status", None)
        result.url = getattr(applying.outcome, "url", None) or s.service_url()
    return result


def _pushed(settings: Settings, tag: str, registry) -> str | None:
    """The registry's digest for the tag, or None (also when the registry cannot tell: then undo)."""
    try:
        return registry.digest(settings, tag)
    except Exception:  # noqa: BLE001
        return None


def _raise_undone(rel: Release, exc: BaseException, left: list[str]):
    from . import console

    if left:
        console.error(f"could not undo everything; to put the repository back run: {' && '.join(left)}")
    else:
        console.info(f"nothing released: version.txt is {rel.current} again, the commit and tag {rel.tag} are gone")
    if not isinstance(exc, Exception):
        raise exc  # Ctrl-C and friends: undone, now stop
    if isinstance(exc, UserError):
        raise exc
    raise UserError(f"release {rel.tag} failed: {type(exc).__name__}: {exc}".splitlines()[0],
                    hint="nothing was changed; run again as `inv --debug release ...` for the traceback") from exc


def summary(result: ReleaseResult, settings: Settings) -> None:
    from . import console

    if result.job_version is not None or result.deploy_status:
        job = f"{result.job_version}" + (f" ({result.deploy_status})" if result.deploy_status else "")
    else:
        job = "not deployed (--no-deploy)"
    rows = [
        ("version", result.version),
        ("git tag", f"{result.tag} ({result.commit[:12]})"),
        ("image", result.image),
        ("image digest", result.digest or "(see `inv status`)"),
        ("Nomad job version", job),
        ("URL", result.url or "-"),
    ]
    console.table(None, ["release", result.tag], rows)
    for command in result.next_commands:
        console.info(f"next: {command}")
    if git.remotes(settings.root):
        console.info("publish the commit and tag: git push --follow-tags")


def show_list(current: Version) -> None:
    from . import console

    console.table(f"version.txt: {current}", ["--bump", "gives"],
                  [(part, version.text) for part, version in next_versions(current).items()])


# --- the task ------------------------------------------------------------------------------------
def release(settings: Settings, bump: str | None = None, set_version: str | None = None, list_only: bool = False,
            allow_dirty: bool = False, deploy: bool = True, dry_run: bool = False, skip_host: bool = False) -> ReleaseResult | None:
    """`inv release`: returns the result (None for --list and --dry-run)."""
    from . import console, plan as plans

    current = read_version(settings.root)
    if list_only:
        show_list(current)
        return None
    rel = Release(settings, current, target_version(current, bump, set_version), deploy, skip_host)
    if rel.new.numbers < current.numbers:
        console.warn(f"{rel.new} is lower than the current {current}")
    check(rel, allow_dirty=allow_dirty)
    from .job import lock

    if dry_run:
        if deploy:
            lock.check_free(settings)
        plans.show(make_plan(rel), dry_run=True)
        return None
    if deploy:  # the whole release under the deploy lock: the bump, tag, push and deploy of one at a time
        with lock.hold(settings, f"release {rel.tag}"):
            result = run(rel)
    else:
        result = run(rel)
    summary(result, settings)
    console.done(f"released {rel.tag}" + ("" if deploy else " (not deployed)"))
    return result
