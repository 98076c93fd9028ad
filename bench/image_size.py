"""Image size: our image vs the seed's recipe (bench/seed/Dockerfile), both from the same local base.

Target: ours under 50% of the seed's. Both are built in this run from the stand-in base (no container
registry is reachable here; on a machine that can pull, pass --base python:3.12-slim-bookworm).
Run: python3 bench/image_size.py
"""
import argparse
import os
import uuid

from common import ROOT, write_section
from services import engine, stand_in_base


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", help="base image for both (default: the local stand-in)")
    args = parser.parse_args()
    from mlflow_self_host.image import build
    from mlflow_self_host.settings import Settings
    from mlflow_self_host.version import Version

    with engine() as eng:
        os.environ["DOCKER_HOST"] = eng.base_url
        client = eng.client()
        base = args.base or stand_in_base(client)
        name = f"msh-bench-size-{uuid.uuid4().hex[:6]}"
        settings = Settings.load(root=ROOT, overrides={"registry": "bench.local", "image": name, "base_image": base})
        ours = client.images.get(build.build(settings, Version("0.0.1")))
        seed_tag = f"{name}-seed:latest"
        for _ in client.api.build(path=str(ROOT / "bench" / "seed"), tag=seed_tag, buildargs={"BASE_IMAGE": base},
                                  network_mode="host", forcerm=True, pull=False, decode=True):
            if "error" in _:
                raise SystemExit(f"seed build failed: {_['error']}")
        seed = client.images.get(seed_tag)
        base_size = client.images.get(base).attrs["Size"]
        o, s = ours.attrs["Size"], seed.attrs["Size"]
        mib = lambda n: f"{n / 2**20:.0f} MiB"  # noqa: E731
        ratio = o / s
        body = f"""## Image size

Command: `python3 bench/image_size.py` (both built in the same run from `{base}`, {mib(base_size)})

| image | size | added to the base | ratio to the seed's |
| --- | --- | --- | --- |
| seed recipe (apt upgrade + build-essential + pip install mlflow==3.17.2) | {mib(s)} | {mib(s - base_size)} | 1.00x |
| ours (docker/Dockerfile) | {mib(o)} | {mib(o - base_size)} | {ratio:.2f}x ({'met' if ratio < 0.5 else 'MISSED'}: target < 0.50x) |
"""
        write_section("image_size", body)
        for tag in (seed_tag, settings.image_ref("0.0.1")):
            client.images.remove(tag, noprune=True)


if __name__ == "__main__":
    main()
