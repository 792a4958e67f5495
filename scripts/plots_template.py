"""Make `dvc plots show` draw offline in a checkout: Vega, Vega-Lite and vega-embed inlined
into the page template, and the checkout's local DVC config pointed at it.

    python scripts/plots_template.py [--repo DIR]      (default: this checkout)

DVC's own page loads the three libraries from a CDN, so offline or behind a proxy the
curves do not draw. This writes DIR/.dvc/plots.html from the npm packages pinned in
vendor/vega/package-lock.json (`npm ci --prefix vendor/vega`; scripts/setup.sh runs both)
and sets `plots.html_template = plots.html` in DIR/.dvc/config.local, so plain `dvc plots
show` uses it. The setting is local, beside the file it names: a clone that has not run
the set-up keeps DVC's page instead of failing on a missing template. The builds are
inlined, not linked, so the page works wherever `dvc plots show -o` writes it. Without
the npm packages it refuses, saying how to get them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "vendor" / "vega"
TEMPLATE = "plots.html"  # in .dvc/, where DVC resolves a relative plots.html_template
# Load order matters: vega-embed's build expects the `vega` and `vegaLite` globals.
BUILDS = {
    "vega": "build/vega.min.js",
    "vega-lite": "build/vega-lite.min.js",
    "vega-embed": "build/vega-embed.min.js",
}

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Offline: {versions}, inlined by scripts/plots_template.py. -->
{inline}
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


@dataclass(frozen=True)
class Library:
    name: str
    version: str
    code: str


def pinned_libraries(vendor: Path = VENDOR) -> list[Library]:
    """The installed builds, refused unless each is the version package.json pins."""
    pins = json.loads((vendor / "package.json").read_text())["dependencies"]
    libraries = []
    for name, build in BUILDS.items():
        package = vendor / "node_modules" / name
        if not (package / build).is_file():
            raise SystemExit(
                f"{package / build} is missing: run `npm ci --prefix {vendor.relative_to(ROOT)}` "
                "(scripts/setup.sh does it when npm is installed)"
            )
        version = json.loads((package / "package.json").read_text())["version"]
        if version != pins[name]:
            raise SystemExit(f"{name} {version} is installed, package.json pins {pins[name]}")
        libraries.append(Library(name, version, (package / build).read_text()))
    return libraries


def page(libraries: list[Library]) -> str:
    """The template: DVC replaces {plot_divs} and {refresh_tag}; no {scripts}, so DVC's CDN
    script tags have nowhere to go."""
    inline = "\n".join(
        f"    <script>/* {lib.name} {lib.version} */\n{escape_script(lib.code)}\n    </script>"
        for lib in libraries
    )
    versions = ", ".join(f"{lib.name} {lib.version}" for lib in libraries)
    return PAGE.replace("{versions}", versions).replace("{inline}", inline)


def escape_script(code: str) -> str:
    """Code safe inside <script>: "</script" in a string would end the element early."""
    return code.replace("</script", "<\\/script")


def install(repo: Path) -> Path:
    """Write the template into `repo`/.dvc and name it in the repo's local DVC config."""
    libraries = pinned_libraries()
    out = repo / ".dvc" / TEMPLATE
    out.write_text(page(libraries), encoding="utf-8")
    subprocess.run(
        [sys.executable, "-m", "dvc", "config", "--local", "plots.html_template", TEMPLATE],
        cwd=repo,
        check=True,
    )
    versions = ", ".join(f"{lib.name} {lib.version}" for lib in libraries)
    print(f"dvc plots show draws offline: {out} ({out.stat().st_size // 1024} KiB: {versions})")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="a DVC repository")
    args = parser.parse_args(argv)
    if not (args.repo / ".dvc").is_dir():
        parser.error(f"{args.repo} is not a DVC repository (no .dvc/)")
    install(args.repo)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
