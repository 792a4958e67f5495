"""Write the page template `dvc plots show` fills: Vega, Vega-Lite and vega-embed inlined.

    python scripts/plots_template.py [OUT]        (default .dvc/plots.html)

DVC's own page loads the three libraries from a CDN, so offline or behind a proxy the
curves do not draw. `.dvc/config` names this template (`plots.html_template`), and
`scripts/setup.sh` makes it after `npm ci` in vendor/vega/ (the versions pinned in its
package-lock.json). The builds are inlined, not linked, so the page works wherever
`dvc plots show -o` writes it. Without the npm packages it refuses, saying how to get
them, rather than write a page that needs the internet.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "vendor" / "vega"
DEFAULT_OUT = ROOT / ".dvc" / "plots.html"
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


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else DEFAULT_OUT
    libraries = pinned_libraries()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page(libraries), encoding="utf-8")
    versions = ", ".join(f"{lib.name} {lib.version}" for lib in libraries)
    print(f"Wrote {out} ({out.stat().st_size // 1024} KiB: {versions}, no CDN)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
