"""The web UI in Debian's headless Chromium (Playwright drives it), against the real local stack.

With the shared MVTec bottle data, the stack serves a small bottle model (trained here at 128 px) and the test
uploads a real broken bottle; without it, the synthetic widget class and a generated image.
Screenshots of the inspect and results views go to docs/screenshots/ (linked from the docs).
Every page signs in first (moto's cognito-idp, users made with infra.local.users): an ML engineer unless a
test says otherwise.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from infra.cli import main as ivadas
from infra.local.users import create_user
from tests.conftest import local_stack
from tests.paths import MVTEC_ROOT

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROME_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
PASSWORD = "Browser-Test-Passw0rd!"
ENGINEER, OPERATOR = "mia", "oli"


@pytest.fixture(scope="module")
def scenario(
    synthetic_root: Path, trained_artifact: Path, trained_softpatch: Path, tmp_path_factory
) -> Iterator[dict]:
    """(stack state, class name, a defective image, a good image, images for a batch)."""
    bottle = MVTEC_ROOT / "bottle"
    if (bottle / "train/good").is_dir():
        out = tmp_path_factory.mktemp("bottle-models")
        artifacts = {}
        for model in ("patchcore", "softpatch"):
            artifacts[model] = out / f"{model}.tar.gz"
            code = ivadas(
                [
                    "train",
                    "--data-root",
                    str(MVTEC_ROOT),
                    "--classes",
                    "bottle",
                    "--model",
                    model,
                    "--input-size",
                    "128",
                    "--coreset-ratio",
                    "0.05",
                    "--quiet",
                    "--out",
                    str(artifacts[model]),
                ]
            )
            assert code == 0
        info = {
            "class": "bottle",
            "defect": bottle / "test/broken_large/000.png",
            "good": bottle / "test/good/000.png",
            "batch": sorted((bottle / "test/contamination").glob("*.png"))[:6],
        }
    else:
        artifacts = {"patchcore": trained_artifact, "softpatch": trained_softpatch}
        test = synthetic_root / "widget/test"
        info = {
            "class": "widget",
            "defect": test / "scratch/000.png",
            "good": test / "good/000.png",
            "batch": sorted((test / "scratch").glob("*.png")) + sorted((test / "good").glob("*.png")),
        }
    state_dir = tmp_path_factory.mktemp("ui-stack")
    with local_stack(
        state_dir,
        artifacts["patchcore"],
        artifacts["softpatch"],
        ["WorkerBatchingWindowSeconds=0"],
    ) as st:
        create_user(st, ENGINEER, PASSWORD, ["ml-engineers"])
        create_user(st, OPERATOR, PASSWORD, ["operators"])
        yield {**info, "state": st, "artifacts": artifacts}


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROME_ARGS)
        yield b
        b.close()


def sign_in(pg, user: str, password: str = PASSWORD) -> None:
    """Fill the sign-in form and wait until the app has loaded for that user."""
    pg.wait_for_selector("body[data-ready='signin']", timeout=30_000)
    pg.fill("#si-user", user)
    pg.fill("#si-password", password)
    pg.click("#si-submit")
    pg.wait_for_selector("body[data-ready='true']", timeout=30_000)


@pytest.fixture
def signed_out(browser, scenario):
    """A fresh browser context at the UI, not signed in; fails the test on any uncaught script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    script_errors: list[str] = []
    pg.on("pageerror", lambda exc: script_errors.append(str(exc)))
    pg.goto(scenario["state"]["ui_url"])
    yield pg
    context.close()
    assert not script_errors, script_errors  # an uncaught error in app.js fails the test that caused it


@pytest.fixture
def page(signed_out):
    sign_in(signed_out, ENGINEER)
    assert signed_out.get_attribute("body", "data-ready") == "true", signed_out.inner_text("#error")
    return signed_out


def _inspect_the_defect(page, scenario):  # noqa: ANN001, ANN202
    """Inspect the scenario's defective image with PatchCore: its result card, flagged."""
    page.set_input_files("#file", str(scenario["defect"]))
    page.select_option("#class", scenario["class"])
    page.click("#run")
    card = page.wait_for_selector(".card[data-model='patchcore']", timeout=60_000)
    assert card.query_selector(".verdict").inner_text() == "DEFECT"
    return card


def test_inspect_shows_verdict_heatmap_and_regions(page, scenario) -> None:
    card = _inspect_the_defect(page, scenario)
    heat = card.query_selector("img.heat")
    assert heat and heat.is_visible() and heat.get_attribute("src").startswith("data:image/png;base64,")
    assert card.query_selector_all(".box"), "no region boxes drawn"
    assert "threshold 0.5" in card.query_selector(".score").inner_text()
    page.fill("input[type=range]", "80")
    assert heat.evaluate("e => e.style.opacity") == "0.8"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "inspect.png"), full_page=True)


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)])
def test_inspect_explains_a_defect_with_its_nearest_good_patch(page, scenario, width, height) -> None:
    page.set_viewport_size({"width": width, "height": height})
    card = _inspect_the_defect(page, scenario)
    pair = card.wait_for_selector(".explanations .explanation")
    assert re.fullmatch(r"train/good/\d+\.png", pair.query_selector(".image-id").inner_text())
    assert re.search(r"distance \d+\.\d\d", pair.inner_text())
    crops = ".card[data-model='patchcore'] .explanation:first-of-type img.crop"
    page.wait_for_function("sel => [...document.querySelectorAll(sel)].every(i => i.complete)", arg=crops)
    widths = page.eval_on_selector_all(crops, "imgs => imgs.map(i => [i.className, i.naturalWidth])")
    assert sorted(c for c, _ in widths) == ["crop defect-crop", "crop good-crop"], widths
    assert all(w > 0 for _, w in widths), widths  # both crops decoded
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "sideways scrolling"
    if width < 700:  # the whole Inspect view on a phone, beside inspect.png
        page.screenshot(path=str(SHOTS / "inspect-phone.png"), full_page=True)
    name = "explanation.png" if width > 700 else "explanation-phone.png"
    card.query_selector(".explanations").scroll_into_view_if_needed()
    card.screenshot(path=str(SHOTS / name))


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)])
def test_compare_both_models_side_by_side(page, scenario, width, height) -> None:
    page.set_viewport_size({"width": width, "height": height})
    page.set_input_files("#file", str(scenario["good"]))
    page.select_option("#class", scenario["class"])
    page.check("input[name=model][value=both]")
    page.click("#run")
    page.wait_for_selector(".card[data-model='softpatch']", timeout=60_000)
    cards = page.query_selector_all("#outcome .card")
    assert [c.get_attribute("data-model") for c in cards] == ["patchcore", "softpatch"]
    assert all(c.query_selector(".verdict").inner_text() == "GOOD" for c in cards)
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "sideways scrolling"
    page.screenshot(path=str(SHOTS / ("compare.png" if width > 700 else "compare-phone.png")), full_page=True)


