"""Release rebuild: `inv build` after a version bump (nothing else changed) vs a cold build.

Target: under 5% of the cold build. Cold = no layer cache (the base is on the engine in both).
Run: python3 bench/rebuild.py [--runs N]
"""
import argparse
import os
import time
import uuid

from common import ROOT, median, write_section
from services import engine, stand_in_base


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from mlflow_self_host.image import build
    from mlflow_self_host.settings import Settings
    from mlflow_self_host.version import Version

    os.environ.setdefault("MSH_QUIET", "1")
    with engine() as eng:
        os.environ["DOCKER_HOST"] = eng.base_url
        client = eng.client()
        base = stand_in_base(client)
        settings = Settings.load(root=ROOT, overrides={
            "registry": "bench.local", "image": f"msh-bench-rebuild-{uuid.uuid4().hex[:6]}", "base_image": base})
        cold, bumped, version = [], [], Version("1.0")
        for _ in range(args.runs):
            start = time.perf_counter()
            build.build(settings, version, no_cache=True)
            cold.append(time.perf_counter() - start)
            version = version.bump("minor")
            start = time.perf_counter()
            build.build(settings, version)
            bumped.append(time.perf_counter() - start)
        c, b = median(cold), median(bumped)
        body = f"""## Release rebuild

Command: `python3 bench/rebuild.py --runs {args.runs}` (`build` of the next version right after a build, vs a build without cache)

| build | median | ratio to cold |
| --- | --- | --- |
| cold (no layer cache) | {c:.1f} s | 1.00x |
| after a version bump | {b:.2f} s | {b / c:.3f}x ({'met' if b / c < 0.05 else 'MISSED'}: target < 0.05x) |
"""
        write_section("rebuild", body)
        for image in client.images.list(name=settings.image_repo()):
            for tag in image.tags:
                client.images.remove(tag, noprune=True)


if __name__ == "__main__":
    main()
