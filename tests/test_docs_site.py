"""The docs site: built strictly, every requirement an anchor, generated pages backed by committed
data, code examples that run, and a real browser that finds the pages, math, figures and search
working.

The browser part drives Debian's headless Chromium (packages ``chromium`` and ``chromium-driver``,
installed by ``.ci/run``) with selenium; it fails, with the install command, when they are missing.
Screenshots of the home page and a spec chapter are written to ``$DOCS_SCREENSHOTS`` (default
``/tmp/docs-shots``) for people to look at.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib.util
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gpt2_conformance.report import build_report
from gpt2_spec import SPEC_VERSION, load_requirements

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "scripts/system-deps.sh (apt-get install -y chromium chromium-driver on Debian/Ubuntu)"


def _hook(name: str) -> ModuleType:
    """A docs hook, loaded the way mkdocs loads it: mkdocs.yml's ``hooks:`` names files, not
    modules, so the tests import the very files the build runs, by path (the one file-path import
    the project keeps; everything the hooks themselves import is an installed package)."""
    path = DOCS / "hooks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_test_docs_hook_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


GENERATED = _hook("generated")


def requirement_url(anchor: str, site: str = "") -> str:
    """The documented URL scheme (docs/requirement-links.md): a report's ``anchor``
    ``spec/<chapter>.md#<id>`` is the page ``spec/<chapter>/`` of the site, plus ``#<id>``."""
    page, _, fragment = anchor.partition("#")
    assert page.endswith(".md"), anchor
    return f"{site}{page[: -len('.md')]}/#{fragment}"


# ---- the build ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built as .ci/run builds it: ``mkdocs build --strict``."""
    out = tmp_path_factory.mktemp("site")
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-6000:]}"
    print(f"mkdocs build --strict: {time.perf_counter() - started:.1f} s")
    return out


def _pages(site: Path) -> list[str]:
    """Every page of the built site as a path relative to the site ('' is the home page)."""
    pages = []
    for html in site.rglob("index.html"):
        relative = html.parent.relative_to(site).as_posix()
        if relative != "404":
            pages.append("" if relative == "." else relative + "/")
    return sorted(pages)


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.resources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag in ("script", "img", "iframe", "source") and a.get("src"):
            self.resources.append(str(a["src"]))
        if tag == "link" and a.get("href") and a.get("rel") not in ("canonical", "alternate"):
            self.resources.append(str(a["href"]))


@functools.cache
def _parse(path: Path) -> _Ids:
    parser = _Ids()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_every_requirement_id_is_an_anchor_that_reports_link_to(site: Path) -> None:
    requirements = load_requirements()
    report = build_report(
        requirements=requirements,
        tests=[],
        implementation={"name": "docs-test"},
        hypothesis={},
        suite_version="test",
        spec_version=SPEC_VERSION,
        duration_s=0.0,
    )
    assert len(report["requirements"]) == len(requirements)
    for entry in report["requirements"]:
        url = requirement_url(entry["anchor"])
        page, fragment = url.split("#")
        html = site / page / "index.html"
        assert html.exists(), f"{entry['id']}: report anchor {entry['anchor']} -> no page {page}"
        assert fragment == entry["id"]
        assert fragment in _parse(html).ids, f"{url}: no element with id {fragment!r}"


def test_the_committed_reports_link_to_existing_anchors(site: Path) -> None:
    reports = sorted((DOCS / "data" / "reports").glob("*.json"))
    assert reports, "no report in docs/data/reports: run python -m gpt2_evidence.refresh_reports"
    for path in reports:
        for entry in json.loads(path.read_text(encoding="utf-8"))["requirements"]:
            page, fragment = requirement_url(entry["anchor"]).split("#")
            assert fragment in _parse(site / page / "index.html").ids, (path.name, entry["id"])


