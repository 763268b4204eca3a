"""The demo's report.html as a user sees it: run `datablame demo` (reused when its results
exist), open the report in headless Chromium and save a screenshot, plus a JSON of what the
report shows per query (completion loss, greedy match, warning, how sure each method is).

    .venv/bin/python benchmarks/report_screenshot.py [--run runs/demo] [--fresh]

Needs Chromium (`apt-get install -y chromium`) and the `playwright` wheel (never
`playwright install`: it downloads its own browser). Writes
benchmarks/results/report_demo.png and benchmarks/results/report_demo.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str:
    for p in CHROMIUM:
        if Path(p).is_file():
            return p
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise SystemExit("Chromium not found: apt-get install -y chromium")
    return found


def screenshot(html: Path, out: Path, *, width: int = 1200, height: int = 1500) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(html.resolve().as_uri())
        page.screenshot(path=str(out))
        browser.close()


def summary(results_json: Path) -> dict:
    res = json.loads(results_json.read_text(encoding="utf-8"))
    queries = []
    for q in res["queries"]:
        b = q.get("behaviour") or {}
        conf = (q.get("confidence") or {}).get("methods", {})
        queries.append({
            "query_id": q["query_id"], "completion_loss": b.get("loss"), "base_loss": b.get("base_loss"),
            "greedy_exact": b.get("exact"), "token_match": b.get("token_match"), "warning": b.get("warning"),
            "how_sure": {m: {"gap_z": c.get("gap_z"), "strength": c.get("strength"),
                             "mean_overlap": c.get("mean_overlap")} for m, c in conf.items()},
        })
    return {"results": str(results_json), "queries": queries,
            "produced": sum(1 for q in queries if q["greedy_exact"]), "of": len(queries)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=REPO / "runs" / "demo")
    ap.add_argument("--fresh", action="store_true", help="rerun the demo even when its results exist")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datablame import api
    from datablame.layout import RunLayout

    layout = RunLayout(args.run)
    t = time.perf_counter()
    if args.fresh or not layout.results_json.is_file():
        api.demo(str(args.run), overwrite=args.fresh)
    seconds = time.perf_counter() - t
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / "report_demo.png"
    screenshot(layout.attribution.report_html, png)
    data = {**summary(layout.results_json), "screenshot": str(png.relative_to(REPO)), "demo_seconds": round(seconds, 1),
            "browser": chromium_path(), "date": time.strftime("%Y-%m-%d"), "cpu_count": os.cpu_count(),
            "loadavg_1m": os.getloadavg()[0]}
    from datablame.utils.io import atomic_write_json

    atomic_write_json(RESULTS / "report_demo.json", data)
    print(f"{data['produced']}/{data['of']} queries produced by the model; wrote {png} and report_demo.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
