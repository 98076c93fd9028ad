"""Release rebuild: `inv build` after a version bump (nothing else changed) vs a cold build.

Target: under 5% of the cold build. Cold = no layer cache (the base is on the engine in both).
Run: python3 bench/rebuild.py [--runs N]
"""
import argparse
import os
import time

from common import median, write_section


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from mlflow_self_host.steps.image import build
    from services import project_image

    os.environ.setdefault("MSH_QUIET", "1")
    with project_image("msh-bench-rebuild", build=False) as (client, settings, version):
        cold, bumped = [], []
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


if __name__ == "__main__":
    main()