def test_results_table_shows_every_image_of_a_batch(page, scenario) -> None:
    state = scenario["state"]
    s3 = boto3.client("s3")
    keys = []
    for i, path in enumerate(scenario["batch"]):
        key = f"ui-line/{scenario['class']}/batch-{i}-{path.name}"
        s3.put_object(Bucket=state["resources"]["InboxBucket"], Key=key, Body=path.read_bytes())
        keys.append(key)
    page.click("#tab-results")
    page.select_option("#f-class", scenario["class"])
    page.click("#filters button[type=submit]")

    def shown() -> set[str]:
        return {td.inner_text() for td in page.query_selector_all("#results-table td.key")}

    for _ in range(60):  # the table refreshes itself every 3 s while results arrive
        if set(keys) <= shown():
            break
        page.wait_for_timeout(1000)
    assert set(keys) <= shown(), page.inner_text("#error") + page.inner_text("#results-table")
    page.wait_for_function(
        "() => [...document.querySelectorAll('td img')].every(i => i.complete && i.naturalWidth)"
    )
    page.screenshot(path=str(SHOTS / "results.png"), full_page=True)


def _batch_on_two_lines(scenario) -> dict[str, list[str]]:  # noqa: ANN001
    """The scenario's batch again, on lines ui-a and ui-b (once per module)."""
    if "two_lines" not in scenario:
        state, s3 = scenario["state"], boto3.client("s3")
        keys: dict[str, list[str]] = {"ui-a": [], "ui-b": []}
        for i, path in enumerate(scenario["batch"]):
            line = ("ui-a", "ui-b")[i % 2]
            key = f"{line}/{scenario['class']}/two-lines-{i}-{path.name}"
            s3.put_object(Bucket=state["resources"]["InboxBucket"], Key=key, Body=path.read_bytes())
            keys[line].append(key)
        table = boto3.resource("dynamodb").Table(state["resources"]["ResultsTable"])
        wanted = {k for ks in keys.values() for k in ks}
        for _ in range(120):
            stored = {i["key"] for i in table.scan(ConsistentRead=True)["Items"]}
            if wanted <= stored:
                break
            time.sleep(1)
        assert wanted <= stored
        scenario["two_lines"] = keys
    return scenario["two_lines"]


def _open_results(page, line: str | None = None) -> None:  # noqa: ANN001
    page.click("#tab-results")
    page.wait_for_function("() => document.querySelectorAll('#f-line option').length > 2")
    if line:
        page.select_option("#f-line", line)
    page.click("#filters button[type=submit]")
    if line:
        page.wait_for_function(
            "l => [...document.querySelectorAll('#results-table td.c-line')].every(td => td.innerText === l)",
            arg=line,
        )
    page.wait_for_selector("#results-table tbody tr[data-id]")


def test_line_filter_time_range_counts_chart_and_export(page, scenario) -> None:
    keys = _batch_on_two_lines(scenario)
    _open_results(page, "ui-b")
    page.wait_for_function(
        "n => [...document.querySelectorAll('#results-table td.key')].length === n", arg=len(keys["ui-b"])
    )
    shown = {td.inner_text() for td in page.query_selector_all("#results-table td.key")}
    assert shown == set(keys["ui-b"])
    verdicts = page.eval_on_selector_all(
        "#results-table td.verdict-cell", "tds => tds.map(t => getComputedStyle(t).color)"
    )
    assert len(set(verdicts)) >= 1 and "rgb(26, 26, 26)" not in verdicts  # coloured, not body text
    counts = page.inner_text("#counts")
    assert "inspected" in counts and "defect rate" in counts
    page.wait_for_selector("#chart svg rect.vol")
    label = page.get_attribute("#chart svg", "aria-label")  # any time, results of the last hours: per hour
    assert re.match(r"\d+ hour\(s\); up to \d+ inspected; highest defect rate", label), label
    _chart_agrees_with_the_counts(page)
    page.select_option("#f-window", "60")  # the last hour: a point per minute
    page.click("#filters button[type=submit]")
    page.wait_for_function("() => /minute/.test(document.querySelector('#chart svg').ariaLabel)")
    _chart_agrees_with_the_counts(page)
    # a custom range that ends before the batch: nothing; one that holds it: the same rows
    page.select_option("#f-window", "custom")
    page.fill("#f-since", "2020-01-01T00:00")
    page.fill("#f-until", "2020-01-02T00:00")
    page.click("#filters button[type=submit]")
    page.wait_for_selector("text=no results for this filter")
    page.fill("#f-until", "2099-01-01T00:00")
    page.click("#filters button[type=submit]")
    page.wait_for_function(
        "n => document.querySelectorAll('#results-table td.key').length === n", arg=len(keys["ui-b"])
    )
    page.click("#export")
    link = page.wait_for_selector("#export-link", timeout=30_000)
    body = page.request.get(link.get_attribute("href")).text()
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0][:3] == ["inspection_id", "created_at", "class_name"] and len(rows) == len(keys["ui-b"]) + 1
    assert {r[rows[0].index("image_key")] for r in rows[1:]} == set(keys["ui-b"])
    page.screenshot(path=str(SHOTS / "results.png"), full_page=True)


def _chart_agrees_with_the_counts(page) -> None:  # noqa: ANN001
    """The bars add up to the inspected count; the defect rate is drawn where it can be seen."""
    page.wait_for_function(
        """() => { const n = [...document.querySelectorAll('#chart svg rect.vol')]
                     .reduce((a, r) => a + Number(r.dataset.inspected), 0);
                   const c = document.querySelector('#counts .count .n');
                   return c && n === Number(c.innerText); }"""
    )
    bars = len(page.query_selector_all("#chart svg rect.vol"))
    dots = page.query_selector_all("#chart svg circle.rate")
    assert len(dots) == bars and all(d.bounding_box()["width"] >= 4 for d in dots)


def test_detail_view_is_a_dialog_with_images_regions_and_next(page, scenario) -> None:
    _batch_on_two_lines(scenario)
    _open_results(page, "ui-a")
    first = page.get_attribute("#results-table tbody tr[data-id] >> nth=0", "data-id")
    page.focus("#results-table tbody tr[data-id] >> nth=0")
    page.keyboard.press("Enter")
    dialog = page.wait_for_selector("dialog#detail[open]")
    page.wait_for_selector("#detail .side-by-side figure")
    assert len(page.query_selector_all("#detail .side-by-side figure")) == 3  # image, heatmap, overlay
    shown = "#detail .side-by-side img.plain"
    page.wait_for_function(f"[...document.querySelectorAll('{shown}')].every(i => i.complete && i.width)")
    widths = page.eval_on_selector_all(shown, "imgs => imgs.map(i => i.width)")
    assert abs(widths[0] - widths[1]) <= 2, widths  # the map-resolution heatmap drawn as wide as the image
    meta = page.inner_text("#detail dl.meta")
    assert "ui-a" in meta and "Version" in meta and "Time" in meta
    assert page.query_selector("#detail table.regions") or "No regions" in page.inner_text("#detail-body")
    assert page.get_attribute(f"#results-table tr[data-id='{first}']", "aria-selected") == "true"
    page.screenshot(path=str(SHOTS / "detail.png"), full_page=False)
    page.click("#detail-next")
    second = page.get_attribute("#results-table tr[data-id] >> nth=1", "data-id")
    page.wait_for_selector(f"#results-table tr[data-id='{second}'][aria-selected=true]")
    page.click("#detail-prev")
    page.wait_for_selector(f"#results-table tr[data-id='{first}'][aria-selected=true]")
    page.keyboard.press("Escape")
    page.wait_for_selector("dialog#detail", state="hidden")
    assert not dialog.evaluate("d => d.open")
    assert page.evaluate("document.activeElement.dataset.id") == first  # focus back on the row it came from


