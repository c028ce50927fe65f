"""End to end in a real browser: Debian's chromium driven by the playwright package (never
`playwright install`). Open the page, pick an example, choose a level, compare, wait for the four
outputs and the charts, save a screenshot. Fails if any output or chart is missing.

SAVE_SCREENSHOT=docs pytest tests/test_browser.py   # refresh the README's images (screenshot, ladder, sweep)
"""

import os
import shutil
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
OUTPUTS = ("none", "sae", "query", "fewshot")
PLOTS = ("plot-probs", "plot-attn")
RESEARCH_PLOTS = ("plot-trace", "plot-bars", "plot-heat", "plot-sep")


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium (CI installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def test_compare_in_the_browser(browser, app_url, tmp_path):
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_url)
    page.get_by_role("button", name="Compare", exact=True).wait_for(timeout=60_000)
    # the separability map is drawn when the page loads
    page.get_by_text("For researchers: inside the sparse autoencoder").click()
    page.locator("#plot-sep .js-plotly-plot").wait_for(timeout=60_000)

    example = "How can a sedimentary rock become a metamorphic rock?"
    page.get_by_text(example).first.click()
    page.wait_for_function(
        "q => [...document.querySelectorAll('textarea')].some(t => t.value === q)", arg=example, timeout=10_000
    )
    page.get_by_label("Create: Produce something new", exact=False).check()
    page.get_by_role("button", name="Compare", exact=True).click()

    for m in OUTPUTS:
        page.wait_for_function(
            "id => { const t = document.querySelector(`#${id} textarea`); return t && t.value.trim().length > 0; }",
            arg=f"out-{m}",
            timeout=240_000,
        )
    page.get_by_text("Done in").wait_for(timeout=240_000)
    for pid in PLOTS + RESEARCH_PLOTS:
        page.locator(f"#{pid} .js-plotly-plot").wait_for(timeout=60_000)
    assert page.locator("#attn-text .attention-text span").count() > 20  # the prompt, shaded token by token
    for m in OUTPUTS:
        assert page.locator(f"#judge-{m}").inner_text().strip(), f"no judge verdict for {m}"
    texts = {m: page.locator(f"#out-{m} textarea").input_value() for m in OUTPUTS}
    assert all(t.strip() for t in texts.values()), texts
    titles = page.locator(".js-plotly-plot .gtitle").all_text_contents()
    assert len([t for t in titles if t and t.strip()]) >= len(PLOTS + RESEARCH_PLOTS), titles
    assert not errors, errors

    shot = tmp_path / "screenshot.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    keep(shot, "screenshot.png")


def keep(shot: Path, name: str) -> None:
    """Copy a screenshot into the folder named by SAVE_SCREENSHOT (the README's images), if set."""
    if os.environ.get("SAVE_SCREENSHOT"):
        dest = ROOT / os.environ["SAVE_SCREENSHOT"] / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, dest)


def wait_filled(page, elem_id: str, timeout: int = 240_000) -> None:
    page.wait_for_function(
        "id => { const t = document.querySelector(`#${id} textarea`); return t && t.value.trim().length > 0; }",
        arg=elem_id,
        timeout=timeout,
    )


def test_ladder_and_sweep_in_the_browser(browser, app_url, tmp_path):
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_url)
    page.get_by_role("tab", name="Level ladder").click()
    page.get_by_role("button", name="Run the ladder").click()
    for name in ("unsteered", "remember", "understand", "apply", "analyze", "evaluate", "create"):
        wait_filled(page, f"ladder-{name}")
    page.get_by_text("SAE-steered replies at the level asked for").wait_for(timeout=240_000)
    page.locator("#ladder-plot .js-plotly-plot").wait_for(timeout=60_000)
    for name in ("unsteered", "remember", "create"):
        assert page.locator(f"#ladder-judge-{name}").inner_text().strip(), f"no verdict for {name}"
    # the downloads come once the perplexities are read, after the judged chart
    page.locator("#ladder-json a, #ladder-json [download]").first.wait_for(timeout=60_000)
    page.get_by_text("Reading each reply's perplexity").wait_for(state="hidden", timeout=60_000)
    assert not page.locator("#ladder-base-create").is_visible()  # the baseline row only when one is chosen
    shot = tmp_path / "ladder.png"
    page.screenshot(path=str(shot), full_page=True)
    keep(shot, "ladder.png")

    page.get_by_role("tab", name="Strength sweep").click()
    strengths = page.get_by_role("textbox", name="Strengths (up to")
    strengths.fill("0, 1, 2")
    page.get_by_role("button", name="Run the sweep").click()
    for i in range(3):
        wait_filled(page, f"sweep-{i}")
    page.get_by_text("its highest probability").wait_for(timeout=240_000)
    page.locator("#sweep-plot .js-plotly-plot").wait_for(timeout=60_000)
    assert page.locator("#sweep-0 label, #sweep-0 span").first.inner_text().strip()
    assert not page.locator("#sweep-3").is_visible()  # only as many replies as strengths
    assert not errors, errors
    shot = tmp_path / "sweep.png"
    page.screenshot(path=str(shot), full_page=True)
    keep(shot, "sweep.png")


