"""Push, pushlatest and deploy's image as facts, then a plan, then only the changes.

- ``read_facts(settings, version, tag, dry_run)``: the engine's ``v{version}`` (built? for which
  platform? with which registry digests?) and the registry's ``tag`` (its digest, or absent);
- ``make_push_plan`` / ``make_release_plan``: pure: ``build`` (pushlatest: the engine lacks the image;
  deploy: lacks it, or has it for another platform than the one wanted), ``tag`` (latest), ``push``
  (unless the registry's tag already is this image: a re-run sends nothing);
- ``Apply.apply_one``: one change's ``Op`` on the engine.

`inv build` always builds (build.py: a version tag is a release, `inv build` rebuilds it on purpose);
`inv push` never builds (exit 6).
"""
from __future__ import annotations

from dataclasses import dataclass

from ...core import plan as plans
from ...core.errors import ExitCode, UserError
from ...core.plan import Plan
from .build import Op
from ...adapters.engine_push import auth


@dataclass
class ImageFacts:
    ref: str  # {registry}/{image}:v{version}
    engine_at: str = ""  # where the engine is expected (DOCKER_HOST)
    engine_failure: str | None = None  # no engine answers (a dry run goes on): why
    built: object | None = None  # the Platform of v{version} on the engine; None: not built
    local_digests: tuple = ()  # the registry digests the engine knows for that image (pushed before)
    remote_digest: str | None = None  # the registry's digest of the tag to push; None: it lacks the tag
    registry_error: UserError | None = None  # the registry could not be asked (a dry run assumes it lacks the tag)


# --- facts ---------------------------------------------------------------------------------------
def read_facts(settings, version, tag: str, dry_run: bool = False) -> ImageFacts:
    """What the engine and the registry hold (nothing is changed). Without an engine only a dry run
    goes on; the registry's failure is kept for the plan (which says it after "not built yet")."""
    from ...adapters import engine as engine_mod

    ref = settings.image_ref(version.text)
    engine = engine_mod.client(required=not dry_run)
    facts = ImageFacts(ref, engine_at=engine_mod.describe())
    if engine is None:
        facts.engine_failure = engine_mod.last_failure or "no answer"
    elif engine_mod.has_image(engine, ref):
        facts.built = engine_mod.image_platform(engine, ref)
        facts.local_digests = tuple(sorted(_repo_digests(engine, ref, settings)))
    try:
        facts.remote_digest = _remote_digest(settings, tag)
    except UserError as exc:
        facts.registry_error = exc
    return facts


def _remote_digest(settings, tag: str) -> str | None:
    from ...adapters import registry as reg

    try:
        return reg.digest(settings, tag)
    except UserError as exc:
        if exc.code == ExitCode.UNAUTHORIZED and not auth(settings):
            return None  # the engine may hold credentials of its own (docker login): let it try
        raise


def _repo_digests(engine, ref: str, settings) -> set[str]:
    image = engine.images.get(ref)
    prefix = settings.image_repo() + "@"
    return {d.split("@", 1)[1] for d in image.attrs.get("RepoDigests") or [] if d.startswith(prefix)}


def warnings(facts: ImageFacts, target: str) -> list[str]:
    """What a dry run assumes for lack of an engine or a registry answer."""
    said = []
    if facts.engine_failure is not None:
        said.append(f"no Docker engine at {facts.engine_at}: the plan assumes {facts.ref} is not built")
    if facts.registry_error is not None:
        said.append(f"{facts.registry_error.message}: the plan assumes the registry lacks {target}")
    return said


# --- plans (pure) --------------------------------------------------------------------------------
def make_push_plan(settings, facts: ImageFacts, version, tag: str, dry_run: bool = False) -> Plan:
    """`inv push` (``tag`` = the version's) or `inv pushlatest` (``latest``: the version's image, built
    first if the engine lacks it). Refuses a missing image for `inv push` (exit 6)."""
    target = f"{settings.image_repo()}:{tag}"
    builds_first = tag != version.tag  # pushlatest builds a missing version image; push does not
    if facts.built is None and not builds_first and facts.engine_failure is None:
        raise UserError(f"{facts.ref} is not built yet", hint="run `inv build` first (or `inv build push`)",
                        code=ExitCode.NOT_BUILT)
    remote = _remote(facts, dry_run)
    plan = Plan(f"push {target}")
    if facts.built is not None and remote and remote in facts.local_digests:
        return plan  # "no change": the registry's tag is this image
    if facts.built is None and builds_first:
        plan.add("build", facts.ref, "the image is not built yet", op=Op("build", missing=True))
    if target != facts.ref:
        plan.add("tag", target, f"same image as {facts.ref}", op=Op("tag", tag))
    plan.add("push", target, _replaces(remote), op=Op("push", tag))
    return plan


def release_platform(facts: ImageFacts, choice):
    """The platform deploy's image has after its plan: the one wanted (``choice``: platform.wanted,
    the platform setting else the clients'), or, when the clients do not decide one, the built image's
    (checked against them by the deploy)."""
    try:
        return choice.single()
    except UserError:
        if facts.built is None:
            raise
        return facts.built


