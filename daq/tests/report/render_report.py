"""Renders scandaq report files in headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright) and checks what a reader would see: no console error or failed request, every
figure drawn with a non-blank size, and a screenshot kept as an artefact.

Usage: render_report.py CHROMIUM SCREENSHOT_DIR REPORT.html [REPORT.html ...]
Prints one JSON line per report: {"report", "figures", "sizes", "errors", "screenshot"}.
Exits non-zero when a check fails (the reason on stderr).
"""

import json
import pathlib
import sys
import tempfile

from playwright.sync_api import sync_playwright

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

FIGURE_SIZES = """
() => [...document.querySelectorAll('figure.fig')].map(f => {
  const svg = f.querySelector('svg');
  const r = (svg || f).getBoundingClientRect();
  const drawn = svg ? svg.querySelectorAll('path,polyline,line,rect,circle,image,text').length : 0;
  return {id: f.dataset.figure, width: r.width, height: r.height, elements: drawn,
          images: svg ? [...svg.querySelectorAll('image')].map(i => {
            const b = i.getBoundingClientRect(); return [b.width, b.height]; }) : []};
})
"""


def check(page, path, shots):
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append("request failed: " + r.url))
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(pathlib.Path(path).resolve().as_uri(), wait_until="load")
    sizes = page.evaluate(FIGURE_SIZES)
    data = json.loads(page.evaluate("document.getElementById('report-data').textContent"))
    shot = str(pathlib.Path(shots) / (pathlib.Path(path).stem + ".png"))
    page.screenshot(path=shot, full_page=True)
    external = [u for u in requests if not (u.startswith("file:") or u.startswith("data:"))]
    problems = []
    if errors:
        problems.append("console errors: %s" % errors)
    if external:
        problems.append("the report fetched from the network: %s" % external)
    if not sizes:
        problems.append("no figure in the page")
    for s in sizes:
        if s["width"] < 50 or s["height"] < 50 or s["elements"] < 3:
            problems.append("figure %s is blank or has no size: %s" % (s["id"], s))
        for w, h in s["images"]:
            if w < 20 or h < 20:
                problems.append("figure %s has an image of no size: %s" % (s["id"], s))
    return {
        "report": path,
        "figures": len(sizes),
        "sizes": sizes,
        "errors": errors,
        "data_keys": sorted(data.keys()),
        "screenshot": shot,
    }, problems


def main():
    chromium, shots, reports = sys.argv[1], sys.argv[2], sys.argv[3:]
    pathlib.Path(shots).mkdir(parents=True, exist_ok=True)
    failed = False
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            headless=True,
            args=FLAGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            for path in reports:
                page = ctx.new_page()
                result, problems = check(page, path, shots)
                page.close()
                print(json.dumps(result), flush=True)
                for pr in problems:
                    print("%s: %s" % (path, pr), file=sys.stderr)
                    failed = True
        finally:
            ctx.close()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
