"""Start-up: `inv --list` (and `inv --help deploy`) vs `python -c "import invoke"`, the floor.

Target: within 1.3x of the floor. Run: python3 bench/startup.py [--runs N]
"""
import argparse
import sys

from common import median, timed, write_section


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    py = sys.executable
    floor = timed([py, "-c", "import invoke"], args.runs)
    listing = timed([py, "-m", "invoke", "--list"], args.runs)
    helping = timed([py, "-m", "invoke", "--help", "deploy"], args.runs)
    f, l, h = median(floor), median(listing), median(helping)
    verdict = lambda r: "met" if r <= 1.3 else "MISSED"  # noqa: E731
    body = f"""## Start-up (`inv --list`)

Command: `python3 bench/startup.py --runs {args.runs}`

| what | median | ratio to `import invoke` | target ≤ 1.3x |
| --- | --- | --- | --- |
| `python -c "import invoke"` (floor) | {f*1000:.0f} ms | 1.00x | |
| `inv --list` | {l*1000:.0f} ms | {l/f:.2f}x | {verdict(l/f)} |
| `inv --help deploy` | {h*1000:.0f} ms | {h/f:.2f}x | {verdict(h/f)} |
"""
    write_section("startup", body)


if __name__ == "__main__":
    main()
