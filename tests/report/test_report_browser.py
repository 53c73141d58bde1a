"""The report in a real browser: Debian's chromium, driven headless by Playwright.

Playwright's own browser download is not used (it needs the network): the
system chromium is passed as ``executable_path``. ``make test`` installs
chromium with apt-get when it is missing (a test installs nothing); the test is
skipped, saying why, when chromium or Playwright is not there.
"""

from __future__ import annotations

import shutil

import pytest

from saeatlas.report import write_report

pytestmark = pytest.mark.slow

#: Plot divs every full report draws.
PLOTS = (
    "pareto-plot",
    "training-plot",
    "feature-map-plot",
    "unit-map-plot",
    "layer-module-plot",
    "module-graph-plot",
    "ablation-plot",
    "specialisation-plot",
)


#: Page coordinates of a module's node in the module graph.
NODE_POSITION = """(module) => {
  const gd = document.getElementById('module-graph-plot');
  const spec = JSON.parse(document.getElementById('report-data').textContent)
    .plots['module-graph-plot'];
  const t = gd._fullData[spec.trace], xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  const box = gd.querySelector('.main-svg').getBoundingClientRect();
  const i = spec.modules.indexOf(module);
  return [box.left + xa._offset + xa.l2p(t.x[i]), box.top + ya._offset + ya.l2p(t.y[i])];
}"""


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    path = _find_chromium()
    if path is None:
        pytest.skip(
            "chromium is missing: `make test` installs it, or `apt-get install -y chromium` "
            "(as root)."
        )
    return path


@pytest.fixture(scope="session")
def browser(chromium):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (the `dev` extra)"
    )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def opacity(page, div: str) -> list:
    return page.evaluate(f"document.getElementById('{div}').data.map(t => t.opacity)")


def test_report_works_in_chromium(browser, full_atlas, tmp_path):
    report = write_report(full_atlas.atlas_dir, tmp_path / "report.html").path
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith("file:") else problems.append(r.url))
    page.goto(report.as_uri())
    page.wait_for_function("document.body.dataset.ready === '1'", timeout=30_000)

    for div in PLOTS:  # every figure was drawn by Plotly
        assert page.locator(f"#{div} .main-svg").count() >= 1, div
    assert page.locator("#module-list tr.module-item").count() == full_atlas.n_modules
    assert page.locator("#module-cards .card").count() == full_atlas.n_modules

    # hovering a module in the module list highlights it in the feature map and unit map
    base = opacity(page, "feature-map-plot")
    page.hover("#module-list tr.module-item[data-module='1']")
    spec = page.evaluate("JSON.parse(document.getElementById('report-data').textContent).plots")
    fmods = spec["feature-map-plot"]["modules"]
    now = opacity(page, "feature-map-plot")
    assert now != base and now[fmods.index(1)] == 1
    assert all(o < 0.2 for o, m in zip(now, fmods) if m is not None and m != 1)
    umods = spec["unit-map-plot"]["modules"]
    assert opacity(page, "unit-map-plot")[umods.index(1)] == 1
    assert page.evaluate("document.body.dataset.highlight") == "1"
    assert "is-highlighted" in page.get_attribute("#module-1", "class")
    page.mouse.move(2, 990)  # leaving restores the view
    assert opacity(page, "feature-map-plot") == base

    # hovering a node of the module graph highlights that module (Plotly's hover event)
    page.locator("#module-graph-plot").scroll_into_view_if_needed()
    node = page.evaluate(NODE_POSITION, 0)
    page.mouse.move(node[0], node[1])
    page.wait_for_function("document.body.dataset.highlight === '0'", timeout=5000)
    page.mouse.click(node[0], node[1])  # and clicking pins it
    page.mouse.move(2, 990)
    assert page.evaluate("document.body.dataset.highlight") == "0"
    shapes = page.evaluate("document.getElementById('layer-module-plot').layout.shapes")
    assert len(shapes) == 1 and shapes[0]["x0"] == -0.5  # module 0's column is framed
    page.keyboard.press("Escape")
    assert page.evaluate("document.body.dataset.highlight") == ""

    # a card pins its module
    page.click("#module-cards .card[data-module='1'] h3")
    assert page.evaluate("document.body.dataset.highlight") == "1"

    # the search box finds a unit, and a feature (marking it and highlighting its module)
    page.fill("#search-input", "act2:3")
    page.press("#search-input", "Enter")
    assert "Unit act2:3" in page.inner_text("#details-body")
    data = page.evaluate("JSON.parse(document.getElementById('report-data').textContent)")
    target = max(m for m in data["features"]["module"] if m is not None and m >= 0)
    fid = data["features"]["id"][data["features"]["module"].index(target)]
    page.mouse.move(0, 0)  # off every plot: a hover under a scrolled page must not win
    page.fill("#search-input", str(fid))
    page.press("#search-input", "Enter")
    assert f"Feature {fid}" in page.inner_text("#details-body")
    page.wait_for_function(f"document.body.dataset.highlight === '{target}'", timeout=5000)
    marker = page.evaluate(
        "(() => { const d = document.getElementById('feature-map-plot').data;"
        " return d[d.length - 1].x.length; })()"
    )
    assert marker == 1

    page.evaluate("document.getElementById('feature-map').scrollIntoView()")
    page.wait_for_timeout(300)
    page.screenshot(path=str(tmp_path / "report-view.png"))
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 50_000
    assert problems == []
    page.close()
