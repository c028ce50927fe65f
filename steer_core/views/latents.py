"""A latent's card, as a page shows it: read from the built cards (inspect.cards) and the model's SAE and offset
files, never computed at request time; the latent browser's searches; a level's page (the latents its offset
uses most). The UI's Latents tab and the `/latent` endpoint show exactly this."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..bloom import LEVELS, normalize_level
from ..errors import UserError
from ..inspect.cards import CARDS, PARTS, top_offset_latents
from ..layer_spec import latents_text
from ..prompts import DEFAULT_STYLE
from ..sae.store import STORE

CONTEXT_TOKENS = 12  # tokens shown each side of a top activation
SEARCH_RESULTS = 20


@dataclass
class Context:
    """One top activation: where (the row's scenario, its feedback's level, prompt or feedback), the text around
    the token, the token, and how strongly the latent fired there."""

    scenario: str
    level: str
    in_feedback: bool
    before: str
    token: str
    after: str
    activation: float


@dataclass
class LatentCard:
    layer: int
    head: int
    latent: int
    fires: float  # share of the dataset's tokens it fires on
    top_activation: float
    contexts: list[Context]
    level_mean: list[float]  # mean activation on feedback tokens of each level
    best_level: str
    level_share: float  # the best level's share of the six means (1/6: no preference, 1: one level only)
    offset: list[float] | None  # its weight in each level's learned offset (None: no offsets for the layer)
    prototype: list[float]  # its value in each level's prototype
    attention: dict[str, float]  # change of its head's attention mass on each part of the prompt when pushed
    push: float  # how hard it was pushed for `attention` and `effect` (inspect.cards.push_of)
    effect: dict | None = None  # judged replies steered by it alone (the level pages' latents only)
    unsteered: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.layer}.{self.head}:{self.latent}"

    @property
    def steer_with(self) -> str:
        """The hand-steering value a card's "steer with this latent" fills in: its push."""
        return latents_text(((self.layer, self.head, self.latent, round(self.push, 1)),))


def open_card(lm, layer, head, latent, style: str = DEFAULT_STYLE) -> LatentCard:
    """The card of one latent; a UserError that names the value for a layer, head or latent that does not exist."""
    layer, head, latent = _whole(layer, "layer"), _whole(head, "head"), _whole(latent, "latent")
    lm.check_layer(layer)
    lm.check_heads([head])
    cards = CARDS.of(lm, style)
    lc = cards.layer(layer)
    K = lc.freq.shape[1]
    if not 0 <= latent < K:
        raise UserError(f"latent {latent} does not exist: layer {layer}'s SAEs have {K} latents a head (0-{K - 1})")
    means = lc.level_mean[head, latent].tolist()
    total = sum(means)
    best = int(np.argmax(means))
    bank = STORE.get(lm, layer, style)
    card = LatentCard(
        layer, head, latent,
        fires=float(lc.freq[head, latent]),
        top_activation=float(lc.top_act[head, latent, 0]),
        contexts=_contexts(lm, cards, lc.top_act[head, latent].tolist(), lc.top_token[head, latent].tolist()),
        level_mean=[round(m, 4) for m in means],
        best_level=LEVELS[best],
        level_share=means[best] / total if total > 0 else 0.0,
        offset=_offset_weights(lm, layer, head, latent, style),
        prototype=[round(float(v), 4) for v in bank.codes[:, head, latent].tolist()],
        attention={p: float(v) for p, v in zip(cards.meta.get("parts", PARTS), lc.attention[head, latent].tolist())},
        push=float(lc.push[head, latent]),
    )  # fmt: skip
    effects = cards.meta.get("effects", {})
    card.effect, card.unsteered = effects.get(card.name), effects.get("unsteered")
    return card


def _whole(v, what: str) -> int:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a whole number, got {v!r}") from None
    if not np.isfinite(f) or f != int(f) or f < 0:
        raise UserError(f"{what} must be a whole number from 0, got {v!r}")
    return int(f)


def _contexts(lm, cards, acts: list[float], where: list[int]) -> list[Context]:
    out = []
    for a, t in zip(acts, where, strict=True):
        if a <= 0:
            continue
        row = cards.example_of(t)
        info, start = cards.meta["rows"][row], int(cards.starts[row])
        lo, hi = max(start, t - CONTEXT_TOKENS), min(int(cards.starts[row + 1]), t + CONTEXT_TOKENS + 1)
        ids = dict(enumerate(cards.ids[lo:hi].tolist(), start=lo))
        out.append(
            Context(
                info["scenario"], info["level"], t - start >= info["prompt_len"],
                lm.tokenizer.decode([ids[i] for i in range(lo, t)]), lm.tokenizer.decode([ids[t]]),
                lm.tokenizer.decode([ids[i] for i in range(t + 1, hi)]),
                round(a, 3),
            )
        )  # fmt: skip
    return out


