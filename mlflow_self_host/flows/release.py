"""release: from version.txt to a healthy deployment, or back to where it started.

Refuse first (read-only checks), then: bump version.txt, commit it, annotated tag ``v{new}``, build,
push ``v{new}``, push ``latest`` (the same image), deploy, summary. A failure before the image is in
the registry undoes the commit, the tag and version.txt exactly; after that, the release stands and the
error names the command(s) that finish it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ..adapters import git
from ..core.errors import ExitCode, UserError
from ..core.plan import QUIET, Change, Plan
from ..core.settings import Settings
from ..core.version import FILE_NAME, PARTS, Version, read_version, version_file, write_version


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
    allow_dirty: bool = False

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


@dataclass
class ReleaseFacts:
    """What the release reads before anything changes: the git repository, and the engine's and the
    registry's v{new} (steps/image/publish.py's facts) with the platform to build for."""

    repository: bool = True
    identity: bool = True
    dirty: list[str] = field(default_factory=list)  # `git status --porcelain` lines
    git_tag: bool = False  # the tag v{new} exists in git
    image: object = None  # publish.ImageFacts of v{new}
    choice: object = None  # platform.Choice: what the image is built for


# The operations of a release, in order. Those up to the push are undone when one fails; after the
# push the release stands and a failure names what finishes it.
UNDONE_ON_FAILURE = ("version", "commit", "tag", "build", "push")
AFTER_PUSH = ("push_latest", "deploy")


@dataclass(frozen=True)
class Op:
    """A release operation of its own (version, commit, tag, push_latest, deploy); the image's are publish.Op."""

    kind: str


def read_facts(rel: Release, dry_run: bool = False) -> ReleaseFacts:
    """Read-only: git, then (in a repository) the engine and the registry."""
    from ..steps.image import platform, publish

    root = rel.root
    facts = ReleaseFacts(repository=git.is_repository(root))
    if not facts.repository:
        return facts
    facts.identity = git.identity(root) is not None
    facts.dirty = git.dirty_paths(root)
    facts.git_tag = git.tag_exists(root, rel.tag)
    if _git_refusal(rel, facts) is not None:
        return facts  # refused before the engine and the registry are asked
    facts.choice = platform.wanted(rel.settings)
    facts.image = publish.read_facts(rel.settings, rel.new, rel.tag, dry_run=True)  # no engine: the build says it
    if dry_run:
        from ..core import console

        for warning in publish.warnings(facts.image, rel.image_ref):
            console.warn(warning)
    return facts


def image_plan(settings, image, version: Version, choice, dry_run: bool = False) -> Plan:
    """The release's image: always built (from the release's commit: an image the engine already holds under
    v{new}, left by a release that failed at its push, may be older than the tree), then pushed as a new tag
    (a registry that has it was refused before). Pure."""
    from ..steps.image import publish
    from ..steps.image.build import DOCKER_DIR

    target = publish.release_platform(image, choice)
    plan = Plan(f"image {image.ref}")
    why = "not built yet" if image.built is None else f"built here for {image.built}: built again from this commit"
    plan.add("build", image.ref, f"from {settings.base_image}, context {DOCKER_DIR}/, for {target} ({choice.source}); {why}",
             op=publish.Op("build", platform=str(target), source=choice.source, missing=image.built is None))
    if image.registry_error is not None and not dry_run:
        raise image.registry_error
    plan.add("push", image.ref, "after the build; new tag in the registry", op=publish.Op("push", version.tag))
    return plan