def test_every_page_shows_the_spec_version(site: Path) -> None:
    pages = _pages(site)
    assert len(pages) > 20
    for page in pages:
        text = (site / page / "index.html").read_text(encoding="utf-8")
        assert f"Specification version <strong>{SPEC_VERSION}</strong>" in text, page


def test_the_site_loads_nothing_from_other_hosts(site: Path) -> None:
    for html in site.rglob("*.html"):
        for resource in _parse(html).resources:
            assert not re.match(r"(https?:)?//", resource), f"{html}: loads {resource}"


def test_math_is_typeset_at_build_time(site: Path) -> None:
    text = (site / "spec" / "02-objective" / "index.html").read_text(encoding="utf-8")
    assert text.count("<math") > 20
    assert 'class="arithmatex"' not in text, "TeX left for a script to typeset"


def test_the_api_reference_is_generated_from_the_docstrings(site: Path) -> None:
    expected = {
        "gpt2_spec": ["gpt2_spec.load_requirements", "gpt2_spec.GPT2Config"],
        "gpt2_reference": [
            "gpt2_reference.model.GPT2",
            "gpt2_reference.checkpoint.save_checkpoint",
        ],
        "gpt2_conformance": [
            "gpt2_conformance.adapter.Adapter",
            "gpt2_conformance.report.build_report",
        ],
    }
    for page, objects in expected.items():
        html = (site / "api" / page / "index.html").read_text(encoding="utf-8")
        ids = _parse(site / "api" / page / "index.html").ids
        for name in objects:
            assert name in ids, f"api/{page}: no entry for {name}"
        assert not re.search(r":(func|meth|class|mod|attr):<code>", html), f"api/{page}: raw roles"


def test_generated_pages_are_rebuilt_from_the_code(site: Path) -> None:
    text = (site / "evidence" / "traceability" / "index.html").read_text(encoding="utf-8")
    for r in load_requirements():
        assert f"#{r.id}" in text, f"traceability page lacks {r.id}"
    props = GENERATED.conformance_properties()
    for name, _ in props:
        module, test = name.split(".", 1)
        assert f"{module}.py::{test}" in text, f"traceability page lacks {name}"


def test_figures_are_in_the_site(site: Path) -> None:
    for name in ("causal-jacobian.png", "loss-terms.png", "shapes.png"):
        data = (site / "figures" / name).read_bytes()
        assert data.startswith(b"\x89PNG"), name
        assert len(data) > 10_000, name
    hook = _hook("figures")
    for rid, (name, _) in hook.SPEC_FIGURES.items():
        chapter = next(r.chapter for r in load_requirements() if r.id == rid)
        html = (site / "spec" / chapter.removesuffix(".md") / "index.html").read_text("utf-8")
        assert f"../../figures/{name}" in html, f"{chapter} does not show {name} beside {rid}"


# ---- generated blocks --------------------------------------------------------------------------


def _docs_pages() -> list[Path]:
    skip = {DOCS / "hooks", DOCS / "overrides"}
    return sorted(p for p in DOCS.rglob("*.md") if not any(s in p.parents for s in skip))


def test_every_generated_block_names_a_registered_generator() -> None:
    used = set()
    for page in _docs_pages():
        for name in GENERATED.generator_names_in(page.read_text(encoding="utf-8")):
            assert name in GENERATED.REGISTRY, f"{page}: unknown generated block {name!r}"
            used.add(name)
    unused = set(GENERATED.REGISTRY) - used
    assert not unused, f"registered generators that no page shows: {unused}"


@pytest.mark.parametrize("name", sorted(GENERATED.REGISTRY))
def test_every_generator_has_its_committed_data_and_renderer(name: str) -> None:
    generator = GENERATED.REGISTRY[name]
    if generator.optional is not None and generator.data_missing():
        # Allowed to be absent (GPU data): the page must then say so, and why.
        markdown = GENERATED.render(name)
        assert "No data yet" in markdown
        assert generator.optional in markdown
        return
    assert not generator.data_missing(), (
        f"docs/data for the generated block {name!r} is missing: {generator.data} "
        f"(run `{generator.command}` and commit the result)"
    )
    markdown = GENERATED.render(name)
    assert "Data not generated yet" not in markdown
    assert markdown.strip(), f"{name}: the renderer returned nothing"