def test_auto_refresh_never_takes_the_keyboard_focus(page, scenario) -> None:
    _batch_on_two_lines(scenario)
    _open_results(page)
    page.focus("#results-table tbody tr[data-id] >> nth=2")
    focused = page.evaluate("document.activeElement.dataset.id")
    page.wait_for_timeout(7000)  # two refreshes
    assert page.evaluate("document.activeElement.dataset.id") == focused
    page.focus("#f-line")
    page.wait_for_timeout(3500)
    assert page.evaluate("document.activeElement.id") == "f-line"


def _open_queue(page, class_name: str, line: str) -> None:  # noqa: ANN001
    """The Review view's queue of a class on a line ("" for every line)."""
    page.click("#tab-review")
    page.wait_for_function("() => document.querySelectorAll('#q-class option').length > 0")
    page.select_option("#q-class", class_name)
    page.select_option("#q-line", line)
    page.click("#queue-filters button[type=submit]")


def test_review_queue_with_keyboard_shortcuts(page, scenario) -> None:
    _batch_on_two_lines(scenario)
    _open_queue(page, scenario["class"], "ui-a")
    item = page.wait_for_selector(f"#queue-item[data-id][data-query='{scenario['class']}/ui-a']")
    order = [item.get_attribute("data-id")] + page.eval_on_selector_all(
        "#queue-list li", "l => l.map(e => e.dataset.id)"
    )
    page.focus("body")
    page.keyboard.press("g")
    page.wait_for_selector("#notice:has-text('Reviewed good')")
    page.wait_for_function("id => document.querySelector('#queue-item').dataset.id !== id", arg=order[0])
    page.keyboard.press("n")
    if len(order) > 2:
        page.wait_for_function("id => document.querySelector('#queue-item').dataset.id === id", arg=order[2])
    page.keyboard.press("d")  # asks for the defect type and note; Enter saves without them
    page.keyboard.press("Enter")
    page.wait_for_selector("#notice:has-text('Reviewed defect')")
    state = scenario["state"]
    table = boto3.resource("dynamodb").Table(state["resources"]["ResultsTable"])
    first = table.get_item(Key={"inspection_id": order[0]}, ConsistentRead=True)["Item"]
    assert first["review"]["verdict"] == "good" and first["review"]["reviewer"] == ENGINEER
    assert first["review"]["reviewer_verified"] is True
    skipped = table.get_item(Key={"inspection_id": order[1]}, ConsistentRead=True)["Item"]
    assert "review" not in skipped
    page.select_option("#a-window", "1440")
    cell = f"#review-agreement tr[data-class='{scenario['class']}'] td:nth-child(2)"
    page.wait_for_function(
        "sel => (document.querySelector(sel) || {}).innerText === '2'", arg=cell
    )  # two reviewed
    page.screenshot(path=str(SHOTS / "review-queue.png"), full_page=True)


