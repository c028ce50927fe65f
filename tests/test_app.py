"""The launched app through its API (`gradio_client`): the comparison, bad input, many users.

These start the real `python app.py` once (conftest `app_url`) on the embedded default model.
"""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from steer_core.bloom import LEVELS

pytestmark = pytest.mark.slow

Q = "A recipe for 4 people uses 300 g of flour. How much flour is needed for 6 people?"
A = "450 g, because 300 divided by 4 is 75 and 75 times 6 is 450."
N_TEXTS, N_LABELS = 7, 7  # unsteered, sae, query, fewshot, instruction, residual, latents (the last three: on request)


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def compare(client, q=Q, a=A, level="analyze", **kw):
    return client.predict(q, a, level, api_name="/compare", **kw)


def test_compare_returns_four_texts_judgements_charts_and_report(client):
    out = compare(client, max_new_tokens=24)
    texts, labels = out[:N_TEXTS], out[N_TEXTS : N_TEXTS + N_LABELS]
    assert all(isinstance(t, str) and t.strip() for t in texts[:4]) and list(texts[4:]) == ["", "", ""]
    for lab in labels[:4]:
        assert lab["label"] in LEVELS and len(lab["confidences"]) >= 1
    plots = out[N_TEXTS + N_LABELS : N_TEXTS + N_LABELS + 5]
    assert all(p and p["type"] == "plotly" and json.loads(p["plot"])["layout"]["title"]["text"] for p in plots)
    report, status, attention, attention_text, replies = out[N_TEXTS + N_LABELS + 5 :]
    record = json.loads(open(report, encoding="utf-8").read())
    assert record["inputs"] == {"question": Q, "student_answer": A, "level": "analyze"}
    assert set(record["outputs"]) == {"none", "sae", "query", "fewshot"}
    assert all(set(v["judge"]["probs"]) == set(LEVELS) for v in record["outputs"].values())
    assert record["outputs"]["sae"]["text"] == texts[1]
    assert "Done in" in status
    bars = json.loads(attention["plot"])["data"]
    assert [b["name"] for b in bars] == ["unsteered", "steered"]
    assert list(bars[0]["x"]) == ["instructions", "question", "student answer"]
    assert "attention-text" in attention_text and "Moon" not in attention_text and "flour" in attention_text
    assert replies == {m: {**replies[m], "text": texts[i]} for i, m in enumerate(("none", "sae", "query", "fewshot"))}


def test_compare_last_output_is_every_reply_by_method_name(client):
    """A client reads a reply by method name from the last output (the positions before it follow the method
    registry); its texts and verdicts are the positional ones."""
    out = compare(client, level="create", max_new_tokens=8, instruction=True)
    replies, names = out[-1], ("none", "sae", "query", "fewshot", "instruction", "residual", "latents")
    assert list(replies) == ["none", "sae", "query", "fewshot", "instruction"]  # every column run, by name
    for i, m in enumerate(names):
        if m in replies:
            assert replies[m]["text"] == out[i] and replies[m]["judge"]["pred"] == out[N_TEXTS + i]["label"]
            assert set(replies[m]["judge"]["probs"]) == set(LEVELS) and replies[m]["label"]


def test_instruction_baseline_on_request(client):
    out = compare(client, level="create", max_new_tokens=12, instruction=True)
    assert out[4].strip() and out[N_TEXTS + 4]["label"] in LEVELS
    assert out[5] == out[6] == "" and not out[N_TEXTS + 5]


def test_residual_vector_column_on_request(client):
    """The field's usual site beside the paper's: the residual-stream vector's reply, judged, and in the
    report; strength 0 gives the unsteered text in every steered column."""
    out = compare(client, level="create", max_new_tokens=12, residual_vector=True)
    assert out[5].strip() and out[N_TEXTS + 5]["label"] in LEVELS and out[4] == ""
    report = json.loads(open(out[N_TEXTS + N_LABELS + 5], encoding="utf-8").read())
    assert set(report["outputs"]) == {"none", "sae", "query", "fewshot", "residual"}
    off = compare(client, level="create", max_new_tokens=12, residual_vector=True, strength=0)
    assert off[5] == off[1] == off[2] == off[0]