def make_release_plan(settings, facts: ImageFacts, version, choice, dry_run: bool = False) -> Plan:
    """`inv deploy`'s image: built when the engine lacks it or has it for another platform than
    ``release_platform`` (a version tag is a release: only `inv build` rebuilds one as it is), pushed
    unless the registry's tag already is this image."""
    target = release_platform(facts, choice)
    plan = Plan(f"image {facts.ref}")
    building = facts.built is None or not facts.built.same(target)
    if building:
        why = "not built yet" if facts.built is None else f"built here for {facts.built}: building it again"
        plan.add("build", facts.ref, f"for {target} ({choice.source}); {why}",
                 op=Op("build", platform=str(target), source=choice.source, missing=facts.built is None))
    else:
        plan.notes.append(f"{facts.ref} is built for {facts.built} (`inv build` rebuilds it)")
    remote = _remote(facts, dry_run)
    if not building and remote and remote in facts.local_digests:
        plan.reason = f"no change: the registry's {version.tag} is this image"
        return plan
    plan.add("push", facts.ref, ("after the build; " if building else "") + _replaces(remote),
             op=Op("push", version.tag))
    return plan


def _remote(facts: ImageFacts, dry_run: bool) -> str | None:
    if facts.registry_error is not None and not dry_run:
        raise facts.registry_error
    return facts.remote_digest


def _replaces(remote: str | None) -> str:
    return f"replaces {remote[:19]}…" if remote else "new tag in the registry"


# --- apply ---------------------------------------------------------------------------------------
class Apply:
    """Each change's ``Op`` on the engine; ``digest`` is what the last push gave."""

    def __init__(self, settings, version):
        self.settings, self.version = settings, version
        self.digest = ""
        self._engine = None

    @property
    def engine(self):
        from ...adapters import engine as engine_mod

        if self._engine is None:
            self._engine = engine_mod.client()
        return self._engine

    def apply_one(self, change):
        from ...core import console

        op, settings = change.op, self.settings
        ref = settings.image_ref(self.version.text)
        if op.kind == "build":
            from . import build as build_mod
            from . import platform as platform_mod

            if op.missing:
                console.info(f"{ref} is not built yet: building it")
            choice = (platform_mod.Choice([platform_mod.Platform.parse(op.platform)], op.source) if op.platform
                      else platform_mod.wanted(settings))
            build_mod.build_image(settings, self.version, choice.single(), choice.source, no_cache=op.no_cache)
            return plans.QUIET  # build_image says what it built
        if op.kind == "tag":
            self.engine.images.get(ref).tag(settings.image_repo(), op.tag)
            return None
        if op.kind == "push":
            from ...adapters.engine_push import engine_push

            result = engine_push(self.engine, settings, op.tag)
            self.digest = result.digest
            return (f"pushed {result.ref} {result.digest} ({len(result.sent)} layers sent, "
                    f"{len(result.existing)} already in the registry)")
        raise ValueError(f"unknown image op {op.kind!r}")


def execute(settings, version, plan: Plan, facts: ImageFacts, dry_run: bool = False) -> str:
    """Apply ``plan``; returns the registry's digest of what was pushed, or of the tag already there
    when there was nothing to push ("" on a dry run)."""
    from .. import runner

    applying = Apply(settings, version)
    runner.run([runner.Step("image", plan=lambda _: plan, apply_one=applying.apply_one)], dry_run=dry_run)
    if dry_run:
        return ""
    return applying.digest or (facts.remote_digest or "" if plan.empty else "")


# --- the tasks' and deploy's entry points --------------------------------------------------------
def push_tag(settings, version, tag: str, dry_run: bool = False) -> str:
    """`inv push` / `inv pushlatest`: facts, plan, changes; returns the digest ("" on a dry run)."""
    from ...core import console

    facts = read_facts(settings, version, tag, dry_run=dry_run)
    target = f"{settings.image_repo()}:{tag}"
    plan = make_push_plan(settings, facts, version, tag, dry_run=dry_run)
    for warning in warnings(facts, target):
        console.warn(warning)
    return execute(settings, version, plan, facts, dry_run=dry_run)


def image_schema(settings, version):
    """The schema chain (steps/migrate/schema.Chain) of ``v{version}`` from its labels: the registry's tag (the
    image Nomad pulls), else the engine's image, else, built nowhere yet, this package's MLflow (the same
    pin as the image's lock: what the build will carry). None: an image without schema labels."""
    from ...adapters import engine as engine_mod
    from ...adapters import registry
    from ...core import schema_chain as schema

    try:
        labels = registry.labels(settings, version.tag)
    except UserError:
        labels = None  # unreachable: the engine's, or the package's (the image step says the registry's failure)
    if labels is not None:
        return schema.chain_of_labels(labels)
    engine = engine_mod.client(required=False)
    ref = settings.image_ref(version.text)
    if engine is not None and engine_mod.has_image(engine, ref):
        return schema.chain_of_labels(engine.images.get(ref).labels)
    return schema.chain()


def registry_platforms(settings, version, would_push: bool):
    """The platforms of the registry's ``v{version}``; None when a dry run would push it first; a tag
    the registry lacks is refused (exit 2): Nomad could not pull it."""
    from ...core import console
    from ...adapters import registry

    found = registry.platforms(settings, version.tag)
    if found is not None:
        return found
    ref = settings.image_ref(version.text)
    if would_push:
        console.info(f"{ref} is not in the registry yet: the deploy pushes it first")
        return None
    raise UserError(f"the registry has no {ref}: refusing to deploy an image Nomad cannot pull",
                    hint="build and push it (`inv deploy` without --skip-build, or `inv build push`)",
                    code=ExitCode.BAD_ARGUMENT)