def test_your_questions_in_the_browser(browser, app_url, tmp_path):
    """Upload a set, see what it holds before running, run it on two levels, wait for the table and charts."""
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_url)
    page.get_by_role("tab", name="Your questions").click()
    upload = tmp_path / "mine.csv"
    upload.write_text(
        "question,student_answer\n"
        "Why do we see phases of the Moon?,Because the Earth's shadow covers part of the Moon.\n"
        "What is 7 x 8?,54\n"
        "Name a mammal that lays eggs.,\n",
        encoding="utf-8",
    )
    page.locator("#eval-file input[type=file]").set_input_files(str(upload))
    page.get_by_text("2 scenarios to run").wait_for(timeout=60_000)  # shown before anything runs
    assert "line 4" in page.locator("#eval-rows").inner_text()
    for level in ("remember", "understand", "apply", "evaluate"):  # keep analyze and create
        page.get_by_label(level, exact=True).uncheck()
    page.get_by_role("button", name="Evaluate", exact=True).click()
    page.locator("#eval-status").get_by_text("Done in").wait_for(timeout=300_000)
    for pid in ("eval-plot", "eval-shares"):
        page.locator(f"#{pid} .js-plotly-plot").wait_for(timeout=60_000)
    table = page.locator("#eval-table").inner_text()
    assert "SAE-steered" in table and "Few-shot" in table and "[" in table
    assert page.locator("#eval-results a, #eval-results [download]").count() >= 1
    assert not errors, errors
    shot = tmp_path / "questions.png"
    page.screenshot(path=str(shot), full_page=True)
    keep(shot, "questions.png")


def _fluency_ratios(texts: list[str], unsteered: str, question: str, answer: str) -> list[float]:
    """Each page text's perplexity under the unsteered model, over the unsteered reply's (the guard's measure)."""
    from steer_core.fluency import perplexity
    from steer_core.model.loading import load_model

    lm = load_model()

    def ppl(text: str) -> float:
        return perplexity(lm, question, answer, lm.tokenizer.encode(text, add_special_tokens=False))

    base = ppl(unsteered)
    return [ppl(t) / base for t in texts]


def test_the_residual_vector_reads_fluently_in_compare_and_the_ladder(browser, app_url):
    """The residual-stream column of Compare and the ladder's residual baseline, as a teacher sees them:
    text at about the unsteered reply's fluency (it once shipped at 16x its validated scale and wrote
    gibberish), each within the fluency guard."""
    import statistics

    from steer_core.bloom import LEVELS
    from steer_core.evaluation.selection import GUARD

    q, a = "Why do we see phases of the Moon?", "Because the Earth's shadow covers part of the Moon."
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_url)
    page.get_by_role("button", name="Compare", exact=True).wait_for(timeout=60_000)
    boxes = page.locator("textarea:visible")
    boxes.nth(0).fill(q)
    boxes.nth(1).fill(a)
    page.get_by_label("Create: Produce something new", exact=False).check()
    page.get_by_text("Advanced (the paper's knobs)").click()
    page.get_by_label("Also show the residual-stream vector").check()
    page.get_by_role("button", name="Compare", exact=True).click()
    for m in ("none", "residual"):
        wait_filled(page, f"out-{m}")
    page.get_by_text("Done in").wait_for(timeout=240_000)
    unsteered = page.locator("#out-none textarea").input_value()
    residual = page.locator("#out-residual textarea").input_value()
    assert page.locator("#judge-residual").inner_text().strip()
    (ratio,) = _fluency_ratios([residual], unsteered, q, a)
    assert ratio < GUARD, f"the residual column reads {ratio:.1f}x unsteered perplexity: {residual!r}"

    page.get_by_role("tab", name="Level ladder").click()
    ladder = page.locator("textarea:visible")
    ladder.nth(0).fill(q)
    ladder.nth(1).fill(a)
    page.get_by_label("Residual vector", exact=True).check()
    page.get_by_role("button", name="Run the ladder").click()
    for lv in LEVELS:
        wait_filled(page, f"ladder-base-{lv}")
    page.get_by_text("SAE-steered replies at the level asked for").wait_for(timeout=240_000)
    base = [page.locator(f"#ladder-base-{lv} textarea").input_value() for lv in LEVELS]
    unsteered = page.locator("#ladder-unsteered textarea").input_value()
    ratios = _fluency_ratios(base, unsteered, q, a)
    assert statistics.median(ratios) < GUARD, list(zip(ratios, base))
    assert not errors, errors