def test_phone_width_shows_the_columns_that_matter(page, scenario) -> None:
    _batch_on_two_lines(scenario)
    page.set_viewport_size({"width": 390, "height": 844})
    _open_results(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "sideways scrolling on a phone"
    visible = page.eval_on_selector_all(
        "#results-table thead th", "ths => ths.filter(t => t.offsetParent !== null).map(t => t.innerText)"
    )
    assert {"Time", "Class", "Verdict", "Score"} <= set(visible) and "Key" not in visible
    page.screenshot(path=str(SHOTS / "results-phone.png"), full_page=True)


def test_invalid_file_shows_an_error_message(page, scenario, tmp_path: Path) -> None:
    fake = tmp_path / "notes.png"
    fake.write_text("this is not an image")
    page.set_input_files("#file", str(fake))
    page.select_option("#class", scenario["class"])
    page.click("#run")
    error = page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "not an image" in error.inner_text()
    assert not page.query_selector_all("#outcome .card")


def test_api_errors_are_readable(page, scenario) -> None:
    page.route(
        "**/predict",
        lambda route: route.fulfill(
            status=503, content_type="application/json", body='{"message": "the model is not available"}'
        ),
    )
    page.set_input_files("#file", str(scenario["good"]))
    page.click("#run")
    error = page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "Model unavailable" in error.inner_text()


def test_models_view_lists_versions_and_records_a_decision(page, scenario, retrained_artifact: Path) -> None:
    where = ["--state-dir", scenario["state"]["state_dir"]]
    assert (
        ivadas(
            [
                "register",
                "--artifact",
                str(scenario["artifacts"]["patchcore"]),
                "--model",
                "patchcore",
                *where,
            ]
        )
        == 0
    )
    assert ivadas(["approve", "patchcore-1", "--note", "bench passed", *where]) == 0
    assert ivadas(["deploy", "--model", "patchcore", "--version", "patchcore-1", *where]) == 0
    assert ivadas(["register", "--artifact", str(retrained_artifact), "--model", "patchcore", *where]) == 0
    assert (
        ivadas(
            [
                "register",
                "--artifact",
                str(scenario["artifacts"]["softpatch"]),
                "--model",
                "softpatch",
                *where,
            ]
        )
        == 0
    )
    page.click("#tab-models")
    table = page.wait_for_selector("table.models[data-model='patchcore']", timeout=30_000)
    assert "serving patchcore-1" in table.query_selector("caption").inner_text()
    deployed = table.query_selector("tr[data-version='patchcore-1']")
    assert "deployed" in deployed.inner_text() and "bench passed" in deployed.inner_text()
    assert not deployed.query_selector("button")  # decided already
    pending = table.query_selector("tr[data-version='patchcore-2']")
    status = pending.query_selector(".status")
    assert status.inner_text() == "Awaiting approval"  # plain words, the registry's own in the tooltip
    assert status.get_attribute("title") == "PendingManualApproval"
    assert "ROC curve" in table.query_selector("th abbr.term:text('Image AUROC')").get_attribute("title")
    asked: list[str] = []

    def answer(dialog) -> None:  # noqa: ANN001
        asked.append(dialog.message)
        first_approval = (
            dialog.message.startswith("Approve") and sum(a.startswith("Approve") for a in asked) == 1
        )
        dialog.dismiss() if first_approval else dialog.accept()

    page.on("dialog", answer)
    pending.query_selector("button.reject").click()  # no reason given: refused in the page
    assert "Say why" in page.wait_for_selector("#error:not([hidden])").inner_text()
    page.screenshot(path=str(SHOTS / "models.png"), full_page=True)
    page.fill("#why-softpatch-1", "misses thin scratches")
    page.click("tr[data-version='softpatch-1'] button.reject")
    page.wait_for_selector("tr[data-version='softpatch-1'] .status:text('Rejected')", timeout=30_000)
    assert asked and asked[-1].startswith("Reject softpatch-1?")  # every decision is confirmed first
    page.click("tr[data-version='patchcore-2'] button.approve")
    assert page.get_attribute("tr[data-version='patchcore-2'] .status", "title") == "PendingManualApproval"
    page.click("tr[data-version='patchcore-2'] button.approve")  # dismissed once: nothing was decided
    row = page.wait_for_selector(
        "tr[data-version='patchcore-2']:has(.status:text('Approved'))", timeout=30_000
    )
    assert f"cognito:{ENGINEER}" in row.inner_text()
    assert page.query_selector("#agreement-table")
    versions = {v.name: v for v in _registry_versions(scenario)}
    assert versions["softpatch-1"].metadata["decision_note"] == "misses thin scratches"


def test_models_view_reopens_a_rejected_version_with_its_history(page, scenario, tmp_path: Path) -> None:
    import gzip

    where = ["--state-dir", scenario["state"]["state_dir"]]
    before = {v.name for v in _registry_versions(scenario)}
    artifact = tmp_path / "softpatch-again.tar.gz"  # the same model in other bytes: a new version to decide
    with gzip.open(scenario["artifacts"]["softpatch"]) as src, gzip.GzipFile(artifact, "wb", mtime=1) as out:
        out.write(src.read())
    assert ivadas(["register", "--artifact", str(artifact), "--model", "softpatch", *where]) == 0
    (version,) = {v.name for v in _registry_versions(scenario)} - before
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#tab-models")
    row = f"tr[data-version='{version}']"
    page.wait_for_selector(f"{row} button.approve", timeout=30_000)
    page.fill(f"#why-{version}", "blurry on the new camera")
    page.click(f"{row} button.reject")
    page.wait_for_selector(f"{row} .status:text('Rejected')", timeout=30_000)
    assert not page.query_selector_all(f"{row} button.approve, {row} button.reject")  # decided: none again
    page.click(f"{row} details.history summary")
    assert page.inner_text(f"{row} details.history summary") == "History (1)"
    entry = page.inner_text(f"{row} details.history li[data-what='Rejected']")
    assert "blurry on the new camera" in entry and ENGINEER in entry
    page.click(f"{row} button.reopen")  # no reason given: refused in the page
    assert "Say why" in page.wait_for_selector("#error:not([hidden])").inner_text()
    page.fill(f"#why-{version}", "camera refocused")
    page.click(f"{row} button.reopen")
    page.wait_for_selector(f"{row} .status:text('Awaiting approval')", timeout=30_000)
    assert page.query_selector(f"{row} button.approve") and not page.query_selector(f"{row} button.reopen")
    assert page.inner_text(f"{row} details.history summary") == "History (2)"
    page.click(f"{row} details.history summary")
    what = page.eval_on_selector_all(f"{row} details.history li", "l => l.map(e => e.dataset.what)")
    assert what == ["Rejected", "Reopened"]
    assert "camera refocused" in page.inner_text(f"{row} details.history li[data-what='Reopened']")
    page.screenshot(path=str(SHOTS / "models-history.png"), full_page=True)


def test_models_view_fits_a_phone(page, scenario) -> None:
    def one_pending(route) -> None:  # noqa: ANN001
        """The registry's answer with its newest version still pending (the buttons to check)."""
        view = route.fetch().json()
        newest = next(v for m in view["models"].values() for v in m["versions"])
        newest.update(status="PendingManualApproval", decided_at=None)
        route.fulfill(json=view)

    page.route("**/models", one_pending)
    page.set_viewport_size({"width": 390, "height": 844})
    page.click("#tab-models")
    approve = page.wait_for_selector("#models button.approve", timeout=30_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "sideways scrolling on a phone"
    for button in (approve, page.query_selector("#models button.reject")):
        box = button.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    page.screenshot(path=str(SHOTS / "models-phone.png"), full_page=True)


def _registry_versions(scenario: dict) -> list:
    from ivadas_functions.registry import versions

    sm = boto3.client("sagemaker")
    return versions(sm, "local", "patchcore") + versions(sm, "local", "softpatch")


def test_tablet_width_and_keyboard(page) -> None:
    page.set_viewport_size({"width": 768, "height": 1024})
    page.focus("#tab-inspect")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#tab-results", "aria-selected") == "true"
    assert page.is_visible("#results-table")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 768, "horizontal scrolling at tablet width"


def test_large_image_is_downscaled_before_upload(page, scenario, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    big = tmp_path / "big.png"  # 2600 x 2600 noise: about 20 MB, far over the API's payload limit
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (2600, 2600, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 6 * 1024 * 1024
    page.set_input_files("#file", str(big))
    page.select_option("#class", scenario["class"])
    page.click("#run")
    page.wait_for_selector("#outcome .card", timeout=90_000)
    notice = page.inner_text("#notice")
    assert "scaled down from 2600x2600" in notice
    assert page.is_hidden("#error")


# ------------------------------------------------------------------------------------------ sign-in


def test_sign_in_refuses_a_wrong_password_then_signs_in_and_out(signed_out, scenario) -> None:
    pg = signed_out
    pg.wait_for_selector("body[data-ready='signin']", timeout=30_000)
    assert pg.is_hidden("main") and pg.is_hidden("nav")
    pg.fill("#si-user", ENGINEER)
    pg.fill("#si-password", "Not-The-Password-1")
    pg.click("#si-submit")
    pg.wait_for_selector("#signin-reason:has-text('Wrong user name or password')")
    assert pg.is_hidden("main")
    pg.screenshot(path=str(SHOTS / "sign-in.png"), full_page=True)
    pg.set_viewport_size({"width": 390, "height": 844})
    assert pg.evaluate("document.documentElement.scrollWidth") <= 390, "sideways scrolling on a phone"
    pg.screenshot(path=str(SHOTS / "sign-in-phone.png"), full_page=True)
    pg.set_viewport_size({"width": 1440, "height": 900})
    sign_in(pg, ENGINEER)
    assert ENGINEER in pg.inner_text("#whoami") and "ml-engineers" in pg.inner_text("#whoami")
    token = pg.evaluate("JSON.parse(sessionStorage.getItem('ivadas.session')).idToken")
    config = pg.evaluate("fetch('config.json').then(r => r.text())")
    assert scenario["state"]["api_key"] not in config and token not in config
    pg.click("#signout")
    pg.wait_for_selector("body[data-ready='signin']")
    assert pg.is_hidden("main") and pg.evaluate("sessionStorage.getItem('ivadas.session')") is None


def test_requests_carry_the_id_token_not_the_key(signed_out, scenario) -> None:
    sent = []
    signed_out.on("request", lambda r: sent.append(r.headers) if "/classes" in r.url else None)
    sign_in(signed_out, ENGINEER)
    assert sent and all(h.get("authorization", "").count(".") == 2 for h in sent)
    assert not any("x-api-key" in h for h in sent)


def test_an_operator_reviews_but_sees_no_decisions(signed_out, scenario) -> None:
    sign_in(signed_out, OPERATOR)
    assert signed_out.is_visible("#tab-review")
    signed_out.click("#tab-models")
    signed_out.wait_for_selector("#approvals-note:has-text('ml-engineers')", timeout=30_000)
    assert not signed_out.query_selector_all("#models button.approve, #models button.reject")
    status = signed_out.evaluate(
        """async () => {
          const s = JSON.parse(sessionStorage.getItem('ivadas.session'));
          const r = await fetch('/models/patchcore-1/approve', {method: 'POST', body: '{}',
            headers: {Authorization: s.idToken, 'Content-Type': 'application/json'}});
          return [r.status, (await r.json()).type];
        }"""
    )
    assert status == [403, "forbidden"]  # the API refuses what the page hides


_EDIT_SESSION = """how => {
  const s = JSON.parse(sessionStorage.getItem('ivadas.session'));
  if (how === 'expire') { s.expiresAt = Date.now() - 1000; delete s.refreshToken; }  // and no way to renew it
  if (how === 'forge') {  // one signature character changed: the page still takes it for valid
    const t = s.idToken;
    s.idToken = t.slice(0, -2) + (t.at(-2) === 'A' ? 'B' : 'A') + t.at(-1);
  }
  sessionStorage.setItem('ivadas.session', JSON.stringify(s));
}"""


def test_an_expired_or_forged_session_asks_to_sign_in_again(signed_out, scenario) -> None:
    pg = signed_out
    sign_in(pg, ENGINEER)
    pg.evaluate(_EDIT_SESSION, "expire")
    pg.reload()
    pg.wait_for_selector("#signin-reason:has-text('expired')", timeout=30_000)
    sign_in(pg, ENGINEER)
    pg.evaluate(_EDIT_SESSION, "forge")
    pg.reload()
    pg.wait_for_selector("#signin-reason:has-text('no longer valid')", timeout=30_000)
    assert pg.is_hidden("main")


def test_a_session_is_refreshed_before_it_expires_and_a_reload_keeps_the_view(signed_out, scenario) -> None:
    """The app client's real token lifetime shortened to 40 s (the local moto honours it: moto_extensions):
    the console renews the id token by itself at half its life, the old one really expires and is refused,
    and a reload keeps the session and the view."""
    idp, resources = boto3.client("cognito-idp"), scenario["state"]["resources"]
    ids = {"UserPoolId": resources["UserPool"], "ClientId": resources["UserPoolClient"]}
    kept = idp.describe_user_pool_client(**ids)["UserPoolClient"]
    short = {"IdToken": "seconds", "AccessToken": "seconds", "RefreshToken": "hours"}
    idp.update_user_pool_client(**ids, IdTokenValidity=40, AccessTokenValidity=40, TokenValidityUnits=short)
    try:
        pg = signed_out
        sign_in(pg, ENGINEER)
        before = pg.evaluate("JSON.parse(sessionStorage.getItem('ivadas.session'))")
        assert before["refreshToken"], "no refresh token kept"
        assert before["expiresAt"] - before["issuedAt"] == 40_000  # the client's lifetime, not moto's hour
        pg.click("#tab-models")
        pg.wait_for_selector("table.models", timeout=30_000)
        pg.wait_for_function(  # renewed by the page itself, about 20 s in
            "old => JSON.parse(sessionStorage.getItem('ivadas.session')).idToken !== old",
            arg=before["idToken"],
            timeout=40_000,
        )
        after = pg.evaluate("JSON.parse(sessionStorage.getItem('ivadas.session'))")
        assert after["expiresAt"] > before["expiresAt"] and after["issuedAt"] < before["expiresAt"]
        pg.wait_for_timeout(
            max(0, before["expiresAt"] - time.time() * 1000) + 1500
        )  # the first token expired
        status = pg.evaluate(
            """async t => (await fetch('/models', {headers: {Authorization: t}})).status""", before["idToken"]
        )
        assert status == 401  # it really expired
        pg.reload()
        pg.wait_for_selector("body[data-ready='true']", timeout=30_000)
        assert pg.get_attribute("#tab-models", "aria-selected") == "true"  # the same view, still signed in
        pg.wait_for_selector("table.models", timeout=30_000)
        assert pg.is_hidden("#signin")
    finally:
        idp.update_user_pool_client(
            **ids, **{k: kept[k] for k in ("IdTokenValidity", "AccessTokenValidity", "TokenValidityUnits")}
        )


def test_first_sign_in_with_a_temporary_password_sets_a_new_one(signed_out, scenario) -> None:
    idp = boto3.client("cognito-idp")
    pool = scenario["state"]["resources"]["UserPool"]
    idp.admin_create_user(UserPoolId=pool, Username="newbie", TemporaryPassword="Temp-Passw0rd-123!",
                          MessageAction="SUPPRESS")  # fmt: skip
    idp.admin_add_user_to_group(UserPoolId=pool, Username="newbie", GroupName="operators")
    pg = signed_out
    pg.wait_for_selector("body[data-ready='signin']", timeout=30_000)
    pg.fill("#si-user", "newbie")
    pg.fill("#si-password", "Temp-Passw0rd-123!")
    pg.click("#si-submit")
    pg.wait_for_selector("#si-step:not([hidden])")
    assert "New password" in pg.inner_text("#si-answer-label")
    pg.fill("#si-answer", "Chosen-Passw0rd-456!")
    pg.click("#si-submit")
    pg.wait_for_selector("body[data-ready='true']", timeout=30_000)
    assert "newbie" in pg.inner_text("#whoami")


def _inspected(scenario, keys: list[str]) -> None:  # noqa: ANN001
    table = boto3.resource("dynamodb").Table(scenario["state"]["resources"]["ResultsTable"])
    for _ in range(120):
        stored = {i["key"] for i in table.scan(ConsistentRead=True)["Items"]}
        if set(keys) <= stored:
            return
        time.sleep(1)
    raise AssertionError(f"not inspected: {set(keys) - stored}")


def _small_wide_image(scenario, tmp_path: Path) -> Path:  # noqa: ANN001
    from PIL import Image

    small = tmp_path / "small-wide.png"
    Image.open(scenario["defect"]).convert("RGB").resize((240, 150)).save(small)
    return small


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)])
def test_results_show_the_score_distribution_per_class(page, scenario, width, height) -> None:
    keys = _batch_on_two_lines(scenario)
    page.set_viewport_size({"width": width, "height": height})
    _open_results(page, "ui-a")
    hist = page.wait_for_selector(f"#histograms svg[data-class='{scenario['class']}']")
    page.wait_for_function(
        "h => [...h.querySelectorAll('rect')].reduce((a, r) => a + Number(r.dataset.n), 0) "
        "=== Number(h.dataset.n)",
        arg=hist,
    )
    assert int(hist.get_attribute("data-n")) >= len(
        keys["ui-a"]
    )  # every score of the filter, reviewed or not
    assert hist.query_selector("line.threshold") and "reviewed" in hist.get_attribute("aria-label")
    assert page.evaluate("document.documentElement.scrollWidth") <= width


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)])
def test_detail_panels_are_one_size_and_its_header_stays(page, scenario, tmp_path, width, height) -> None:
    key = f"ui-small/{scenario['class']}/small-{width}.png"
    boto3.client("s3").put_object(
        Bucket=scenario["state"]["resources"]["InboxBucket"],
        Key=key,
        Body=_small_wide_image(scenario, tmp_path).read_bytes(),
    )
    _inspected(scenario, [key])
    page.set_viewport_size({"width": width, "height": height})
    _open_results(page, "ui-small")
    page.click(f"#results-table tr:has(td.key:text-is('{key}'))")
    page.wait_for_selector("dialog#detail[open] .side-by-side figure")
    panels = "#detail .side-by-side img.plain, #detail .side-by-side .stack img:not(.heat)"
    page.wait_for_function(f"[...document.querySelectorAll('{panels}')].every(i => i.complete && i.width)")
    boxes = page.eval_on_selector_all(
        panels, "imgs => imgs.map(i => { const r = i.getBoundingClientRect(); return [r.width, r.height]; })"
    )
    assert len(boxes) == 3
    for w, h in boxes:  # image, heatmap and overlay: the same size
        assert abs(w - boxes[0][0]) <= 2 and abs(h - boxes[0][1]) <= 2, boxes
    page.eval_on_selector("dialog#detail", "d => { d.scrollTop = d.scrollHeight; }")
    page.wait_for_timeout(200)
    for button in ("#detail-prev", "#detail-next", "#detail-close"):
        on_top = page.eval_on_selector(
            button,
            """b => { const r = b.getBoundingClientRect();
                      return r.top >= 0 && r.bottom <= innerHeight &&
                             document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) === b; }""",
        )
        assert on_top, f"{button} scrolled out of view"
    if width < 700:
        page.screenshot(path=str(SHOTS / "detail-phone.png"), full_page=False)
    page.keyboard.press("Escape")


