"""The web app in real Chromium (Debian's /usr/bin/chromium driven by Playwright) against a live
`uvicorn` server on a free loopback port. Screenshots go to artifacts/web/ (gitignored)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakes import AWKWARD_IDS, DUPLICATE, QUERY_ID, awkward_catalog, outfit_photo, png_bytes

CHROMIUM = os.environ.get("LOOKALIKE_CHROMIUM", "/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)), reason=f"no Chromium at {CHROMIUM}"),
]
playwright_api = pytest.importorskip("playwright.sync_api")
uvicorn = pytest.importorskip("uvicorn")

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "artifacts" / "web"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
TIMEOUT = 30_000  # ms: a shared 2-core box can be slow; nothing here is timed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(app):
    """``app`` served by uvicorn in a thread on a free loopback port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    live = uvicorn.Server(config)
    thread = threading.Thread(target=live.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not live.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    live.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(web_home):
    from lookalike.api import create_app

    with live_server(create_app("shapes", home=web_home)) as url:
        yield url


@pytest.fixture(scope="module")
def awkward_server(tmp_path_factory, shapes_folder):
    """The app on fakes.awkward_catalog: ids with '/', route words, space, %, ?, #, unicode."""
    from lookalike.api import create_app

    home = tmp_path_factory.mktemp("awkward-web")
    awkward_catalog(home, shapes_folder)
    with live_server(create_app("awkward", home=home)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


def shot(pg, name: str) -> None:
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def open_app(pg, server: str, route: str = "#/") -> None:
    pg.goto(f"{server}/{route}")


def card_ids(pg, selector: str) -> list[str]:
    return pg.locator(f"{selector} .card").evaluate_all("cards => cards.map(c => c.dataset.id)")


def test_grid_then_item_page_shows_similar_items_and_goes_with(page, server):
    open_app(page, server)
    page.wait_for_selector(".grid .card img")
    assert page.locator(".grid .card").count() == 48  # one page of 55 items
    assert "page 1 of 2" in page.locator(".pager").inner_text()
    shot(page, "grid")
    first = page.locator(".grid .card").first
    item_id = first.get_attribute("data-id")
    first.click()
    page.wait_for_selector(".item-info h2")
    assert page.locator(".item-info .muted").inner_text() == item_id
    page.wait_for_selector(".grid .card .score")
    similar = card_ids(page, ".grid")
    assert len(similar) == 12 and item_id not in similar
    scores = [float(s) for s in page.locator(".grid .card .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    page.wait_for_selector("text=Goes with")
    assert page.locator(".row-section").count() == 8  # one row per other category
    shot(page, "item")


def test_ids_that_look_like_routes_open_their_own_page(page, awkward_server):
    for item in AWKWARD_IDS:
        open_app(page, awkward_server)
        page.wait_for_selector(".grid .card img")
        page.locator(".grid .card").nth(card_ids(page, ".grid").index(item)).click()  # the app builds the URL
        page.wait_for_selector(".item-info .muted")
        assert page.locator(".item-info .muted").inner_text() == item
        # the item's own picture (image route) and its neighbours (similar route, thumbnails) load
        page.wait_for_function("() => { const im = document.querySelector('img.hero');"
                               " return im && im.complete && im.naturalWidth > 0; }")
        page.wait_for_selector(".grid .card .score")
        assert item not in card_ids(page, ".grid")
    shot(page, "awkward-item")


def test_filter_by_label_and_paging(page, server):
    open_app(page, server)
    page.wait_for_selector(".grid .card")
    page.locator(".pager button", has_text="Next").click()
    page.wait_for_function("() => document.querySelectorAll('.grid .card').length === 7")
    page.select_option("#label-filter", "square-blue")
    page.wait_for_function("() => document.querySelectorAll('.grid .card').length === 6")
    assert set(page.locator(".grid .card .label").all_inner_texts()) == {"square-blue"}
    page.fill("#meta-filter", "colour:nothing")
    page.press("#meta-filter", "Enter")
    page.wait_for_selector("text=No items match this filter.")


def test_upload_search_shows_results(page, server, shapes_folder):
    open_app(page, server, "#/upload")
    page.set_input_files("input[type=file]", str(shapes_folder / "triangle-blue" / "triangle-blue-2.png"))
    page.wait_for_selector("#upload-results .card")
    assert card_ids(page, "#upload-results")[0] == "triangle-blue-2"
    shot(page, "upload")


def test_upload_of_a_non_image_is_explained_in_words(page, server):
    open_app(page, server, "#/upload")
    page.set_input_files("input[type=file]", files=[{"name": "photo.jpg", "mimeType": "image/jpeg",
                                                       "buffer": b"this is not an image"}])
    message = page.wait_for_selector("#upload-results .state").inner_text()
    assert "not a JPEG, PNG" in message


def _image_bytes(pg, selector: str) -> list[int]:
    # The pixels as the page shows them (drawn to a canvas: blob: URLs are same-origin, not tainted).
    return pg.eval_on_selector(selector, """async img => {
        await img.decode();
        const canvas = document.createElement("canvas");
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const ctx = canvas.getContext("2d");
        ctx.drawImage(img, 0, 0);
        return Array.from(ctx.getImageData(0, 0, canvas.width, canvas.height).data);
    }""")


def test_latent_slider_regenerates_the_image(page, server):
    open_app(page, server, "#/latent")
    page.wait_for_function("() => (document.getElementById('latent-image') || {}).src?.startsWith('blob:')")
    assert page.locator(".sliders input[type=range]").count() == 16
    page.wait_for_selector("#latent-nearest .card")
    assert page.locator("#latent-image").bounding_box()["width"] >= 256  # large enough to judge
    before_src = page.get_attribute("#latent-image", "src")
    before = _image_bytes(page, "#latent-image")
    nearest_ids = "() => Array.from(document.querySelectorAll('#latent-nearest .card')).map(c => c.dataset.id).join(',')"
    neighbours_before = page.evaluate(nearest_ids)
    for index in range(4):  # drag four sliders to their maximum with the keyboard
        slider = page.locator(".sliders input[type=range]").nth(index)
        slider.focus()
        page.keyboard.press("End")
    page.wait_for_function(f"() => document.getElementById('latent-image').src !== {before_src!r}")
    page.wait_for_function("() => !document.getElementById('latent-status').textContent")
    after = _image_bytes(page, "#latent-image")
    assert after != before
    # the nearest real products follow the sliders (live, debounced)
    page.wait_for_function(f"() => ({nearest_ids})() !== {neighbours_before!r} && ({nearest_ids})() !== ''")
    shot(page, "latent")


def test_latent_random_product_moves_the_sliders(page, server):
    open_app(page, server, "#/latent")
    page.wait_for_function("() => (document.getElementById('latent-image') || {}).src?.startsWith('blob:')")
    values = "() => Array.from(document.querySelectorAll('.sliders input')).map(s => s.value).join(',')"
    before, before_src = page.evaluate(values), page.get_attribute("#latent-image", "src")
    page.locator("#latent-random").click()
    page.wait_for_function(f"() => ({values})() !== {before!r}")
    page.wait_for_function(f"() => document.getElementById('latent-image').src !== {before_src!r}")
    shot(page, "latent-random")


def test_latent_start_from_item_and_interpolate(page, server):
    import json
    import urllib.request

    open_app(page, server, f"#/latent?from={QUERY_ID}")
    with urllib.request.urlopen(f"{server}/api/items/{QUERY_ID}/latent") as response:
        z = json.load(response)["z"]
    page.wait_for_function(
        f"() => {{ const s = document.querySelector('.sliders input'); return s && Math.abs(s.value - {z[0]}) < 1e-4; }}")
    page.fill("input[aria-label='item B']", "square-blue-3")
    page.locator("button", has_text="Interpolate").click()
    page.wait_for_function("() => document.querySelectorAll('#interpolation .frame img').length === 7")
    assert page.locator("#interpolation .end img").count() == 2  # the real photos at both ends
    shot(page, "latent-interpolation")


def test_map_click_point_opens_the_item(page, server):
    open_app(page, server, "#/map")
    page.wait_for_selector(".map .pt")
    assert page.locator(".map .pt").count() == 55
    shot(page, "map")
    point = page.locator(".map .pt").last  # last in DOM order is drawn on top
    item_id = point.get_attribute("data-id")
    point.click()
    page.wait_for_selector(".item-info h2")
    assert page.locator(".item-info .muted").inner_text() == item_id


def test_clusters_and_duplicates_panels(page, server):
    open_app(page, server, "#/clusters")
    page.wait_for_selector(".row-section")
    assert page.locator(".row-section").count() == 9
    # per cluster: its size in the title, a strip of the items nearest the centroid, the label mix as a bar
    first = page.locator(".row-section.cluster").first
    assert "items" in first.locator("h3").inner_text() and first.locator(".row .card img").count() >= 1
    assert page.locator(".mix").count() == 9
    widths = first.locator(".mix span").evaluate_all("parts => parts.map(p => parseFloat(p.style.width))")
    assert widths and sum(widths) == pytest.approx(100, abs=0.5) and widths == sorted(widths, reverse=True)
    assert "%" in first.locator(".mix-legend").inner_text()
    assert page.locator(".stale-note").count() == 0   # clustered after the last write: no warning
    shot(page, "clusters")
    open_app(page, server, "#/duplicates")
    page.wait_for_selector(".row-section")
    assert any(set(DUPLICATE) <= set(ids) for ids in
               page.locator(".row-section").evaluate_all(
                   "rows => rows.map(r => [...r.querySelectorAll('.card')].map(c => c.dataset.id))"))
    shot(page, "duplicates")


def test_clusters_and_map_panels_say_when_they_are_out_of_date(page, tmp_path, shapes_folder):
    """Items added after `lookalike cluster` / `lookalike map`: both panels say how many and what to rerun."""
    from fakes import build_catalog, draw_shape

    from lookalike.api import create_app
    from lookalike.catalog import ItemWrite
    from lookalike.explore.clusters import cluster_catalog
    from lookalike.explore.projection import map_catalog

    cat = build_catalog(tmp_path, shapes_folder)
    cluster_catalog(cat, k=3)
    map_catalog(cat, method="pca", size=200, thumb=16)
    cat.upsert([ItemWrite(f"new-{i}", data=png_bytes(draw_shape("circle", (200, 30 * i, 90), seed=i))) for i in range(2)])
    with live_server(create_app("shapes", home=tmp_path)) as url:
        for route, command in (("#/clusters", "lookalike cluster"), ("#/map", "lookalike map")):
            open_app(page, url, route)
            note = page.wait_for_selector(".stale-note").inner_text()
            assert "2 items added" in note and command in note, note
        shot(page, "map-stale")


def test_quality_page_table_figures_and_failed_queries(page, server):
    open_app(page, server, "#/eval")
    page.wait_for_selector("table.quality-table")
    header = page.locator("table.quality-table thead").inner_text()
    assert "P@1" in header and "mAP@10" in header
    assert page.locator("table.quality-table tbody tr").count() == 9   # one row per label
    for selector in ("img.figure[src*='labels.png']", "img.figure[src*='confusion.png']"):
        page.wait_for_function("img => img.complete && img.naturalWidth > 100", arg=page.locator(selector).element_handle())
    strip = page.locator(".failures .row.failure").first
    strip.locator(".query-card .card").wait_for()
    assert strip.locator(".miss .card").count() >= 1   # what came back instead, framed red
    page.locator("details summary").click()
    assert "NDCG@10" in page.locator("details table.metrics").inner_text()
    shot(page, "quality")


def test_evaluation_and_empty_states_in_words(page, server):
    open_app(page, server, "#/eval")
    page.wait_for_selector("table.metrics")
    assert "P@1" in page.locator("table.metrics").first.inner_text()
    open_app(page, server, "#/item/no-such-item")
    assert "unknown item" in page.wait_for_selector(".state").inner_text()
    open_app(page, server, "#/nowhere")
    assert "no page called" in page.wait_for_selector(".state").inner_text()


def test_phone_layout(browser, server):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT)
    pg.goto(f"{server}/#/")
    pg.wait_for_selector(".grid .card img")
    assert not pg.locator("#nav").is_visible()
    card_box = pg.locator(".grid .card").first.bounding_box()
    assert card_box["width"] < 390 / 2  # at least two columns on a phone
    pg.click("#menu-toggle")
    assert pg.locator("#nav").is_visible()
    shot(pg, "phone-menu")
    pg.click("#nav a[data-route=latent]")
    pg.wait_for_selector(".sliders input")
    shot(pg, "phone-latent")
    context.close()


def test_shop_the_look_draws_boxes_and_result_rows(page, server, tmp_path, fake_detector):
    # fake_detector patches this process, where the server runs
    photo = tmp_path / "look.png"
    outfit_photo().save(photo)
    open_app(page, server, "#/shop")
    page.set_input_files("input[type=file]", str(photo))
    page.wait_for_selector(".shop-photo .box")
    regions = page.locator(".shop-photo .box").count()
    assert regions >= 2 and page.locator(".row-section").count() == regions
    assert "top" in page.locator(".shop-photo .box").first.inner_text()
    box = page.locator(".shop-photo .box").first.bounding_box()
    frame = page.locator(".shop-photo").bounding_box()
    assert frame["x"] <= box["x"] and box["x"] + box["width"] <= frame["x"] + frame["width"] + 1
    shot(page, "shop")


def test_shop_the_look_drag_a_box_or_click_a_region_to_search_that_part(page, server, tmp_path, fake_detector):
    """The shopper drags a box over the red top of the outfit photo: the app sends that box in the
    photo's own pixels (the photo is shown scaled) and shows the results for just that part; a click
    on a detected region searches its box the same way."""
    photo = tmp_path / "look.png"
    outfit_photo().save(photo)  # 200 x 400: red top at x 65..135, y 70..200
    open_app(page, server, "#/shop")
    page.set_input_files("input[type=file]", str(photo))
    page.wait_for_selector(".shop-photo .box")
    img = page.locator(".shop-photo img").bounding_box()
    scale = img["width"] / 200
    with page.expect_response(lambda r: r.url.endswith("/api/search/image") and r.request.method == "POST") as got:
        page.mouse.move(img["x"] + 70 * scale, img["y"] + 80 * scale)
        page.mouse.down()
        page.mouse.move(img["x"] + 100 * scale, img["y"] + 140 * scale, steps=5)
        page.mouse.move(img["x"] + 130 * scale, img["y"] + 190 * scale, steps=5)
        page.mouse.up()
    assert got.value.status == 200
    page.wait_for_selector(".box-results .row-section .card")
    heading = page.locator(".box-results h3").inner_text()  # names the box it sent, in the photo's pixels
    assert heading.startswith("Your box")
    box = [int(v) for v in heading.split("box ")[-1].split(", ")]
    assert all(abs(a - b) <= 2 for a, b in zip(box, [70, 80, 130, 190])), box
    labels = page.locator(".box-results .card .label").all_inner_texts()
    assert labels and "red" in labels[0]  # the red top alone: red shapes first
    drawn = page.locator(".drawn-box").bounding_box()
    assert abs(drawn["width"] - 60 * scale) <= 3 and abs(drawn["height"] - 110 * scale) <= 3
    shot(page, "shop-drawn-box")
    # a click on a detected region (the bottom) searches its box, over the whole catalog
    bottom = page.locator(".shop-photo .box", has_text="bottom").first
    bottom.click()
    page.locator(".box-results h3", has_text="bottom").wait_for()
    assert page.locator(".box-results .card").count() == 8
    assert "active" in (bottom.get_attribute("class") or "")
    shot(page, "shop-region-click")


def test_api_docs_render_offline(page, server):
    """/docs draws the operations from the bundled Swagger UI (no CDN; OpenAPI 3.1 supported)."""
    pytest.importorskip("swagger_ui_bundle")
    page.goto(f"{server}/docs")
    page.wait_for_selector(".opblock", timeout=15000)
    assert page.locator(".opblock").count() >= 10
    assert "Unable to render" not in page.content()
    shot(page, "api-docs")


def test_ranking_controls_filter_group_and_explain(page, server):
    open_app(page, server, f"#/item/{QUERY_ID}")
    page.wait_for_selector(".ranked .card .score")
    assert len(card_ids(page, ".ranked-grid")) == 12
    page.fill("#rank-filter", "colour!=red; shape in square,triangle")
    page.press("#rank-filter", "Enter")
    page.wait_for_function("() => [...document.querySelectorAll('.ranked-grid .card .label')].every("
                           "l => !l.textContent.endsWith('-red') && /^(square|triangle)-/.test(l.textContent))")
    page.select_option("#rank-group", "shape")
    page.wait_for_function("() => document.querySelectorAll('.ranked-grid .card').length === 2")
    page.select_option("#rank-variant", "colour")
    page.wait_for_selector(".ranked-grid .card .note >> text=matched:")
    notes = page.locator(".ranked-grid .card .note").all_inner_texts()
    assert all("more images" in n and "matched:" in n and "red" not in n for n in notes), notes
    page.fill("#rank-boost", "colour=green:+1")
    page.press("#rank-boost", "Enter")
    page.wait_for_function("() => (document.querySelector('.ranked-grid .card .note') || {}).textContent"
                           "?.includes('matched: green')")
    assert "group_by=shape" in page.url and "variant=colour" in page.url and "boost=" in page.url
    page.locator(".why summary").first.click()
    why = page.locator(".why").first.inner_text()
    assert "visual" in why and "boost:colour=green +1.000" in why and "= score" in why
    shot(page, "ranking")
    page.fill("#rank-filter", "weight<3")
    page.press("#rank-filter", "Enter")
    page.wait_for_selector(".state.error >> text=unknown column 'weight'")
    shot(page, "ranking-error")


def test_upload_search_with_ranking_from_the_url(page, server, shapes_folder):
    open_app(page, server, "#/upload?filter=colour%3Dgreen&group_by=shape&variant=colour")
    assert page.locator("#rank-filter").input_value() == "colour=green"
    page.set_input_files("input[type=file]", str(shapes_folder / "triangle-blue" / "triangle-blue-2.png"))
    page.wait_for_selector("#upload-results .ranked .card")
    labels = page.locator("#upload-results .card .label").all_inner_texts()
    assert sorted(labels) == ["circle-green", "square-green", "triangle-green"]
    assert all("matched: green" in n for n in page.locator("#upload-results .card .note").all_inner_texts())
    shot(page, "ranking-upload")


def _compact(ids: list[str]) -> str:
    return json.dumps(ids, separators=(",", ":"))   # as JSON.stringify writes it


def _tile_ids(pg) -> list[str]:
    return pg.locator(".steered-results .tile").evaluate_all("tiles => tiles.map(t => t.dataset.id)")


# the steered results' ids in the page; a wait on them also requires the list to be filled, since it is
# empty for a moment while a re-run renders (an "id not among them" wait passed there, then read [])
_SHOWN = "Array.from(document.querySelectorAll('.steered-results .tile')).map(t => t.dataset.id)"


def _wait_results(pg, condition: str) -> None:
    """Wait until the steered results are shown and ``condition`` (JS over ``ids``) holds."""
    pg.wait_for_function(f"() => {{ const ids = {_SHOWN}; return ids.length > 0 && ({condition}); }}")


def test_feedback_chips_rerun_the_search(page, server):
    open_app(page, server, f"#/item/{QUERY_ID}")
    page.wait_for_selector(".steered-results .tile .feedback .up")
    before = _tile_ids(page)
    assert len(before) == 12 and QUERY_ID not in before
    liked, disliked = before[-1], before[0]
    page.locator(f'.tile[data-id="{liked}"] .up').click()          # 👍 on the last tile
    page.wait_for_selector(f'.chip.more[data-item="{liked}"]')
    _wait_results(page, f"!ids.includes({liked!r})")   # an example is never a result
    page.locator(f'.tile[data-id="{disliked}"] .down').click()     # 👎 on the first
    page.wait_for_selector(f'.chip.less[data-item="{disliked}"]')
    _wait_results(page, f"!ids.includes({disliked!r})")
    steered = _tile_ids(page)
    assert steered != before and len(steered) == 12
    assert page.locator(".chip").count() == 2
    shot(page, "feedback-chips")
    page.locator(f'.chip[data-item="{liked}"] .chip-remove').click()   # remove the 👍 chip
    page.wait_for_function("() => document.querySelectorAll('.chip').length === 1")
    _wait_results(page, f"JSON.stringify(ids) !== {_compact(steered)!r}")   # re-ran without it
    page.locator(".chip-remove").click()
    page.wait_for_function("() => document.querySelectorAll('.chip').length === 0")
    _wait_results(page, f"JSON.stringify(ids) === {_compact(before)!r}")


def test_diversity_control_and_no_match_message(page, server):
    open_app(page, server, f"#/item/{QUERY_ID}")
    page.wait_for_selector(".steered-results .tile")
    before = _tile_ids(page)
    page.locator("#diversity").fill("0.9")
    page.locator("#diversity").dispatch_event("change")
    _wait_results(page, f"JSON.stringify(ids) !== {_compact(before)!r}")
    open_app(page, server, "#/upload")
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    page.set_input_files("input[type=file]", files=[{"name": "noise.png", "mimeType": "image/png",
                                                       "buffer": png_bytes(Image.fromarray(noise))}])
    message = page.wait_for_selector(".no-match").inner_text()
    assert "No close match" in message
    assert page.locator(".tile.weak").count() == page.locator(".steered-results .tile").count() > 0
    shot(page, "no-close-match")