def _git_refusal(rel: Release, facts: ReleaseFacts) -> UserError | None:
    """Why git refuses the release (checked before the engine and the registry are asked). Pure."""
    if not facts.repository:
        return UserError(f"{rel.root} is not in a git repository", hint="a release commits and tags: run `git init` "
                        "and commit the project first")
    if not facts.identity:
        return UserError("git has no identity to commit the release with",
                        hint='git config --global user.name "Your Name" && git config --global user.email you@example.com')
    dirty = facts.dirty
    if dirty and not rel.allow_dirty:
        shown = ", ".join(line[3:] for line in dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        return UserError(f"the git tree is not clean ({len(dirty)} changed or untracked: {shown})",
                        hint="commit or remove them (`git status`), or release anyway with --allow-dirty")
    if facts.git_tag:
        return UserError(f"git tag {rel.tag} already exists",
                        hint="that version was released: bump again, or --set a version not yet tagged (`git tag`)")
    return None


def make_plan(rel: Release, facts: ReleaseFacts, dry_run: bool = False) -> Plan:
    """Every step of the release with the values it uses (each change's ``op`` names its operation), or
    the refusal (UserError) of a release that cannot or should not happen. Pure."""
    s = rel.settings
    refusal = _git_refusal(rel, facts)
    if refusal is not None:
        raise refusal
    if facts.image.remote_digest is not None:
        raise UserError(f"the registry already has {rel.image_ref}",
                        hint="image tags are never overwritten: release another version (--bump or --set)")
    plan = Plan(f"release {rel.current} → {rel.new}")
    plan.add("write", FILE_NAME, f"{rel.current} → {rel.new}", op=Op("version"))
    plan.add("commit", FILE_NAME, f'"{rel.message}"', op=Op("commit"))
    plan.add("tag", rel.tag, f'annotated, "{rel.message}"', op=Op("tag"))
    image = image_plan(s, facts.image, rel.new, facts.choice, dry_run=dry_run)
    plan.changes += image.changes
    plan.notes += image.notes
    plan.add("push", rel.latest_ref, f"the same image as {rel.tag}, no second build", op=Op("push_latest"))
    if rel.deploy:
        from .deploy_plan import deploy_url

        plan.add("deploy", f"job {s.job_name}", f"image {rel.image_ref} on {s.nomad_addr} "
                 f"(namespace {s.nomad_namespace}, region {s.nomad_region}), then check {deploy_url(s)}: "
                 "its steps follow", op=Op("deploy"))
    return plan


# --- refusals (read-only) ------------------------------------------------------------------------
def check(rel: Release, allow_dirty: bool = False, dry_run: bool = False) -> Plan:
    """Refuse, before anything changes, a release that cannot or should not happen; else its plan."""
    if allow_dirty and not rel.allow_dirty:
        rel = replace(rel, allow_dirty=True)
    return make_plan(rel, read_facts(rel, dry_run=dry_run), dry_run=dry_run)


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

    @property
    def changed(self) -> bool:
        return bool(self.wrote_version or self.commit or self.tag)

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
    """Each release operation (a change's ``op``), with what it leaves for the undo and the result; the
    deploy's steps (flows/deploy.py's ``Deploy``) follow the release's own."""

    def __init__(self, rel: Release, dry_run: bool = False):
        from ..steps.image import publish
        from .deploy import Deploy

        self.rel = rel
        root = rel.root
        self.undo = _Undo(root, version_file(root).read_bytes(), git.index_entry(root, FILE_NAME), git.head(root))
        self.image = publish.Apply(rel.settings, rel.new)
        self.deploy = Deploy(rel.settings, rel.new, dry_run=dry_run, skip_host=rel.skip_host, skip_build=True,
                             pushed=True) if rel.deploy else None
        self.stage = ""  # the operation being applied (UNDONE_ON_FAILURE, AFTER_PUSH)

    @property
    def digest(self) -> str | None:
        return self.image.digest or None

    def steps(self, plan: Plan):
        from ..steps.runner import Step

        yield Step("release", plan=lambda _: plan, apply_one=self.apply_one)
        if self.deploy is not None:
            yield from self.deploy.steps()

    def apply_one(self, change):
        op = change.op
        self.stage = op.kind
        if op.kind in ("build", "push"):
            return self.image.apply_one(change)  # the image's build and push (steps/image/publish.py)
        return getattr(self, "_" + op.kind)()

    def _version(self) -> None:
        from ..core import console

        console.step(f"version.txt {self.rel.current} → {self.rel.new}")
        self.undo.wrote_version = True
        write_version(self.rel.root, self.rel.new)

    def _commit(self) -> None:
        self.undo.commit = git.commit_path(self.rel.root, FILE_NAME, self.rel.message)

    def _tag(self) -> None:
        from ..core import console

        console.step(f"tag {self.rel.tag} on {self.undo.commit[:12]}")
        git.create_annotated_tag(self.rel.root, self.rel.tag, self.rel.message)
        self.undo.tag = self.rel.tag

    def _push_latest(self):
        from ..steps.image import publish

        digest = self.image.digest
        self.image.apply_one(Change("tag", self.rel.latest_ref, op=publish.Op("tag", "latest")))
        said = self.image.apply_one(Change("push", self.rel.latest_ref, op=publish.Op("push", "latest")))
        self.image.digest = digest  # the release's digest stays v{new}'s
        return said

    def _deploy(self):
        from ..core import console

        console.step(f"deploy {self.rel.image_ref} to {self.rel.settings.nomad_addr}")
        self.stage = "deploy"
        return QUIET


def run(rel: Release, plan: Plan | None = None, dry_run: bool = False) -> ReleaseResult | None:
    """Apply the release's plan (``check``/``make_plan``), then the deploy's steps, by the runner (under the
    deploy lock with a deploy); the checks must have passed. A dry run shows every step and returns None."""
    from ..steps import runner

    s = rel.settings
    plan = plan or check(rel, dry_run=dry_run)
    applying = Apply(rel, dry_run=dry_run)
    lock = runner.Lock(s, f"release {rel.tag}") if rel.deploy else None  # taken once: the deploy inside runs under it
    try:
        if applying.deploy is not None:
            with applying.deploy:
                runner.run(applying.steps(plan), dry_run=dry_run, lock=lock)
        else:
            runner.run(applying.steps(plan), dry_run=dry_run, lock=lock)
    except BaseException as exc:
        if dry_run:
            raise
        _failed(rel, applying, exc)
    if dry_run:
        return None
    result = ReleaseResult(rel.new.text, rel.tag, applying.undo.commit, rel.image_ref, applying.digest)
    if not rel.deploy:
        result.next_commands = ["inv deploy --skip-build"]
    else:
        outcome = applying.deploy.result
        result.job_version, result.deploy_status = outcome.job_version, outcome.status
        result.url = outcome.url or s.service_url()
    return result


def _failed(rel: Release, applying: Apply, exc: BaseException):
    """Before the image is in the registry: undone exactly; after: the release stands, the error names what
    finishes it."""
    from ..core import console
    from ..adapters import registry

    stage = applying.stage
    pushed = stage in AFTER_PUSH or (stage == "push" and _pushed(rel.settings, rel.tag, registry))
    if not pushed:
        _raise_undone(rel, exc, applying.undo.run(), applying.undo)
    if stage == "push":  # the push reported an error after the manifest landed: the release stands
        console.warn(f"the push of {rel.tag} reported an error, but the registry has it: keeping the release")
    step = {"deploy": "the deploy", "push": f"the push of {rel.tag}"}.get(stage, f"pushing {rel.latest_ref}")
    remaining = _remaining(rel, stage == "deploy")
    if isinstance(exc, Exception):
        raise _after_push_failure(rel, exc, step, remaining) from exc
    console.warn(f"{rel.tag} is released (committed, tagged, pushed); to finish it run: " + " && ".join(remaining))
    raise exc


def _pushed(settings: Settings, tag: str, registry) -> str | None:
    """The registry's digest for the tag, or None (also when the registry cannot tell: then undo)."""
    try:
        return registry.digest(settings, tag)
    except Exception:  # noqa: BLE001
        return None


def _raise_undone(rel: Release, exc: BaseException, left: list[str], undo: _Undo | None = None):
    from ..core import console

    if left:
        console.error(f"could not undo everything; to put the repository back run: {' && '.join(left)}")
    elif undo is None or undo.changed:
        console.info(f"nothing released: version.txt is {rel.current} again, the commit and tag {rel.tag} are gone")
    if not isinstance(exc, Exception):
        raise exc  # Ctrl-C and friends: undone, now stop
    if isinstance(exc, UserError):
        raise exc
    raise UserError(f"release {rel.tag} failed: {type(exc).__name__}: {exc}".splitlines()[0],
                    hint="nothing was changed; run again as `inv --debug release ...` for the traceback") from exc


def summary(result: ReleaseResult, settings: Settings) -> None:
    from ..core import console

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
    from ..core import console

    console.table(f"version.txt: {current}", ["--bump", "gives"],
                  [(part, version.text) for part, version in next_versions(current).items()])


# --- the task ------------------------------------------------------------------------------------
def release(settings: Settings, bump: str | None = None, set_version: str | None = None, list_only: bool = False,
            allow_dirty: bool = False, deploy: bool = True, dry_run: bool = False, skip_host: bool = False) -> ReleaseResult | None:
    """`inv release`: returns the result (None for --list and --dry-run)."""
    from ..core import console

    current = read_version(settings.root)
    if list_only:
        show_list(current)
        return None
    rel = Release(settings, current, target_version(current, bump, set_version), deploy, skip_host, allow_dirty)
    if rel.new.numbers < current.numbers:
        console.warn(f"{rel.new} is lower than the current {current}")
    plan = check(rel, dry_run=dry_run)  # the refusals, before any change (also of a dry run)
    result = run(rel, plan, dry_run=dry_run)  # the whole release under the deploy lock when it deploys
    if dry_run:
        return None
    summary(result, settings)
    console.done(f"released {rel.tag}" + ("" if deploy else " (not deployed)"))
    return result