def test_one_notice_at_a_time_and_the_review_buttons_never_move(page, scenario) -> None:
    _batch_on_two_lines(scenario)
    page.set_viewport_size({"width": 1440, "height": 900})
    _open_queue(page, scenario["class"], "ui-b")
    page.wait_for_selector("#queue-item[data-id] #q-good")
    before = page.query_selector("#q-good").bounding_box()
    page.route("**/results/*/review", lambda route: route.fulfill(status=503, body='{"message": "busy"}'))
    page.focus("body")
    page.keyboard.press("g")
    page.wait_for_selector("#error:not([hidden])")
    assert page.query_selector("#q-good").bounding_box() == before  # an error moves nothing
    page.unroute("**/results/*/review")
    first = page.get_attribute("#queue-item", "data-id")
    page.keyboard.press("g")
    page.wait_for_selector("#notice:has-text('Reviewed good')")
    page.wait_for_function("id => document.querySelector('#queue-item').dataset.id !== id", arg=first)
    assert page.is_hidden("#error"), "the error stayed beside the newer notice"
    assert page.query_selector("#q-good").bounding_box() == before  # nor does a notice


def test_keys_with_dot_segments_keep_their_thumbnails(page, scenario) -> None:
    key = f"ui-dots/{scenario['class']}/sub/../dots-0.png"
    boto3.client("s3").put_object(
        Bucket=scenario["state"]["resources"]["InboxBucket"], Key=key, Body=scenario["good"].read_bytes()
    )
    _inspected(scenario, [key])
    _open_results(page, "ui-dots")
    thumb = page.wait_for_selector(f"#results-table tr:has(td.key:text-is('{key}')) td.c-img img")
    page.wait_for_function("i => i.complete", arg=thumb)
    assert thumb.evaluate("i => i.naturalWidth") > 0, thumb.get_attribute("src")


