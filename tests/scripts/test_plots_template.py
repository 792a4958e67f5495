"""`dvc plots show` draws without the internet.

A temporary DVC repository holds small plot files shaped like the pipeline's (the
`plots:` of the project's dvc.yaml, the same columns), set up by scripts/plots_template.py
as scripts/setup.sh sets up a checkout: the template made from the npm packages pinned in
vendor/vega, named in the local DVC config. Plain `dvc plots show` writes the page; headless Chromium opens it with every host unresolvable and every
proxy request refused, and the charts must draw. DVC's own page (Vega from a CDN) is the
control: under the same browser it must draw nothing, or the network was not off.
"""

from __future__ import annotations

import contextlib
import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers.commands import run
from tests.helpers.servers import free_port

pytestmark = pytest.mark.slow  # DVC against remotes, or a browser: not the fast tier

ROOT = Path(__file__).resolve().parents[2]
VEGA_PLOTS = 6  # loss, accuracy, confusion matrix, ROC, precision-recall, reliability
IMAGE_PLOTS = 3  # reliability figure, the gallery of confidently wrong photos, disputed labels

# No network: names resolve to nothing, and any proxied request goes to a closed port.
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND",
]  # fmt: skip

# What a page drew: Vega's mark layers with their inked pixels, and images that decoded.
DRAWN_JS = """
const painted = (canvas) => {
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  // Ink: opaque and not the white background (axes, labels, lines, cells).
  for (let i = 0; i < data.length; i += 4)
    if (data[i + 3] > 0 && Math.min(data[i], data[i + 1], data[i + 2]) < 200) n++;
  return n;
};
const marks = [...document.querySelectorAll('canvas.marks, svg.marks')];
return {
  charts: marks.map(m => m.tagName === 'CANVAS' ? painted(m) : m.querySelectorAll('path, rect, line').length),
  images: [...document.images].filter(i => i.complete && i.naturalWidth > 0).length,
  vegaEmbed: typeof vegaEmbed,
  resources: performance.getEntriesByType('resource').map(e => e.name),
};
"""


def write_plot_data(repo: Path) -> None:
    """Small files with the pipeline's columns (plots/train/history.csv, plots/evaluate/)."""
    (repo / "plots" / "train").mkdir(parents=True)
    (repo / "plots" / "evaluate" / "figures").mkdir(parents=True)
    (repo / "plots" / "review").mkdir(parents=True)
    rows = {
        "train/history.csv": [
            ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"],
            *[[e, 0.6 / (e + 1), 0.7 + 0.08 * e, 0.5 / (e + 1), 0.75 + 0.07 * e, 1e-3] for e in range(3)],
        ],
        "evaluate/confusion.csv": [["actual", "predicted"], ["cat", "cat"], ["cat", "dog"],
                                   ["dog", "dog"], ["dog", "dog"]],
        "evaluate/roc.csv": [["fpr", "tpr", "threshold"], [0, 0, 1], [0.1, 0.8, 0.6], [1, 1, 0]],
        "evaluate/pr.csv": [["recall", "precision", "threshold"], [1, 0.5, 0], [0.8, 0.9, 0.6],
                            [0, 1, 1]],
        "evaluate/reliability.csv": [["low", "high", "count", "confidence", "accuracy", "bin"],
                                     [0.5, 0.75, 3, 0.6, 0.67, 0.625],
                                     [0.75, 1.0, 9, 0.9, 0.89, 0.875]],
    }  # fmt: skip
    for name, table in rows.items():
        with (repo / "plots" / name).open("w", newline="") as f:
            csv.writer(f).writerows(table)
    for name in (
        "evaluate/figures/reliability.png",
        "evaluate/figures/misclassified.png",
        "review/disputed_labels.png",
    ):
        Image.new("RGB", (64, 48), "steelblue").save(repo / "plots" / name)


def project_plots_section() -> str:
    """The `plots:` of dvc.yaml with the paths resolved as params.yaml sets them."""
    text = (ROOT / "dvc.yaml").read_text()
    section = text[text.index("\nplots:") + 1 :]
    return section.replace("${paths.plots}", "plots")


def make_offline(repo: Path) -> None:
    """What scripts/setup.sh runs in a checkout."""
    script = ROOT / "scripts" / "plots_template.py"
    made = subprocess.run(
        [sys.executable, str(script), "--repo", str(repo)], capture_output=True, text=True
    )
    assert made.returncode == 0, f"{made.stdout}{made.stderr}(scripts/setup.sh runs npm ci)"


@pytest.fixture(scope="module")
def plots_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("plots") / "repo"
    repo.mkdir()
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    (repo / "dvc.yaml").write_text(project_plots_section())
    write_plot_data(repo)
    make_offline(repo)
    return repo


def show(repo: Path, out: str, *extra: str) -> Path:
    run(["dvc", "plots", "show", "-o", out, *extra], repo)
    page = repo / out / "index.html"
    assert page.is_file()
    return page


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service as ChromeService

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("chromium and chromedriver are not installed (.ci/apt-packages.txt)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--proxy-server=http://127.0.0.1:{free_port()}")  # nothing listens
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=ChromeService(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def drawn(driver, page: Path, expected_charts: int, wait_s: float = 20) -> dict:
    """What the page drew, once it drew `expected_charts` charts or `wait_s` passed."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(page.as_uri())
    with contextlib.suppress(TimeoutException):  # then report what did draw
        WebDriverWait(driver, wait_s).until(
            lambda d: len(d.execute_script(DRAWN_JS)["charts"]) >= expected_charts
        )
    return driver.execute_script(DRAWN_JS)


def test_dvc_plots_show_draws_every_chart_offline(plots_repo: Path, browser) -> None:
    page = show(plots_repo, "dvc_plots")
    html = page.read_text()
    assert not re.search(r"<script[^>]+src=", html), "the page must not load scripts"
    result = drawn(browser, page, VEGA_PLOTS)
    assert result["vegaEmbed"] == "function"
    assert len(result["charts"]) == VEGA_PLOTS, result
    assert all(n > 100 for n in result["charts"]), f"a chart is blank: {result['charts']}"
    assert result["images"] == IMAGE_PLOTS
    remote = [url for url in result["resources"] if not url.startswith(("file:", "data:"))]
    assert not remote, f"the page requested {remote}"
    print(
        f"\n[plots] offline page: inked pixels per chart {result['charts']}, images {result['images']}"
    )


def test_dvc_default_page_draws_nothing_in_the_same_browser(plots_repo: Path, browser) -> None:
    # The control: DVC's page loads Vega from a CDN, which this browser cannot reach.
    run(["dvc", "config", "--local", "--unset", "plots.html_template"], plots_repo)
    try:
        page = show(plots_repo, "cdn_plots")
    finally:
        make_offline(plots_repo)
    assert "cdn.jsdelivr.net" in page.read_text()
    # Loading ends when the CDN scripts fail; the charts would draw right after it.
    result = drawn(browser, page, VEGA_PLOTS, wait_s=3)
    assert result["charts"] == [] and result["vegaEmbed"] == "undefined", result