def moon_question(browser, app_url):
    """The page open on the Compare with the Moon question and its answer typed in; (page, its errors)."""
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_url)
    page.get_by_role("button", name="Compare", exact=True).wait_for(timeout=60_000)
    boxes = page.locator("textarea:visible")
    boxes.nth(0).fill("Why do we see phases of the Moon?")
    boxes.nth(1).fill("Because the Earth's shadow covers part of the Moon.")
    return page, errors


def test_compare_steers_on_top_of_the_instruction_prompt(browser, app_url):
    """Choosing the instruction prompt: the steered columns say they run on top of it, and the prompt alone shows
    as its own column (their strength 0) without being ticked."""
    page, errors = moon_question(browser, app_url)
    page.get_by_label("Apply: Use a rule", exact=False).check()
    assert not page.locator("#out-instruction").is_visible()
    page.locator("#compare-prompt").get_by_label("Instruction", exact=True).check()
    page.locator("#out-instruction").wait_for(state="visible", timeout=10_000)
    assert "Instruction + SAE-steered" in page.locator("#out-sae").inner_text()
    page.get_by_role("button", name="Compare", exact=True).click()
    for m in ("sae", "instruction"):
        wait_filled(page, f"out-{m}")
    page.get_by_text("on top of the instruction prompt").wait_for(timeout=240_000)
    assert page.locator("#judge-instruction").inner_text().strip() and page.locator("#judge-sae").inner_text().strip()
    assert not errors, errors


SHARED_Q = "Why does ice float on water?"
SHARED_A = "Because ice is lighter."


def link_value(page, view: str) -> str:
    page.wait_for_function(
        "id => { const t = document.querySelector(`#${id} textarea, #${id} input`); "
        "return t && t.value.startsWith('http'); }",
        arg=f"{view}-link",
        timeout=60_000,
    )
    return page.locator(f"#{view}-link textarea, #{view}-link input").first.input_value()


def test_links_run_the_same_request_as_the_api_and_the_history_restores_one(browser, app_url, tmp_path):
    """A Compare link and a ladder link fill their tab, run it, and give the API's replies for the same values;
    the run lands in this browser's history, and a click there restores it without generating; a report
    uploaded restores the ladder; the handout downloads with the six replies."""
    from urllib.parse import urlencode

    from gradio_client import Client

    client = Client(app_url, verbose=False)
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    values = {
        "question": SHARED_Q,
        "student_answer": SHARED_A,
        "level": "create",
        "strength": 0.5,
        "max_new_tokens": 12,
    }
    page.goto(app_url + "?" + urlencode({"tab": "compare", **values}))
    page.get_by_text("Done in").wait_for(timeout=240_000)
    shown = {m: page.locator(f"#out-{m} textarea").input_value() for m in OUTPUTS}
    api = client.predict(**values, api_name="/compare")
    assert shown == dict(zip(OUTPUTS, api[: len(OUTPUTS)])), (shown, api[: len(OUTPUTS)])
    link = link_value(page, "compare")
    assert link.startswith(app_url) and "tab=compare" in link and "strength=0.5" in link and "seed" not in link

    ladder = {"question": SHARED_Q, "student_answer": SHARED_A, "max_new_tokens": 8}
    page.goto(app_url + "?" + urlencode({"tab": "ladder", **ladder}))
    page.get_by_text("SAE-steered replies at the level asked for").wait_for(timeout=240_000)
    names = ("unsteered", "remember", "understand", "apply", "analyze", "evaluate", "create")
    replies = [page.locator(f"#ladder-{n} textarea").input_value() for n in names]
    assert replies == list(client.predict(**ladder, api_name="/ladder")[:7])
    assert "tab=ladder" in link_value(page, "ladder")
    with page.expect_download() as got:
        page.locator("#ladder-handout a").first.click()
    handout = tmp_path / "handout.html"
    got.value.save_as(handout)
    import html

    text = handout.read_text(encoding="utf-8")
    assert all(html.escape(r) in text for r in replies), "the handout holds every reply"
    hand = browser.new_page(viewport={"width": 900, "height": 1200})
    hand.goto(handout.as_uri())
    shot = tmp_path / "handout.png"
    hand.screenshot(path=str(shot), full_page=True)
    keep(shot, "handout.png")
    with page.expect_download() as got:
        page.locator("#ladder-json a").first.click()
    report = tmp_path / "ladder.json"
    got.value.save_as(report)

    page.goto(app_url)  # a plain visit: the history restores the compare run
    page.get_by_role("button", name="Compare", exact=True).wait_for(timeout=60_000)
    page.wait_for_timeout(3000)
    page.get_by_text("Your runs: open a saved report").click()
    rows = page.locator("#history").get_by_text(SHARED_Q).locator("visible=true")
    rows.first.wait_for(timeout=30_000)
    assert rows.count() == 2  # the ladder, then the compare run
    page.locator("#history").get_by_text("compare", exact=True).locator("visible=true").first.click()
    page.get_by_text("nothing was generated").wait_for(timeout=30_000)
    assert {m: page.locator(f"#out-{m} textarea").input_value() for m in OUTPUTS} == shown
    assert page.locator("textarea").first.input_value() == SHARED_Q
    page.locator("#plot-probs .js-plotly-plot").wait_for(timeout=30_000)

    page.locator("#open-report input[type=file]").set_input_files(str(report))
    page.get_by_text("Restored the ladder run").wait_for(timeout=30_000)
    assert [page.locator(f"#ladder-{n} textarea").input_value() for n in names] == replies
    assert not errors, errors