def test_api_answers_name_the_ui_origin_not_any(page, scenario) -> None:
    origin = scenario["state"]["ui_url"].rstrip("/")
    answer = page.request.get(origin + "/results", headers={"Origin": origin})
    assert answer.status == 401
    assert answer.headers.get("access-control-allow-origin") == origin  # a 401 too, and never "*"


def test_a_link_to_a_filter_and_a_result_survives_a_reload(page, scenario) -> None:
    _batch_on_two_lines(scenario)
    _open_results(page, "ui-a")
    page.select_option("#f-size", "50")
    page.click("#filters button[type=submit]")
    page.wait_for_function("() => location.hash.includes('size=50') && location.hash.includes('line=ui-a')")
    first = page.get_attribute("#results-table tbody tr[data-id] >> nth=0", "data-id")
    page.click("#results-table tbody tr[data-id] >> nth=0")
    page.wait_for_selector("dialog#detail[open]")
    page.wait_for_function("id => location.hash.includes('id=' + id)", arg=first)
    page.reload()  # the session is this tab's: the same view comes back, the result open
    page.wait_for_selector("body[data-ready='true']", timeout=30_000)
    page.wait_for_selector("dialog#detail[open]")
    page.wait_for_selector(f"#results-table tr[data-id='{first}'][aria-selected=true]")
    assert page.get_attribute("#tab-results", "aria-selected") == "true"
    assert page.input_value("#f-line") == "ui-a" and page.input_value("#f-size") == "50"
    page.keyboard.press("Escape")
    page.wait_for_function("() => !location.hash.includes('id=') && location.hash.includes('line=ui-a')")


def test_review_shows_image_and_overlay_counts_down_and_takes_back(page, scenario) -> None:
    _batch_on_two_lines(scenario)
    page.set_viewport_size({"width": 1440, "height": 900})
    _open_queue(page, scenario["class"], "")
    page.wait_for_selector(f"#queue-item[data-id][data-query='{scenario['class']}/'] #q-good")  # this queue's
    for shown in ("#queue-item figure img.plain", "#queue-item .stack"):  # image and overlay, loaded
        page.wait_for_selector(shown, state="visible")
    left = int(page.inner_text("#queue-remaining").split()[0])
    before = page.query_selector("#q-good").bounding_box()
    reviewed = page.get_attribute("#queue-item", "data-id")
    page.focus("body")
    page.keyboard.press("g")
    page.wait_for_function("id => document.querySelector('#queue-item').dataset.id !== id", arg=reviewed)
    assert int(page.inner_text("#queue-remaining").split()[0]) == left - 1
    assert page.query_selector("#q-good").bounding_box() == before
    page.keyboard.press("u")  # undo: the review withdrawn, the result back in the queue and the count up
    page.wait_for_selector(f"#queue-item[data-id='{reviewed}']")
    page.wait_for_function(
        "n => parseInt(document.querySelector('#queue-remaining').innerText) === n", arg=left
    )
    assert page.query_selector("#q-good").bounding_box() == before
    page.eval_on_selector("#q-zoom", "s => { s.value = '2'; s.dispatchEvent(new Event('input')); }")
    assert "scale(2)" in page.get_attribute("#queue-item figure img.plain", "style")
    page.screenshot(path=str(SHOTS / "review-queue.png"), full_page=True)
    page.keyboard.press("d")
    page.keyboard.press("Enter")
    page.wait_for_selector("#notice:has-text('Reviewed defect')")
    table = boto3.resource("dynamodb").Table(scenario["state"]["resources"]["ResultsTable"])
    item = table.get_item(Key={"inspection_id": reviewed}, ConsistentRead=True)["Item"]
    assert item["review"]["verdict"] == "defect"
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(SHOTS / "review-phone.png"), full_page=True)


def _flagged_in_the_inbox(scenario) -> dict:  # noqa: ANN001
    """The scenario's defective image (bottle: a real broken bottle) inspected through the inbox on line
    ui-why: its stored result item, flagged, with regions and explanations."""
    key = f"ui-why/{scenario['class']}/flagged-{scenario['defect'].name}"
    boto3.client("s3").put_object(
        Bucket=scenario["state"]["resources"]["InboxBucket"], Key=key, Body=scenario["defect"].read_bytes()
    )
    _inspected(scenario, [key])
    table = boto3.resource("dynamodb").Table(scenario["state"]["resources"]["ResultsTable"])
    (item,) = [i for i in table.scan(ConsistentRead=True)["Items"] if i["key"] == key]
    assert item["is_anomaly"] and item["regions"] and item["explanations"], item.get("explanations_note")
    return item


def _outlines_on_the_image(page, scope: str, regions: int) -> None:  # noqa: ANN001
    """The plain image in `scope` has one numbered outline per region, each inside the image."""
    image = f"{scope} .outlined img.plain"
    page.wait_for_function(
        "sel => { const i = document.querySelector(sel); return i && i.complete && i.width; }", arg=image
    )
    boxes = page.eval_on_selector_all(
        f"{scope} .outlined .outlines .box",
        """bs => bs.map(b => { const r = b.getBoundingClientRect();
                               return [r.x, r.y, r.right, r.bottom, b.innerText]; })""",
    )
    frame = page.eval_on_selector(
        image, "i => { const r = i.getBoundingClientRect(); return [r.x, r.y, r.right, r.bottom]; }"
    )
    assert len(boxes) == regions, boxes
    assert [b[4] for b in boxes] == [str(n + 1) for n in range(regions)]
    for x0, y0, x1, y1, _ in boxes:
        assert frame[0] - 5 <= x0 < x1 <= frame[2] + 5 and frame[1] - 5 <= y0 < y1 <= frame[3] + 5, (
            boxes,
            frame,
        )
        assert x1 - x0 >= 2 and y1 - y0 >= 2