def test_a_missing_producer_json_becomes_a_visible_box() -> None:
    generator = GENERATED.Generator("x", "x_producer", "docs/data/no-such.json", "python x.py")
    assert generator.data_missing()
    box = GENERATED.missing_data_box(generator)
    assert box.startswith("!!! warning")
    assert "python x.py" in box


def test_a_producer_renders_its_committed_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mkdocs.exceptions import PluginError

    # Producers are modules imported by name: three made-up ones, importable from tmp_path.
    (tmp_path / "demo_producer_ok.py").write_text(
        "def render_markdown(data):\n    return f\"| n |\\n| --- |\\n| {data['n']} |\\n\"\n"
    )
    (tmp_path / "demo_producer_raises.py").write_text(
        "def render_markdown(data):\n    raise KeyError('rows')\n"
    )
    monkeypatch.syspath_prepend(tmp_path)
    data = tmp_path / "data.json"
    data.write_text('{"n": 7}')

    def register(module: str) -> None:
        generator = GENERATED.Generator("demo", module, str(data), "python -m demo")
        monkeypatch.setitem(GENERATED.REGISTRY, "demo", generator)

    register("demo_producer_ok")
    assert GENERATED.render("demo") == "| n |\n| --- |\n| 7 |\n"
    register("demo_producer_raises")
    with pytest.raises(PluginError, match="render_markdown failed"):
        GENERATED.render("demo")
    register("demo_producer_missing")
    with pytest.raises(PluginError, match="exists but its renderer demo_producer_missing"):
        GENERATED.render("demo")


def test_an_unknown_generated_block_stops_the_build() -> None:
    from mkdocs.exceptions import PluginError

    with pytest.raises(PluginError, match="unknown generated block 'nope'"):
        GENERATED.render("nope")


# ---- code examples in the docs run -------------------------------------------------------------

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<info>[^\n`]*)$")
_MARK = re.compile(r"^<!-- (?P<kind>example|not-run): ?(?P<arg>.*?) -->$")


def python_blocks(text: str) -> list[tuple[int, str | None, str]]:
    """Top-level ```python blocks as (line, mark, code); mark is the ``<!-- example: path -->``
    or ``<!-- not-run: reason -->`` comment on the line just above the fence, if any."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info, start = m.group("fence"), m.group("info").strip(), i
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(m.group("indent")) :])
            i += 1
        i += 1
        if info.split(" ")[0] in ("python", "py"):
            mark = lines[start - 1].strip() if start and _MARK.match(lines[start - 1]) else None
            blocks.append((start + 1, mark, "\n".join(body) + "\n"))
    return blocks


PAGES_WITH_PYTHON = [p for p in _docs_pages() if python_blocks(p.read_text(encoding="utf-8"))]


def test_the_block_finder_sees_marks_and_nested_fences() -> None:
    text = (
        "<!-- not-run: sketch -->\n```python\nx = 1\n```\n````markdown\n```python\nno\n```\n````\n"
    )
    assert python_blocks(text) == [(2, "<!-- not-run: sketch -->", "x = 1\n")]