def test_a_link_with_a_bad_value_says_which_and_keeps_the_default(browser, app_url):
    from urllib.parse import urlencode

    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    bad = {"tab": "compare", "question": SHARED_Q, "student_answer": SHARED_A, "level": "apply", "strength": "9"}
    page.goto(app_url + "?" + urlencode(bad))
    note = page.locator("#open-note")
    note.get_by_text("left at its default").wait_for(timeout=60_000)
    assert "strength" in note.inner_text() and "from 0 to 4" in note.inner_text()
    assert page.locator("textarea").first.input_value() == SHARED_Q  # what read is filled in
    slider = page.locator("input[type=number]").first  # the strength slider's box keeps its default
    assert float(slider.input_value()) == 1.0
    page.wait_for_timeout(1500)
    assert page.locator("#out-sae textarea").input_value() == ""  # and nothing ran


def test_a_latent_card_opens_from_a_bar_and_steering_with_it_moves_the_reply(browser, app_url, tmp_path):
    """Compare, then click a bar of the top-latents chart: the Latents tab opens that latent's card with its
    contexts; a search by level lists latents; "steer with this latent" fills the Compare's latents by hand, and
    the hand-steered reply differs from the unsteered one."""
    page, errors = moon_question(browser, app_url)
    page.get_by_label("Create: Produce something new", exact=False).check()
    page.get_by_text("For researchers: inside the sparse autoencoder").click()
    page.get_by_role("button", name="Compare", exact=True).click()
    page.get_by_text("Done in").wait_for(timeout=240_000)
    bar = page.locator("#plot-bars .js-plotly-plot .bars .point path").first
    bar.wait_for(timeout=60_000)
    bar.scroll_into_view_if_needed()
    box = bar.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] - 2)
    card = page.locator("#latent-card")
    card.get_by_text("Latent ").first.wait_for(timeout=30_000)
    assert card.locator("mark").count() >= 1  # its contexts, the token highlighted
    page.locator("#latent-card-plot .js-plotly-plot").wait_for(timeout=30_000)
    name = card.locator("h3").inner_text().split()[1]
    layer, head = page.locator("#latent-layer input").input_value(), page.locator("#latent-head input").input_value()
    assert name.startswith(f"{layer}.{head}:")

    page.locator("#latent-level input").click()
    page.get_by_role("option", name="create", exact=True).click()
    page.get_by_role("button", name="Search", exact=True).click()
    results = page.locator("#latent-results")
    results.get_by_text("its weight in the create offset").first.wait_for(timeout=30_000)
    assert results.get_by_text("fires more on create feedback").count() >= 1  # then the latents firing on create
    shot = tmp_path / "latents.png"
    page.screenshot(path=str(shot), full_page=True)
    keep(shot, "latents.png")

    page.get_by_role("button", name="Steer with this latent (in the Compare)").click()
    page.locator("#out-latents").wait_for(state="visible", timeout=10_000)  # the Compare, with its column
    page.get_by_text("Advanced (the paper's knobs)").click()
    page.wait_for_function(
        "() => { const t = document.querySelector('#compare-latents textarea, #compare-latents input');"
        " return t && t.value.includes(':'); }",
        timeout=30_000,
    )
    page.locator("#out-latents").wait_for(state="visible", timeout=10_000)
    before = page.locator("#out-none textarea").input_value()
    page.get_by_role("button", name="Compare", exact=True).click()
    page.wait_for_function(
        "old => { const t = document.querySelector('#out-latents textarea'); return t && t.value.trim() && "
        "document.querySelector('#out-none textarea').value === old; }",
        arg=before,
        timeout=240_000,
    )
    page.get_by_text("Done in").wait_for(timeout=240_000)
    assert page.locator("#out-latents textarea").input_value() != page.locator("#out-none textarea").input_value()
    assert not errors, errors