BAD = [
    (dict(q=""), "question is empty"),
    (dict(q="   \n\t "), "question is empty"),
    (dict(a="\x00\x01\x02\x1b"), "answer is empty"),
    (dict(q="x" * 200_000), "too long"),
    (dict(a="y" * 4001), "too long"),
    (dict(level="brilliant"), "level"),
    (dict(layers="-1"), "layers"),
    (dict(layers="999"), "out of range"),
    (dict(layers="3-x"), "layers"),
    (dict(heads=[99]), "head"),
    (dict(heads=[]), "at least one head"),
    (dict(strength=-1.0), "strength"),
    (dict(strength=99.0), "strength"),
    (dict(max_new_tokens=0), "max new tokens"),
    (dict(steps=-3), "steps"),
    (dict(steps=2.5), "steps"),
    (dict(mu=-0.5), "mu"),
    (dict(seed=-1), "seed"),
    (dict(k_shots=0), "few-shot"),
    (dict(target="nowhere"), "target"),
    (dict(positions="everywhere"), "positions"),
    (dict(layers="0-30"), "layer 30 is out of range"),  # a band past the last layer
    (dict(latents="15.3:10"), "could not read '15.3:10'"),
    (dict(latents="15.3:10:+8; 40.1:2:1"), "layer 40"),
    (dict(latents="15.12:10:+8"), "head"),
    (dict(latents="15.3:600:+8"), "latent 15.3:600 does not exist"),
    (dict(latents="15.3:10:+80"), "strength"),
]


@pytest.mark.parametrize("kw,message", BAD, ids=[m + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_input_gets_a_clear_error_and_the_app_keeps_serving(client, kw, message):
    from gradio_client.exceptions import AppError

    kw = dict(kw)
    args = {"q": kw.pop("q", Q), "a": kw.pop("a", A), "level": kw.pop("level", "apply")}
    with pytest.raises(AppError) as err:
        compare(client, args["q"], args["a"], args["level"], max_new_tokens=kw.pop("max_new_tokens", 8), **kw)
    assert message.lower() in str(err.value).lower()
    assert "Traceback" not in str(err.value)


@pytest.mark.parametrize(
    "index,value,message",
    [
        (5, "NaN", "strength"),
        (5, "Infinity", "strength"),
        (5, "-Infinity", "strength"),
        (7, "NaN", "step size"),
        (8, "Infinity", "mu"),
    ],
)
def test_non_finite_numbers_sent_as_raw_json_are_refused(app_url, index, value, message):
    """JSON has no NaN, but a hostile client can still send the literal; it must be refused clearly."""
    import urllib.request

    data = [Q, A, "apply", "8-21", list(range(9)), 1.0, 20, 0.2, 0.0, "delta", "all", 8, 0, 3, False, False, "plain"]
    data += [""]  # latents by hand: none
    parts = json.dumps({"data": data[:index] + ["__X__"] + data[index + 1 :]}).split('"__X__"')
    body = (parts[0] + value + parts[1]).encode()
    req = urllib.request.Request(app_url + "gradio_api/call/compare", body, {"Content-Type": "application/json"})
    event_id = json.loads(urllib.request.urlopen(req, timeout=30).read())["event_id"]
    stream = urllib.request.urlopen(f"{app_url}gradio_api/call/compare/{event_id}", timeout=120).read().decode()
    assert "event: error" in stream and message in stream.lower(), stream[-500:]


def test_latents_steered_by_hand_get_a_column_of_their_own_and_strength_0_is_off(client):
    """/compare with `latents`: the hand-steered reply in its column, judged, in the report (which restores it);
    strength 0 gives the unsteered reply there too."""
    hand = "15.3:10:+8, 15.4:20:+8, 20.1:7:+8"
    out = compare(client, level="create", max_new_tokens=16, latents=hand)
    assert out[6].strip() and out[6] != out[0] and out[N_TEXTS + 6]["label"] in LEVELS
    assert out[-1]["latents"]["label"] == "Your latents (steered by hand)"
    report = json.loads(open(out[N_TEXTS + N_LABELS + 5], encoding="utf-8").read())
    assert report["outputs"]["latents"]["text"] == out[6]
    assert report["settings"]["latents"] == [[15, 3, 10, 8.0], [15, 4, 20, 8.0], [20, 1, 7, 8.0]]
    off = compare(client, level="create", max_new_tokens=16, latents=hand, strength=0)
    assert off[6] == off[0]


def test_a_latent_card_opens_through_the_api_and_bad_ones_are_refused(client):
    from gradio_client.exceptions import AppError

    html, plot, steer = client.predict(15, 3, 10, api_name="/latent")
    assert "Latent 15.3:10" in html and "<mark>" in html and steer.startswith("15.3:10:+")
    assert json.loads(plot["plot"])["layout"]["title"]["text"] == "Latent 15.3:10"
    for args, says in (((15, 3, 512), "latent 512 does not exist"), ((31, 0, 1), "layer 31"), ((15, 9, 1), "head")):
        with pytest.raises(AppError, match=says):
            client.predict(*args, api_name="/latent")
    rows = client.predict("create", "", api_name="/latent_search")
    assert rows["data"] and all("create" in r[1] for r in rows["data"])


def test_app_still_serves_after_bad_inputs(client):
    out = compare(client, level="remember", max_new_tokens=6)
    assert out[0].strip()


def test_concurrent_users_get_what_they_get_alone(client):
    """8 simultaneous comparisons with different levels and layers equal their results run alone."""
    settings = [  # a descent target: the learned offsets cover layers 8-21 only
        dict(level=LEVELS[i % 6], layers=lay, max_new_tokens=16, target="softmax" if i % 2 else "delta")
        for i, lay in enumerate(["8-21", "15", "3", "0-29", "20", "8-21", "10", "25"])
    ]
    alone = [compare(client, **s)[:4] for s in settings]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda s: compare(client, **s)[:4], settings))
    assert together == alone
    assert len({tuple(t) for t in alone}) > 1  # the settings really differ


