"""The reports of a finished night, as a browser shows them offline: headless Chromium (Debian's
``chromium`` package, installed by ``make test``) loads the run report, the validation report, the
Great Expectations Data Docs index and one GX validation page of the ``baseline`` night with every
host name unresolvable, and each check compares what rendered against values read independently
from the files on disk (summary.json, the Data Docs pages, the report's embedded PNGs).

Each page is opened inside a small wrapper page (an iframe filling the window) whose script reads
the rendered page (images decoded, stylesheets applied, resources fetched) into the dumped DOM; the
same launch writes the screenshot.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.artifacts import layout
from tests.conftest import BASE_DS

WIDTH, HEIGHT = 1280, 2000

# Runs in the wrapper once the framed page has loaded; ``#control`` renders a control: stylesheets
# off (``nostyle``) or images hidden (``noimg``).
PROBE = """
const f = document.getElementById('f'), out = document.getElementById('out');
f.onload = () => setTimeout(() => {
  try {
    const d = f.contentDocument, w = f.contentWindow, mode = location.hash.slice(1);
    const icons = [...d.querySelectorAll('i.fas')].map(i => w.getComputedStyle(i, '::before').content);
    const r = {
      title: d.title, h1: [...d.querySelectorAll('h1')].map(h => h.textContent.trim()),
      imgs: [...d.images].map(i => ({src: i.getAttribute('src').slice(0, 22), complete: i.complete,
                                     w: i.naturalWidth, h: i.naturalHeight})),
      sheets: [...d.styleSheets].map(s => ({href: s.href, rules: (() => { try { return s.cssRules.length; } catch (e) { return -1; } })()})),
      resources: w.performance.getEntriesByType('resource').map(e => e.name),
      remote: [...d.querySelectorAll('link[href],script[src],img[src],iframe[src]')]
                .map(e => e.getAttribute('href') || e.getAttribute('src')).filter(u => /^(https?:)?\\/\\//.test(u)),
      links: [...d.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
      icons: icons,
      index_rows: [...d.querySelectorAll('table.ge-index-page-validation-results-table tbody tr, '
                                         + 'table.recsys-static-index tbody tr')]
                    .filter(tr => tr.closest('#Validation-Results'))
                    .map(tr => ({href: (tr.querySelector('a[href^="validations/"]') || {}).getAttribute?.('href'),
                                 status: w.getComputedStyle(tr.querySelector('i.fas'), '::before').content})),
      th_background: d.querySelector('th') ? w.getComputedStyle(d.querySelector('th')).backgroundColor : null,
      ok_color: d.querySelector('.ok') ? w.getComputedStyle(d.querySelector('.ok')).color : null,
    };
    if (mode === 'nostyle') for (const s of d.styleSheets) s.disabled = true;
    if (mode === 'noimg') for (const i of d.images) i.style.visibility = 'hidden';
    out.textContent = JSON.stringify(r);
  } catch (e) { out.textContent = 'ERROR ' + e; }
}, 100);
f.src = SRC;
"""


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; CI fails without it, a developer's run skips with the reason."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Debian's chromium package (make chromium)")
        pytest.skip("chromium not installed (make chromium, or apt-get install -y chromium)")
    return exe


def render(chromium: str, page: Path, tmp: Path, control: str = "") -> tuple[dict, Image.Image]:
    """Load ``page`` offline in headless Chromium: (what the probe read, the screenshot)."""
    tag = f"{page.stem}-{control or 'page'}"
    wrapper, png = tmp / f"{tag}.html", tmp / f"{tag}.png"
    wrapper.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><style>body{margin:0}iframe{border:0;width:100vw;"
        f"height:100vh;display:block}}</style></head><body><iframe id=f></iframe><pre id=out>pending</pre>"
        f"<script>const SRC = {json.dumps(page.as_uri())};{PROBE}</script></body></html>", encoding="utf-8")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--allow-file-access-from-files", "--host-resolver-rules=MAP * ~NOTFOUND",  # no network at all
           f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=5000", f"--window-size={WIDTH},{HEIGHT}",
           f"--screenshot={png}", "--dump-dom", f"{wrapper.as_uri()}#{control}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    m = re.search(r'<pre id="out">(.*?)</pre>', done.stdout, re.DOTALL)
    assert done.returncode == 0 and m, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    text = m.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    assert text.startswith("{"), f"the probe did not run: {text}"
    return json.loads(text), Image.open(png).convert("RGB")


def assert_offline(dom: dict) -> None:
    """Nothing in the page points at the network, and nothing was fetched from it."""
    assert dom["remote"] == [], dom["remote"]
    assert not [u for u in dom["resources"] if u.startswith(("http:", "https:"))], dom["resources"]


def ink(img: Image.Image) -> float:
    """Share of pixels that are not (near) white."""
    return float((np.asarray(img.convert("L")) < 245).mean())


def colours(img: Image.Image) -> int:
    """Distinct colours in the screenshot."""
    px = np.asarray(img).reshape(-1, 3).astype(np.uint32)
    return len(np.unique((px[:, 0] << 16) | (px[:, 1] << 8) | px[:, 2]))


def saturated(img: Image.Image) -> int:
    """Pixels with a clearly coloured hue (chart bars, markers); text and greys are not counted."""
    px = np.asarray(img).astype(np.int16)
    return int(((px.max(axis=2) - px.min(axis=2)) > 60).sum())


def summary(cfg) -> dict:
    return json.loads(layout(cfg).validation_summary(BASE_DS).read_text())


def test_data_docs_index_lists_every_validation_offline_and_styled(chromium, baseline, tmp_path):
    docs = layout(baseline).data_docs(BASE_DS)
    pages = sorted(str(p.relative_to(docs)) for p in docs.glob("validations/**/*.html"))
    suites = summary(baseline)["great_expectations"]
    assert len(pages) == len(suites) >= 3  # one GX result page per suite run tonight, on disk

    dom, shot = render(chromium, docs / "index.html", tmp_path)
    assert_offline(dom)
    assert sorted(r["href"] for r in dom["index_rows"]) == pages  # not an empty index: one row per result
    failed = sum(1 for results in suites.values() if not all(r["success"] for r in results))
    assert sorted(r["status"] for r in dom["index_rows"]) == sorted(['"✘"'] * failed + ['"✔"'] * (len(pages) - failed))
    assert any(s["href"] and s["href"].endswith("/static/styles/offline.css") and s["rules"] > 20 for s in dom["sheets"])
    assert dom["imgs"] and all(i["complete"] and i["w"] > 0 for i in dom["imgs"])  # GX's logo, from static/

    _, control = render(chromium, docs / "index.html", tmp_path, "nostyle")
    assert ink(shot) > 1.5 * ink(control), (ink(shot), ink(control))  # grey bars, borders, table stripes
    assert colours(shot) > 2 * colours(control), (colours(shot), colours(control))


def test_gx_validation_page_readable_offline(chromium, baseline, tmp_path):
    docs = layout(baseline).data_docs(BASE_DS)
    results = summary(baseline)["great_expectations"]["events"]
    page = next(docs.glob("validations/events_suite/**/*.html"))
    dom, shot = render(chromium, page, tmp_path)
    assert_offline(dom)
    passed = sum(r["success"] for r in results)
    failed = len(results) - passed
    # one icon per expectation, plus the page's overall status when the suite failed
    assert dom["icons"].count('"✔"') == passed
    assert dom["icons"].count('"✘"') == failed + (1 if failed else 0)
    assert dom["th_background"] == "rgb(238, 241, 244)"  # offline.css applied
    assert "../" in next(l for l in dom["links"] if l.endswith("index.html"))  # breadcrumb back to the index
    assert ink(shot) > 0.05


def test_validation_report_links_readable_data_docs(chromium, baseline, tmp_path):
    report = layout(baseline).validation_report(BASE_DS)
    s = summary(baseline)
    dom, shot = render(chromium, report, tmp_path)
    assert_offline(dom)
    assert dom["h1"] == [f"Validation of ds={BASE_DS}"]
    targets = [(report.parent / l).resolve() for l in dom["links"]]
    assert all(t.exists() for t in targets), [t for t in targets if not t.exists()]
    docs = layout(baseline).data_docs(BASE_DS)
    assert docs / "index.html" in targets
    assert sorted(t for t in targets if "validations" in t.parts) == sorted(docs.glob("validations/**/*.html"))
    assert dom["ok_color"] == "rgb(23, 112, 47)"  # the page's own inline stylesheet applied
    assert 0.02 < ink(shot) < 0.6, ink(shot)
    assert len(s["great_expectations"]) == len([t for t in targets if "validations" in t.parts])


def test_run_report_images_decode_and_show(chromium, baseline, tmp_path):
    report = layout(baseline).report(BASE_DS)
    embedded = [Image.open(io.BytesIO(base64.b64decode(b)))
                for b in re.findall(r"src=['\"]data:image/png;base64,([A-Za-z0-9+/=]+)['\"]", report.read_text())]
    assert len(embedded) >= 3
    dom, shot = render(chromium, report, tmp_path)
    assert_offline(dom)
    assert dom["h1"] == [f"Recommendations run {BASE_DS}"]
    assert [(i["w"], i["h"]) for i in dom["imgs"]] == [im.size for im in embedded]  # every chart decoded
    assert all(i["complete"] and i["src"].startswith("data:image/png") for i in dom["imgs"])
    _, control = render(chromium, report, tmp_path, "noimg")
    assert saturated(shot) > 20 * max(saturated(control), 100), (saturated(shot), saturated(control))


def test_data_docs_files_need_no_network(baseline):
    """Without a browser too: every Data Docs page references local assets only (no http(s) in any
    ``<link>``, ``<script>`` or ``<img>``), each exists, and the index holds one static row per result page."""
    docs = layout(baseline).data_docs(BASE_DS)
    html_pages = sorted(docs.rglob("*.html"))
    for page in html_pages:
        html = page.read_text(encoding="utf-8")
        refs = re.findall(r"<(?:link|script|img)\b[^>]*?(?:href|src)=\"([^\"]*)\"", html, re.DOTALL)
        assert refs and not [r for r in refs if re.match(r"(https?:)?//", r)], (page, refs)
        assert all((page.parent / r).exists() for r in refs if not r.startswith("data:")), (page, refs)
        assert "<script" not in html
    index = (docs / "index.html").read_text(encoding="utf-8")
    results = sorted(str(p.relative_to(docs)) for p in docs.glob("validations/**/*.html"))
    assert sorted(set(re.findall(r'href="(validations/[^"]+\.html)"', index))) == results