@pytest.mark.parametrize(
    "page", PAGES_WITH_PYTHON, ids=[str(p.relative_to(DOCS)) for p in PAGES_WITH_PYTHON]
)
def test_the_python_examples_of_a_page_run(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks run in order, in one namespace per page, in an empty folder. A block marked
    ``<!-- example: docs/examples/X.py -->`` must be that file verbatim, and the file runs; a block
    marked ``<!-- not-run: reason -->`` is an illustration (the reason is required)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for line, mark, code in python_blocks(page.read_text(encoding="utf-8")):
        where = f"{page.relative_to(ROOT)}:{line}"
        if mark and mark.startswith("<!-- not-run"):
            assert _MARK.match(mark).group("arg").strip(), f"{where}: not-run needs a reason"  # type: ignore[union-attr]
            continue
        if mark and mark.startswith("<!-- example"):
            path = ROOT / _MARK.match(mark).group("arg")  # type: ignore[union-attr]
            assert code == path.read_text(encoding="utf-8"), f"{where}: differs from {path}"
            exec(compile(code, str(path), "exec"), {"__name__": f"example_{path.stem}"})
            continue
        try:
            exec(compile(code, where, "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"the example at {where} raised {error!r}") from error


# ---- a real browser ----------------------------------------------------------------------------


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.fail(
            f"headless Chromium is needed for the docs browser test; missing {missing}: {INSTALL}"
        )
    try:
        from selenium import webdriver
    except ImportError:
        pytest.fail("selenium is needed for the docs browser test: pip install -e '.[dev]'")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(flag)
    options.add_argument("--disable-dev-shm-usage")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER)
    )
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _console_errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


_OFF_HOST = """
return performance.getEntriesByType('resource').map(e => e.name)
    .filter(u => !u.startsWith(location.origin) && !u.startsWith('data:'));
"""
_MATH_SIZES = """
return Array.from(document.querySelectorAll('math')).map(m => {
    const r = m.getBoundingClientRect(); return [r.width, r.height, m.getAttribute('alttext')];
});
"""
_SEARCH_HREFS = (
    "return Array.from(document.querySelectorAll('.md-search-result__item a'), a => a.href);"
)
_IMAGES = """
return Array.from(document.querySelectorAll('article img')).map(
    i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.getBoundingClientRect().width]);
"""


def test_the_site_works_in_a_real_browser(site: Path, browser: Any) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Path(os.environ.get("DOCS_SCREENSHOTS", "/tmp/docs-shots"))
    shots.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with serve(site) as base:
        problems: list[str] = []
        for page in _pages(site):
            browser.get(base + page)
            WebDriverWait(browser, 20).until(
                lambda d: d.execute_script("return document.readyState") == "complete"
            )
            errors = _console_errors(browser)
            if errors:
                problems.append(f"{page}: console errors {errors}")
            off_host = browser.execute_script(_OFF_HOST)
            if off_host:
                problems.append(f"{page}: fetched from other hosts {off_host}")
            version = browser.find_element(By.CSS_SELECTOR, ".spec-version").text
            if SPEC_VERSION not in version:
                problems.append(f"{page}: the version bar says {version!r}")
            for width, height, tex in browser.execute_script(_MATH_SIZES):
                if not (width > 0 and height > 0):
                    problems.append(f"{page}: formula {tex!r} not drawn ({width}x{height})")
            for src, complete, natural, shown in browser.execute_script(_IMAGES):
                if not (complete and natural > 0 and shown > 0):
                    problems.append(f"{page}: image {src} not shown")
            if page == "":
                browser.save_screenshot(str(shots / "home.png"))
            if page == "spec/02-objective/":
                browser.save_screenshot(str(shots / "spec-objective.png"))
        assert not problems, "\n".join(problems)

        # The spec pages and the illustrations really hold math and figures.
        browser.get(base + "spec/02-objective/")
        assert len(browser.execute_script(_MATH_SIZES)) > 20
        browser.get(base + "illustrations/")
        images = browser.execute_script(_IMAGES)
        assert len(images) >= 3, images
        browser.save_screenshot(str(shots / "illustrations.png"))

        # Search finds a requirement id, and its result links to the requirement's anchor.
        browser.get(base)
        box = WebDriverWait(browser, 10).until(
            expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, "input.md-search__input"))
        )
        box.click()
        box.send_keys("causality.future-invisible")
        box.send_keys(Keys.SHIFT)  # a key event, as a person typing makes
        wanted = re.compile(r"/spec/03-causality/(\?h=[^#]*)?#causality\.future-invisible$")

        def found(driver: Any) -> list[str] | None:
            hrefs: list[str] = driver.execute_script(_SEARCH_HREFS)
            return hrefs if any(wanted.search(h) for h in hrefs) else None

        try:  # results are redrawn while the index answers: read them in one script call
            WebDriverWait(browser, 20).until(found)
        except TimeoutException:
            hrefs = browser.execute_script(_SEARCH_HREFS)
            raise AssertionError(f"search found no link to {wanted.pattern}: {hrefs}") from None
        browser.save_screenshot(str(shots / "search.png"))
        assert not _console_errors(browser)
    print(f"browser checks: {time.perf_counter() - started:.1f} s over {len(_pages(site))} pages")