def test_train_tab_trains_a_layer_that_compare_uses_at_once(client):
    import zipfile
    from pathlib import Path

    msg, download = client.predict(0, "topk", 16, 1.0, 8, 1, api_name="/train")
    assert msg.startswith("Trained layer 0") and "explained variance" in msg
    path = msg.split("Saved under `")[1].split("`")[0]
    assert (Path(path) / "layer_0" / "layer.json").is_file()
    names = zipfile.ZipFile(download).namelist()  # the same layer, handed back
    assert "layer_0/layer.json" in names and "layer_0/head_0/sae_weights.safetensors" in names
    out = compare(client, layers="0", target="softmax", max_new_tokens=6)
    assert out[1].strip()
    # the default's offsets were fitted for the shipped SAEs of layer 0: it steers with those still
    assert compare(client, layers="0-29", max_new_tokens=6)[1].strip()


def test_train_tab_refuses_bad_settings(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Layer"):
        client.predict(99, "topk", 16, 1.0, 8, 1, api_name="/train")


def test_ladder_returns_seven_texts_then_verdicts_chart_and_downloads(client):
    out = client.predict(Q, A, "none", 1.0, 16, api_name="/ladder")
    texts, labels, base = out[:7], out[7:14], out[14:20]
    assert all(isinstance(t, str) and t.strip() for t in texts) and list(base) == [""] * 6
    assert all(lab["label"] in LEVELS for lab in labels)
    plot, json_path, csv_path, status = out[20:]
    assert plot["type"] == "plotly" and "Judged level" in json.loads(plot["plot"])["layout"]["title"]["text"]
    record = json.loads(open(json_path, encoding="utf-8").read())
    assert record["view"] == "ladder" and [r["level"] for r in record["rows"]] == ["-", *LEVELS]
    assert [r["text"] for r in record["rows"]] == list(texts)
    assert open(csv_path, encoding="utf-8").readline().startswith("row,method,level")
    assert "of the 6 SAE-steered replies" in status


def test_ladder_with_a_baseline_fills_the_second_row(client):
    out = client.predict(Q, A, "instruction", 1.0, 8, api_name="/ladder")
    assert all(t.strip() for t in out[14:20])


def test_sweep_returns_a_reply_per_strength_and_the_tradeoff_chart(client):
    out = client.predict(Q, A, "create", "0, 1, 3", 16, api_name="/sweep")
    texts, labels = out[:6], out[6:12]
    assert all(t.strip() for t in texts[:3]) and list(texts[3:]) == ["", "", ""]
    assert all(lab["label"] in LEVELS for lab in labels[:3])
    plot, json_path, csv_path, status = out[12:]
    names = [t["name"] for t in json.loads(plot["plot"])["data"]]
    assert names[:2] == ["probability of 'create' (judge)", "perplexity (lower = more fluent)"]
    record = json.loads(open(json_path, encoding="utf-8").read())
    assert [r["strength"] for r in record["rows"]] == [0.0, 1.0, 3.0]
    assert all(r["perplexity"] > 0 for r in record["rows"]) and "highest probability" in status


@pytest.mark.parametrize("args, message", [(("create", "1, x"), "strengths"), (("create", "9"), "from 0")])
def test_sweep_refuses_bad_strengths(client, args, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        client.predict(Q, A, *args, 8, api_name="/sweep")


def test_compare_api_is_declared_once_and_documented_in_order(client):
    """/compare's parameters are CompareRequest's fields (their one declaration), with the defaults it shows,
    and the README lists them in that order."""
    import re

    from conftest import ROOT

    from steer_core.views.compare import API, CompareRequest

    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/compare"]
    names = [p["parameter_name"] for p in api["parameters"]]
    assert names[:3] == ["question", "student_answer", "level"]
    assert names == list(API)
    shown = CompareRequest.api_signature().parameters
    for p in api["parameters"][3:]:  # heads: the widget's value, every head of the loaded model
        want = list(range(9)) if p["parameter_name"] == "heads" else shown[p["parameter_name"]].default
        assert p["parameter_has_default"] and p["parameter_default"] == want, p
    readme = (ROOT / "README.md").read_text()
    assert "`/compare` takes " in readme, "the README's API paragraph lists /compare's parameters"
    listed = readme.split("`/compare` takes ")[1].split("`/ladder`")[0]
    assert re.findall(r"`([a-z_]+)`", listed) == names


THREE = (
    "id,question,student_answer\n"
    "flour,A recipe for 4 people uses 300 g of flour. How much flour is needed for 6 people?,450 g\n"
    "moon,Why do we see phases of the Moon?,Because the Earth's shadow covers part of the Moon.\n"
    "ice,Why does ice float on water?,Because ice is lighter.\n"
    "empty,What is a prime number?,\n"
)


def evaluate(client, path, levels=("remember", "create"), methods=("sae", "fewshot")):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), list(levels), list(methods), api_name="/evaluate")