def _explained(page, scope: str) -> None:  # noqa: ANN001
    """`scope` shows a flagged region's defect crop beside its nearest good patch, image id and distance."""
    pair = page.wait_for_selector(f"{scope} .explanations .explanation")
    assert re.fullmatch(r"train/good/\d+\.png", pair.query_selector(".image-id").inner_text())
    assert re.search(r"distance \d+\.\d\d", pair.inner_text())
    good = f"{scope} .explanation:first-of-type img.good-crop"
    page.wait_for_function(
        "sel => { const i = document.querySelector(sel); return i && i.complete; }", arg=good
    )
    assert page.eval_on_selector(good, "i => i.naturalWidth") > 0, "the nearest good crop did not load"
    defect = pair.query_selector(".defect-crop")
    assert "url(" in defect.evaluate("d => getComputedStyle(d).backgroundImage")
    assert defect.bounding_box()["width"] > 20


def _open_flagged_in_the_queue(page, scenario, item: dict) -> None:  # noqa: ANN001
    _open_queue(page, scenario["class"], "ui-why")
    page.wait_for_selector(
        f"#queue-item[data-id='{item['inspection_id']}'][data-query='{scenario['class']}/ui-why']"
    )


def _open_flagged_in_the_detail(page, item: dict) -> None:  # noqa: ANN001
    _open_results(page, "ui-why")
    page.click(f"#results-table tr[data-id='{item['inspection_id']}']")
    page.wait_for_selector("dialog#detail[open] .side-by-side figure")


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)])
def test_regions_are_outlined_on_the_image_in_review_and_detail(page, scenario, width, height) -> None:
    item = _flagged_in_the_inbox(scenario)
    page.set_viewport_size({"width": width, "height": height})
    _open_flagged_in_the_queue(page, scenario, item)
    _outlines_on_the_image(page, "#queue-item", len(item["regions"]))
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "sideways scrolling"
    _open_flagged_in_the_detail(page, item)
    _outlines_on_the_image(page, "#detail", len(item["regions"]))
    page.keyboard.press("Escape")


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)])
def test_a_stored_flagged_result_is_explained_in_review_and_detail(page, scenario, width, height) -> None:
    item = _flagged_in_the_inbox(scenario)
    kept = item["explanations"][0]["nearest_good"]
    assert kept["crop_key"] and "crop_png_base64" not in kept  # the crop is an object, not bytes in the item
    page.set_viewport_size({"width": width, "height": height})
    _open_flagged_in_the_queue(page, scenario, item)
    _explained(page, "#queue-item")
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "sideways scrolling"
    _open_flagged_in_the_detail(page, item)
    _explained(page, "#detail")
    page.keyboard.press("Escape")


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)])
def test_undo_withdraws_the_last_review_and_the_result_is_queued_again(page, scenario, width, height) -> None:
    _batch_on_two_lines(scenario)
    page.set_viewport_size({"width": width, "height": height})
    _open_queue(page, scenario["class"], "ui-a")
    page.wait_for_selector(f"#queue-item[data-id][data-query='{scenario['class']}/ui-a'] #q-good")
    assert page.is_disabled("#q-undo")  # nothing reviewed here yet
    left = int(page.inner_text("#queue-remaining").split()[0])
    reviewed = page.get_attribute("#queue-item", "data-id")
    page.focus("body")
    page.keyboard.press("g")
    page.wait_for_function("id => document.querySelector('#queue-item').dataset.id !== id", arg=reviewed)
    table = boto3.resource("dynamodb").Table(scenario["state"]["resources"]["ResultsTable"])
    assert "review" in table.get_item(Key={"inspection_id": reviewed}, ConsistentRead=True)["Item"]
    page.keyboard.press("u")
    page.wait_for_selector("#notice:has-text('withdrawn')")
    page.wait_for_selector(f"#queue-item[data-id='{reviewed}']")
    assert int(page.inner_text("#queue-remaining").split()[0]) == left
    item = table.get_item(Key={"inspection_id": reviewed}, ConsistentRead=True)["Item"]
    assert (
        "review" not in item and item["queue_class"] == scenario["class"]
    )  # unreviewed, in the queue's index
    from boto3.dynamodb.conditions import Key

    history = (
        boto3.resource("dynamodb")
        .Table(scenario["state"]["resources"]["ReviewsTable"])
        .query(KeyConditionExpression=Key("inspection_id").eq(reviewed), ConsistentRead=True)["Items"]
    )
    assert history and history[-1]["withdrawn_by"] == ENGINEER  # recorded, not erased
    page.click("#queue-filters button[type=submit]")  # the queue as the API serves it has it again
    page.wait_for_function(
        """id => document.querySelector('#queue-item').dataset.id === id ||
                 [...document.querySelectorAll('#queue-list li')].some(l => l.dataset.id === id)""",
        arg=reviewed,
    )
    assert page.is_disabled("#q-undo")


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)])
def test_a_defect_is_marked_with_a_type_and_a_note_by_keyboard(page, scenario, width, height) -> None:
    _batch_on_two_lines(scenario)
    item = _flagged_in_the_inbox(scenario)
    page.set_viewport_size({"width": width, "height": height})
    _open_queue(page, scenario["class"], "ui-b")
    page.wait_for_selector(f"#queue-item[data-id][data-query='{scenario['class']}/ui-b'] #q-good")
    first = page.get_attribute("#queue-item", "data-id")
    page.focus("body")
    page.keyboard.press("d")
    page.wait_for_selector("#q-defect-form:not([hidden])")
    assert page.evaluate("document.activeElement.id") == "q-type"
    page.keyboard.type(f"broken neck {width}")  # a new type, free text
    page.keyboard.press("Tab")
    page.keyboard.type("chipped at the rim")
    page.keyboard.press("Enter")
    page.wait_for_selector("#notice:has-text('Reviewed defect')")
    page.wait_for_selector(f"#q-last[data-id='{first}']:has-text('broken neck {width}')")
    assert "chipped at the rim" in page.inner_text("#q-last")  # the queue shows the type and note it saved
    table = boto3.resource("dynamodb").Table(scenario["state"]["resources"]["ResultsTable"])
    review = table.get_item(Key={"inspection_id": first}, ConsistentRead=True)["Item"]["review"]
    assert (review["verdict"], review["defect_type"], review["note"]) == (
        "defect",
        f"broken neck {width}",
        "chipped at the rim",
    )
    # the flagged bottle: the class's types are offered, numbered; 1-9 picks one, Enter saves
    _open_flagged_in_the_queue(page, scenario, item)
    page.focus("body")
    page.keyboard.press("d")
    pick = page.wait_for_selector(f"#q-defect-form button[data-type='broken neck {width}']")
    page.keyboard.press(pick.inner_text().split()[0])
    assert page.input_value("#q-type") == f"broken neck {width}"
    assert page.evaluate("document.activeElement.id") == "q-note"
    page.keyboard.type("crack from the rim down")
    shot = "review-defect.png" if width > 700 else "review-defect-phone.png"
    page.screenshot(path=str(SHOTS / shot), full_page=True)  # outlines, the type picked, the note
    page.keyboard.press("Enter")
    page.wait_for_selector(f"#q-last[data-id='{item['inspection_id']}']:has-text('broken neck {width}')")
    _open_flagged_in_the_detail(page, item)  # the detail dialog shows them too
    page.wait_for_selector(f"#detail dl.meta dd:has-text('defect (broken neck {width}) by {ENGINEER}')")
    assert f"defect (broken neck {width})" in page.inner_text("#detail ol.history")
    page.keyboard.press("Escape")
    page.click("#tab-review")
    page.keyboard.press("u")  # withdrawn again: the flagged bottle stays queued for the other tests
    page.wait_for_selector("#notice:has-text('withdrawn')")