def test_the_ci_gate_example_follows_the_verdict() -> None:
    # The page's example is a script a user copies, not a module: run its file as they would
    # (without its __main__ block) and take its gate function.
    gate = runpy.run_path(str(EXAMPLES / "ci_gate.py"), run_name="ci_gate")["gate"]
    path = DOCS / "data" / "reports" / "reference.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    assert report["conforms"] is True
    assert gate(report) == 0
    failed = dict(report, conforms=False)
    assert gate(failed) == 1
    assert gate(dict(report, conforms=None)) == 1
    assert gate(dict(report, interrupted=True)) == 1


# ---- layout at a 1400 px window ----------------------------------------------------------------

#: The pages with the widest content: long code lines, many-column tables, figures.
WIDE_PAGES = [
    "",
    "spec/02-objective/",
    "spec/06-forward/",
    "evidence/traceability/",
    "evidence/mutant-zoo/",
    "evidence/false-alarms/",
    "evidence/adapters/",
    "benchmarks/",
    "illustrations/",
]
LAYOUT_WIDTH = 1400
MIN_FIGURE_TEXT_PX = 11.0

# Blocks sticking out of the content column, and whether a scrolling box holds each one.
_OUTSIDE_THE_COLUMN = """
const article = document.querySelector('article');
// The column: the article and its margins (Material's scrolling boxes reach into them).
const right = document.querySelector('.md-content').getBoundingClientRect().right + 1;
const out = [];
for (const el of article.querySelectorAll('table, pre > code, img, math, .md-typeset__table')) {
    if (el.getBoundingClientRect().right <= right) continue;
    let held = false;
    for (let a = el.parentElement; a && a !== article; a = a.parentElement) {
        const overflow = getComputedStyle(a).overflowX;
        const scrolls = overflow === 'auto' || overflow === 'scroll';
        if (scrolls && a.getBoundingClientRect().right <= right) { held = true; break; }
    }
    const what = el.textContent || el.getAttribute('src') || '';
    if (!held) out.push(el.tagName + ' ' + what.trim().slice(0, 60));
}
return [document.documentElement.scrollWidth, document.documentElement.clientWidth, out];
"""
_TABLE_CODES = """
return Array.from(document.querySelectorAll('article td code, article th code'),
    c => [c.textContent, c.getClientRects().length]);
"""
_FIGURES = """
return Array.from(document.querySelectorAll('article img'))
    .filter(i => i.getAttribute('src').includes('figures/'))
    .map(i => [i.getAttribute('src'), i.naturalWidth, i.getBoundingClientRect().width]);
"""


@pytest.fixture(scope="module")
def wide_browser(browser: Any) -> Iterator[Any]:
    """The browser with a LAYOUT_WIDTH px wide window; its size is given back afterwards."""
    size = browser.get_window_size()
    browser.set_window_size(LAYOUT_WIDTH, 1000)
    try:
        yield browser
    finally:
        browser.set_window_size(size["width"], size["height"])