def _data(table):
    return table["data"] if isinstance(table, dict) else table


def test_evaluate_returns_the_summary_of_an_uploaded_file(client, tmp_path):
    path = tmp_path / "three.csv"
    path.write_text(THREE, encoding="utf-8")
    status, table, chart, shares, replies, results, summary, rows = evaluate(client, path)
    assert "Done in" in status and "3 scenarios" in status
    assert "3 scenarios to run" in rows and "line 5: The student answer is empty" in rows
    data = _data(table)
    assert [r[0] for r in data] == ["Unsteered", "SAE-steered", "Few-shot"]
    assert all("[" in r[2] for r in data)  # accuracy with its interval over the scenarios
    assert json.loads(chart["plot"])["data"] and json.loads(shares["plot"])["data"]
    texts = _data(replies)
    assert len(texts) == 3 * (1 + 2 * 2) and {r[0] for r in texts} == {"flour", "moon", "ice"}
    lines = open(results, encoding="utf-8").read().splitlines()
    assert lines[0].startswith("scenario_id,question,student_answer") and len(lines) > len(texts)
    assert open(summary, encoding="utf-8").readline().startswith("model,style,method")


def test_bad_uploads_are_refused_each_with_a_message_and_the_app_keeps_serving(client, tmp_path):
    from gradio_client.exceptions import AppError
    from test_question_sets import BAD_UPLOADS

    assert len(BAD_UPLOADS) >= 20
    for i, (name, content, message) in enumerate(BAD_UPLOADS):
        path = None
        if name is not None:
            path = tmp_path / f"{i}" / name
            path.parent.mkdir()
            path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        with pytest.raises(AppError) as exc:
            if path is None:
                client.predict(None, ["create"], ["fewshot"], api_name="/evaluate")
            else:
                evaluate(client, path, ["create"], ["fewshot"])
        text = str(exc.value)
        # a wrong type may be refused by the upload widget itself, before the app reads the file
        assert message in text or (name and "Invalid file type" in text), (name, text)
    assert compare(client, level="apply", max_new_tokens=4)[0].strip()


def test_evaluate_ladder_and_compare_at_once_equal_each_alone(client, tmp_path):
    path = tmp_path / "three.csv"
    path.write_text(THREE, encoding="utf-8")
    calls = [
        lambda: [r[-1] for r in _data(evaluate(client, path, ["apply"], ["sae"])[4])],
        lambda: compare(client, level="evaluate", max_new_tokens=16)[:4],
        lambda: client.predict(Q, A, "query", 1.0, 12, api_name="/ladder")[:7],
        lambda: compare(client, level="remember", max_new_tokens=16, target="delta")[:4],
    ]
    alone = [call() for call in calls]
    with ThreadPoolExecutor(len(calls)) as pool:
        together = list(pool.map(lambda call: call(), calls))
    assert together == alone


def test_memory_stays_flat_over_repeated_evaluations(client, app_server, tmp_path):
    """The server's resident memory reaches a plateau: after the first runs (which load the judge and the
    few-shot pool, and give each worker thread its allocator arena) a run adds nothing that stays."""
    path = tmp_path / "one.csv"
    path.write_text(THREE.split("\n", 2)[0] + "\n" + THREE.split("\n")[2] + "\n", encoding="utf-8")
    pid = app_server[1].pid

    def rss_mb() -> float:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024

    sizes = []
    for _ in range(10):
        evaluate(client, path, ["create"], ["fewshot"])
        sizes.append(round(rss_mb(), 1))
    assert max(sizes[6:]) - max(sizes[2:6]) < 60, sizes  # a leak of even 15 MB a run would show


def test_prepare_finds_the_default_model_ready_and_refuses_bad_layers(client):
    from gradio_client.exceptions import AppError

    assert client.predict("8-21", api_name="/prepare").startswith("Nothing to build: layers 8-21")
    with pytest.raises(AppError, match="layer 99 is out of range|layers must look like"):
        client.predict("99", api_name="/prepare")
