"""Image size: our image vs the seed's recipe (bench/seed/Dockerfile), both from the same local base.

Target: ours under 50% of the seed's. Both are built in this run from the stand-in base (no container
registry is reachable here; on a machine that can pull, pass --base python:3.12-slim-bookworm).
Run: python3 bench/image_size.py
"""
import argparse

from common import ROOT, write_section


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", help="base image for both (default: the local stand-in)")
    args = parser.parse_args()
    from services import project_image

    with project_image("msh-bench-size", base=args.base) as (client, settings, version):
        base = settings.base_image
        ours = client.images.get(settings.image_ref(version.text))
        name = settings.image
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
        client.images.remove(seed_tag, noprune=True)


if __name__ == "__main__":
    main()