def _load(browser: Any, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 20).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def test_wide_pages_fit_the_window_and_wide_blocks_scroll_in_place(
    site: Path, wide_browser: Any
) -> None:
    """At a 1400 px window no page is wider than the window, and a table, code block, figure or
    formula wider than the content column scrolls inside its own box instead of being cut.
    Screenshots go to $DOCS_SCREENSHOTS as wide-PAGE.png."""
    shots = Path(os.environ.get("DOCS_SCREENSHOTS", "/tmp/docs-shots"))
    shots.mkdir(parents=True, exist_ok=True)
    assert wide_browser.execute_script("return window.innerWidth") >= LAYOUT_WIDTH - 20
    problems = []
    with serve(site) as base:
        for page in WIDE_PAGES:
            _load(wide_browser, base + page)
            scroll_width, client_width, outside = wide_browser.execute_script(_OUTSIDE_THE_COLUMN)
            if scroll_width > client_width:
                problems.append(f"/{page}: the page is {scroll_width} px wide in {client_width}")
            problems += [f"/{page}: cut at the column's edge: {block}" for block in outside]
            name = page.strip("/").replace("/", "-") or "home"
            wide_browser.save_screenshot(str(shots / f"wide-{name}.png"))
    assert not problems, "\n".join(problems)


def test_code_in_table_cells_is_never_broken_across_lines(site: Path, wide_browser: Any) -> None:
    """A requirement id (or test name, or path) in a table renders on one line: never
    ``model.canon`` / ``ical-names``."""
    ids = {r.id for r in load_requirements()}
    problems, seen_ids = [], set()
    with serve(site) as base:
        for page in WIDE_PAGES:
            _load(wide_browser, base + page)
            for text, lines in wide_browser.execute_script(_TABLE_CODES):
                if text in ids:
                    seen_ids.add(text)
                if lines != 1:
                    problems.append(f"/{page}: {text!r} is drawn on {lines} lines")
    # The traceability page alone lists every requirement id in a table.
    assert seen_ids == ids, f"ids never seen in a table: {sorted(ids - seen_ids)}"
    assert not problems, "\n".join(problems[:40]) + f"\n({len(problems)} in all)"


def test_figure_text_is_readable_at_the_size_shown(site: Path, wide_browser: Any) -> None:
    """The smallest label of a figure (FONT_MIN_PT at DPI, docs/hooks/figures.py), scaled by how
    the page shows the image (shown width / natural width), is at least 11 px on screen."""
    hook = _hook("figures")
    label_px = hook.FONT_MIN_PT * hook.DPI / 72
    shown = []
    with serve(site) as base:
        for page in ("illustrations/", "spec/02-objective/", "spec/03-causality/"):
            _load(wide_browser, base + page)
            shown += [(page, *figure) for figure in wide_browser.execute_script(_FIGURES)]
    assert len(shown) >= len(hook.FIGURES) + 2, shown
    small = [
        f"/{page}: {src} shown at {width:.0f} of {natural} px, so its smallest labels are "
        f"{label_px * width / max(natural, 1):.1f} px"
        for page, src, natural, width in shown
        if natural <= 0 or label_px * width / natural < MIN_FIGURE_TEXT_PX
    ]
    assert not small, "\n".join(small)


def test_a_figure_with_unreadable_or_raw_tex_labels_is_refused() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hook = _hook("figures")
    fig, ax = plt.subplots()
    ax.set_xlabel("x", fontsize=hook.FONT_MIN_PT)
    ax.tick_params(labelsize=hook.FONT_MIN_PT)
    assert hook._png(fig).startswith(b"\x89PNG")
    for label, size, message in (
        ("tiny", hook.FONT_MIN_PT - 1, "below FONT_MIN_PT"),
        ("p(x_{t+1})", hook.FONT_MIN_PT, "outside"),
    ):
        fig, ax = plt.subplots()
        ax.tick_params(labelsize=hook.FONT_MIN_PT)
        ax.set_ylabel(label, fontsize=size)
        with pytest.raises(ValueError, match=message):
            hook._png(fig)
        plt.close(fig)