def _offset_weights(lm, layer: int, head: int, latent: int, style: str) -> list[float] | None:
    from ..steering.offset_files import OffsetsFileError, load_offsets

    try:
        learned = load_offsets(lm, None, style)
    except OffsetsFileError:
        return None
    if layer not in learned.layers:
        return None
    return [round(float(v), 4) for v in learned.for_layer(layer)[:, head, latent].tolist()]


def search(lm, level: str | None = None, word: str | None = None, style: str = DEFAULT_STYLE) -> list[dict]:
    """The latent browser's search: with `level`, the latents that push toward it (its offset's largest weights)
    and those that fire most on its feedback against the other levels; with `word`, the latents whose top
    activations fall on a token containing it. Rows {latent, why, score}, best first."""
    if not level and not (word and word.strip()):
        raise UserError("search by a level, a word, or both")
    cards = CARDS.of(lm, style)
    rows: list[dict] = []
    if level:
        level = normalize_level(level)
        for a, h, k, w in top_offset_latents(lm, cards.layers, SEARCH_RESULTS // 2, style).get(level, []):
            rows.append({"latent": f"{a}.{h}:{k}", "why": f"its weight in the {level} offset", "score": round(w, 3)})
        rows += _by_level(cards, LEVELS.index(level), SEARCH_RESULTS - len(rows), exclude={r["latent"] for r in rows})
    if word and word.strip():
        hits = _by_word(lm, cards, word.strip().lower())
        rows = hits if not level else [r for r in hits if r["latent"] in {x["latent"] for x in rows}] or hits
    return rows[:SEARCH_RESULTS]


def _by_level(cards, li: int, n: int, exclude: set) -> list[dict]:
    """Latents whose mean on the level's feedback most exceeds their mean on the others' (ties: more firing)."""
    scored = []
    for layer in cards.layers:
        m = cards.layer(layer).level_mean  # (H, K, 6)
        score = m[..., li] - (m.sum(-1) - m[..., li]) / (m.shape[-1] - 1)
        v, i = score.flatten().topk(min(n + len(exclude), score.numel()))
        for s, j in zip(v.tolist(), i.tolist(), strict=True):
            scored.append((s, f"{layer}.{j // m.shape[1]}:{j % m.shape[1]}"))
    scored.sort(reverse=True)
    what = f"fires more on {LEVELS[li]} feedback than on the others"
    return [{"latent": name, "why": what, "score": round(s, 3)} for s, name in scored if name not in exclude][:n]


def _by_word(lm, cards, word: str) -> list[dict]:
    """Latents whose top activations land on a token that contains `word`, ranked by how strongly."""
    vocab = cards.ids.unique()
    match = [t for t in vocab.tolist() if word in lm.tokenizer.decode([t]).strip().lower()]
    if not match:
        return []
    match_t = np.asarray(match)
    ids = cards.ids.numpy()
    out = []
    for layer in cards.layers:
        lc = cards.layer(layer)
        on = np.isin(ids[lc.top_token.numpy()], match_t) & (lc.top_act.numpy() > 0)  # (H, K, C)
        strength = np.where(on, lc.top_act.numpy(), 0).max(-1)
        for h, k in zip(*np.nonzero(strength), strict=True):
            score = round(float(strength[h, k]), 3)
            out.append({"latent": f"{layer}.{h}:{k}", "why": f"fires on '{word}'", "score": score})
    out.sort(key=lambda r: -r["score"])
    return out[:SEARCH_RESULTS]


def level_page(lm, level: str, n: int = 8, style: str = DEFAULT_STYLE) -> list[LatentCard]:
    """The latents the level's learned offset uses most, each with its card."""
    level = normalize_level(level)
    cards = CARDS.of(lm, style)
    top = top_offset_latents(lm, cards.layers, n, style).get(level, [])
    if not top:
        raise UserError(f"{lm.key} has no learned offsets for the layers with cards; a level page reads them")
    return [open_card(lm, a, h, k, style) for a, h, k, _ in top]


def parse_name(text: str) -> tuple[int, int, int]:
    """'18.6:123' (a search result, a chart's bar) -> (18, 6, 123)."""
    try:
        where, latent = str(text).split("@")[0].strip().split(":")[:2]
        layer, head = where.split(".")
        return int(layer), int(head), int(latent)
    except ValueError:
        raise UserError(f"a latent is written layer.head:latent, e.g. 18.6:123; got {text!r}") from None


# ---------------------------------------------------------------------------------------------
# how a card looks
# ---------------------------------------------------------------------------------------------


def card_figure(card: LatentCard) -> go.Figure:
    """Three panels: its mean activation on each level's feedback; its weight in each level's offset and prototype;
    where its head looks more or less when it is pushed."""
    from ..charts import LEVEL_COLORS, _style

    fig = make_subplots(
        rows=1, cols=3, horizontal_spacing=0.08,
        subplot_titles=("Mean activation on feedback, by level", "In each level's offset and prototype",
                        f"Attention when pushed by {card.push:.1f}"),
    )  # fmt: skip
    colors = [LEVEL_COLORS[lv] for lv in LEVELS]
    fig.add_trace(go.Bar(x=list(LEVELS), y=card.level_mean, marker_color=colors, name="mean activation"), 1, 1)
    if card.offset is not None:
        fig.add_trace(go.Bar(x=list(LEVELS), y=card.offset, marker_color=colors, name="offset weight"), 1, 2)
    fig.add_trace(
        go.Scatter(x=list(LEVELS), y=card.prototype, mode="markers", marker={"color": "#222", "symbol": "diamond"},
                   name="prototype value"), 1, 2,
    )  # fmt: skip
    parts, shift = list(card.attention), list(card.attention.values())
    fig.add_trace(
        go.Bar(x=parts, y=shift, marker_color=["#D55E00" if s > 0 else "#0072B2" for s in shift], name="attention"),
        1, 3,
    )  # fmt: skip
    fig.update_layout(showlegend=False)
    return _style(fig, f"Latent {card.name}", "", "")


def card_html(card: LatentCard) -> str:
    """The card's text: what it is, how often it fires, which level it prefers, its top contexts with the token
    highlighted, and what steering with it alone did to the judge (where measured)."""
    e = html.escape
    share = f"{card.level_share:.0%}" if card.level_share else "-"
    lines = [
        f"<h3>Latent {e(card.name)} <small>(layer {card.layer}, head {card.head}, latent {card.latent})</small></h3>",
        f"<p>Fires on {card.fires:.2%} of the dataset's tokens; top activation {card.top_activation:.2f}. On feedback "
        f"it is most active at <b>{e(card.best_level)}</b> ({share} of its six level means; 17% is no preference).",
    ]
    if card.offset is not None and max(card.offset) > 0:
        top = LEVELS[int(np.argmax(card.offset))]
        lines.append(f" The learned offsets push it most for <b>{e(top)}</b>.")
    elif card.offset is not None:
        lines.append(" The learned offsets do not push it up for any level.")
    lines.append("</p>")
    if card.contexts:
        lines.append("<p><b>Where it fires most</b> (the token highlighted):</p><ol class='latent-contexts'>")
        for c in card.contexts:
            where = "feedback" if c.in_feedback else "prompt"
            lines.append(
                f"<li><code>{c.activation:.2f}</code> {e(c.scenario)}, {e(c.level)} {where}: "
                f"{e(c.before)}<mark>{e(c.token)}</mark>{e(c.after)}</li>"
            )
        lines.append("</ol>")
    else:
        lines.append("<p>It never fired on the dataset.</p>")
    if card.effect and card.unsteered:
        moved = [b - a for a, b in zip(card.unsteered["probs"], card.effect["probs"], strict=True)]
        best = LEVELS[int(np.argmax(moved))]
        lines.append(
            f"<p><b>Steering with it alone</b> (strength {card.effect['strength']:g}, on "
            f"{len(card.effect['texts'])} held-out scenarios): the judge's probability rose most for <b>{e(best)}</b> "
            f"({moved[LEVELS.index(best)]:+.3f}); " + ", ".join(f"{lv} {m:+.3f}" for lv, m in zip(LEVELS, moved)) +
            f".</p><p><i>{e(card.effect['texts'][0])}</i></p>"
        )  # fmt: skip
    lines.append(f"<p>Steer with it: <code>{e(card.steer_with)}</code></p>")
    return "\n".join(lines)