def _new_version(scenario: dict, model: str, tmp_path: Path, tag: int) -> str:
    """A new approved version of `model`: its scenario artifact in other gzip bytes (the same model)."""
    import gzip

    where = ["--state-dir", scenario["state"]["state_dir"]]
    before = {v.name for v in _registry_versions(scenario)}
    artifact = tmp_path / f"{model}-{tag}.tar.gz"
    with gzip.open(scenario["artifacts"][model]) as src, gzip.GzipFile(artifact, "wb", mtime=tag) as out:
        out.write(src.read())
    assert ivadas(["register", "--artifact", str(artifact), "--model", model, *where]) == 0
    (version,) = {v.name for v in _registry_versions(scenario)} - before
    assert ivadas(["approve", version, "--note", "for the deploy buttons", *where]) == 0
    return version


def _in_service(page, model: str, version: str) -> None:  # noqa: ANN001
    """Wait until the Models view shows `model`'s endpoint updating, then in service with `version`."""
    page.wait_for_selector(f".endpoint-state[data-model='{model}'][data-state='updating']", timeout=30_000)
    page.wait_for_selector(f".endpoint-state[data-model='{model}'][data-state='in_service']", timeout=180_000)
    caption = page.inner_text(f"table.models[data-model='{model}'] caption")
    assert f"serving {version}" in caption, caption


def _card_of(version) -> tuple[str, str]:  # noqa: ANN001
    bucket, key = version.metrics_url.removeprefix("s3://").split("/", 1)
    return bucket, key


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)])
def test_models_view_deploys_rolls_back_and_promotes_with_confirmation(
    page, scenario, tmp_path: Path, width: int, height: int
) -> None:
    import json

    page.set_viewport_size({"width": width, "height": height})
    phone = width < 700
    first = _new_version(scenario, "patchcore", tmp_path, 11 + width)
    second = _new_version(scenario, "patchcore", tmp_path, 12 + width)
    asked: list[str] = []

    def answer(dialog) -> None:  # noqa: ANN001 - the first question of each kind is declined: nothing happens
        asked.append(dialog.message)
        kind = dialog.message.split(" ", 1)[0]
        dialog.dismiss() if sum(a.startswith(kind) for a in asked) == 1 else dialog.accept()

    page.on("dialog", answer)
    page.click("#tab-models")
    endpoint = "ivadas-local-patchcore"
    for version in (first, second):  # each deploy asks first, naming the version and the endpoint
        deploy = page.wait_for_selector(f"tr[data-version='{version}'] button.deploy", timeout=30_000)
        deploy.click()  # (declined the first time)
        assert asked and asked[-1].startswith(f"Deploy {version} to endpoint {endpoint}?"), asked
        if sum(a.startswith("Deploy") for a in asked) == 1:  # declined: nothing started
            assert not page.query_selector(".endpoint-state[data-state='updating']")
            deploy.click()
        _in_service(page, "patchcore", version)
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "sideways scrolling"
    if phone:
        page.screenshot(path=str(SHOTS / "models-deploy-phone.png"), full_page=True)
    else:
        page.screenshot(path=str(SHOTS / "models-deploy.png"), full_page=True)
    back = page.wait_for_selector(".endpoint-state[data-model='patchcore'] button.rollback", timeout=30_000)
    assert back.inner_text() == f"Roll back to {first}"
    box = back.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= width, box
    back.click()  # declined
    assert asked[-1] == f"Roll endpoint {endpoint} back from {second} to {first}?"
    page.click(".endpoint-state[data-model='patchcore'] button.rollback")
    _in_service(page, "patchcore", first)

    # Promote: the gate's verdict first, Confirm only when it passes. The candidates' evidence is arranged:
    # one card no worse than production's, one with recall dropped, every reviewed escape scored as caught.
    s3 = boto3.client("s3")
    versions = {v.name: v for v in _registry_versions(scenario)}
    production = s3.get_object(Bucket=_card_of(versions[first])[0], Key=_card_of(versions[first])[1])[
        "Body"
    ].read()
    good, worse = (_new_version(scenario, "softpatch", tmp_path, t + width) for t in (21, 22))
    versions = {v.name: v for v in _registry_versions(scenario)}
    doc = json.loads(production)
    s3.put_object(Bucket=_card_of(versions[good])[0], Key=_card_of(versions[good])[1], Body=production)
    for card in doc["classes"].values():
        card["metrics"]["recall_at_threshold"] = (card["metrics"].get("recall_at_threshold") or 1.0) - 0.2
    s3.put_object(
        Bucket=_card_of(versions[worse])[0], Key=_card_of(versions[worse])[1], Body=json.dumps(doc).encode()
    )
    from ivadas_functions.promotion import escapes_key

    for class_name in doc["classes"]:
        for candidate in (good, worse):
            scored = {"class_name": class_name, "escapes": 10_000, "versions": {candidate: {"forgotten": []}}}
            key = escapes_key("local", class_name, first, candidate)
            s3.put_object(Bucket=_card_of(versions[first])[0], Key=key, Body=json.dumps(scored).encode())
    page.click("#tab-models")  # the view again, with the new versions
    page.wait_for_selector(f"tr[data-version='{worse}'] button.promote", timeout=30_000).click()
    dialog = page.wait_for_selector("dialog#promote-dialog[open]")
    page.wait_for_selector("#promote-verdict .gate-verdict[data-verdict='refused']", timeout=30_000)
    assert "recall_at_threshold" in page.inner_text("#promote-verdict ul.refusals")
    assert f"Promote {worse} to {endpoint}?" == page.inner_text("#promote-title")
    assert not page.is_visible("#promote-confirm")  # a refusing gate offers no Confirm
    page.click("#promote-cancel")
    page.click(f"tr[data-version='{good}'] button.promote")
    page.wait_for_selector("#promote-verdict .gate-verdict[data-verdict='passed']", timeout=30_000)
    assert "model cards: no metric worse" in page.inner_text("#promote-verdict ul.checked")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    box = dialog.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= width, box
    if not phone:
        page.screenshot(path=str(SHOTS / "models-promote.png"), full_page=False)
    page.click("#promote-confirm")
    _in_service(page, "patchcore", good)
    assert "(promoted)" in page.inner_text("table.models[data-model='patchcore'] caption")
    assert rollout_record(scenario)["deployed_by"] == f"cognito:{ENGINEER}"


def rollout_record(scenario: dict) -> dict:  # noqa: ARG001 - the scenario's stack is the one boto3 points at
    from ivadas_functions.registry import deployment

    return deployment(boto3.client("ssm"), "local", "patchcore")
