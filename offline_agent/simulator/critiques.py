"""One persona's critique of one top-10 list: measured from mismatches, or in a language model's words.

Both kinds share one schema, and signals come from one fixed vocabulary, so that "too popular" from a
model and from a measurement count together in the aggregate and in the rulebook.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from typing import Annotated, Any, Literal, TypeVar

import jinja2
import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from offline_agent.llm.base import LLM, BudgetExhausted, LLMError, Spend
from offline_agent.simulator.cache import ReplyCache, cached_answer
from offline_agent.simulator.personas import Persona, ShownItem, genre_shares, normalised_entropy

M = TypeVar("M", bound=BaseModel)

SIGNAL_MEANINGS = {
    "popularity": "blockbusters everyone has seen",
    "obscurity": "little-known films",
    "recency": "recent releases",
    "old_films": "old films",
    "diversity": "a scattered mix of unrelated kinds of film",
    "sameness": "one kind of film over and over",
}
GENRE_PREFIX = "genre:"
SIGNAL_VOCABULARY = (*SIGNAL_MEANINGS, f"{GENRE_PREFIX}<Name>")

TOP_GENRES = 3  # a persona's genres an item may share to be aligned
TOP_GENRE_MIN_SHARE = 0.1  # ...when they make up at least this share of the history
ERA_MIN_HALF_WIDTH = 5.0  # years either side of the persona's era that always count as its era
BLOCKBUSTER_PERCENTILE = 0.9  # popularity percentile from which an item is a blockbuster
POPULARITY_MARGIN = 0.15  # list mean popularity percentile above (below) the persona's conformity
GENRE_MARGIN = 0.2  # a genre's share of the list above its share of the history
ERA_MARGIN = 10.0  # years between the list's median year and the persona's era
DIVERSITY_MARGIN = 0.2  # normalised genre entropy of the list below (above) the persona's diversity
NUMBER_WORDS = ("none", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
COMPLAINTS = {
    "popularity": "too many titles everyone has seen",
    "obscurity": "too many titles nobody has heard of",
    "recency": "it leans on recent releases",
    "old_films": "it leans on old films",
    "sameness": "they are all the same kind of film",
    "diversity": "it is all over the place",
}
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def check_signal(signal: str) -> str:
    if signal in SIGNAL_MEANINGS or (signal.startswith(GENRE_PREFIX) and signal.removeprefix(GENRE_PREFIX).strip()):
        return signal
    raise ValueError(f"unknown signal {signal!r}; allowed: {', '.join(SIGNAL_VOCABULARY)}")


Signal = Annotated[str, AfterValidator(check_signal)]


class ItemVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_idx: int
    title: str
    reason: str


class Critique(BaseModel):
    """Which shown items fit the persona and why, and what the list gives too much or too little of."""

    model_config = ConfigDict(extra="forbid")

    user_idx: int
    aligned: list[ItemVerdict]
    misaligned: list[ItemVerdict]
    over_weighted: list[Signal]
    under_weighted: list[Signal]
    summary: str
    source: Literal["llm", "measured"]

    def misaligned_share(self) -> float:
        judged = len(self.aligned) + len(self.misaligned)
        return len(self.misaligned) / judged if judged else 0.0


def count_words(count: int) -> str:
    """Counts as a person says them: words up to ten, digits beyond."""
    return NUMBER_WORDS[count] if 0 <= count < len(NUMBER_WORDS) else str(count)


def measured_critique(persona: Persona, shown: list[ShownItem]) -> Critique:
    """The offline critique: each item judged on the persona's top genres and era, the list's weighting
    on measured gaps to the persona (popularity, genres, era, genre entropy). Deterministic."""
    if not shown:
        return Critique(
            user_idx=persona.user_idx,
            aligned=[],
            misaligned=[],
            over_weighted=[],
            under_weighted=[],
            summary="I was shown nothing.",
            source="measured",
        )
    favoured = favoured_genres(persona)
    verdicts = [_verdict(persona, favoured, item) for item in shown]
    aligned = [verdict for fits, verdict in verdicts if fits]
    misaligned = [verdict for fits, verdict in verdicts if not fits]
    over, under = _weighting(persona, shown, favoured)
    return Critique(
        user_idx=persona.user_idx,
        aligned=aligned,
        misaligned=misaligned,
        over_weighted=over,
        under_weighted=under,
        summary=_summary(persona, shown, len(misaligned), over, under),
        source="measured",
    )


def favoured_genres(persona: Persona) -> list[str]:
    """The top genres that carry real weight in the history (at least the first one)."""
    favoured = [g for g in persona.top_genres(TOP_GENRES) if persona.genre_taste[g] >= TOP_GENRE_MIN_SHARE]
    return favoured or persona.top_genres(1)


def _verdict(persona: Persona, favoured: list[str], item: ShownItem) -> tuple[bool, ItemVerdict]:
    shared = [g for g in item.genres if g in favoured]
    problems = []
    if favoured and not shared:
        problems.append("none of my top genres")
    if not _in_era(persona, item.year):
        problems.append(f"I mostly watch films from around {persona.era}")
    if problems:
        reason = "; ".join(problems)
    else:
        reason = f"{'/'.join(shared)} {'is' if len(shared) == 1 else 'are'} my kind of film" if shared else "fits me"
        reason += ", and from my era" if persona.era is not None and item.year is not None else ""
    return not problems, ItemVerdict(item_idx=item.item_idx, title=item.title, reason=f"{_label(item)}: {reason}")


def _in_era(persona: Persona, year: int | None) -> bool:
    if persona.era is None or year is None:
        return True
    return abs(year - persona.era) <= max(persona.era_spread, ERA_MIN_HALF_WIDTH)


def _label(item: ShownItem) -> str:
    """'Drama/Romance from 1996', or 'a 1997 Action blockbuster (top 1% popularity)'."""
    genres = "/".join(item.genres)
    if item.popularity_percentile >= BLOCKBUSTER_PERCENTILE:
        words = "".join(f"{part} " for part in (item.year, genres) if part)
        return f"a {words}blockbuster (top {_top_percent(item.popularity_percentile)}% popularity)"
    when = f"from {item.year}" if item.year is not None else "of unknown year"
    return f"{genres or 'a film'} {when}"


def _top_percent(percentile: float) -> int:
    return max(1, math.ceil(round((1 - percentile) * 100, 6)))


def _weighting(persona: Persona, shown: list[ShownItem], favoured: list[str]) -> tuple[list[str], list[str]]:
    """Signals the list gives too much of (over) and the top genres it leaves out (under)."""
    over: list[str] = []
    gap = float(np.mean([item.popularity_percentile for item in shown])) - persona.conformity
    if abs(gap) > POPULARITY_MARGIN:
        over.append("popularity" if gap > 0 else "obscurity")
    shares = genre_shares(item.genres for item in shown)
    excess = sorted(shares, key=lambda g: (persona.genre_taste.get(g, 0.0) - shares[g], g))
    over += [f"{GENRE_PREFIX}{g}" for g in excess if shares[g] - persona.genre_taste.get(g, 0.0) > GENRE_MARGIN]
    years = [item.year for item in shown if item.year is not None]
    era_gap = float(np.median(years)) - persona.era if persona.era is not None and years else 0.0
    if abs(era_gap) > ERA_MARGIN:
        over.append("recency" if era_gap > 0 else "old_films")
    spread = normalised_entropy(shares.values(), persona.catalogue_genres) - persona.diversity
    if abs(spread) > DIVERSITY_MARGIN:
        over.append("diversity" if spread > 0 else "sameness")
    under = [f"{GENRE_PREFIX}{g}" for g in favoured if g not in shares]
    return over, under


def _summary(persona: Persona, shown: list[ShownItem], misaligned: int, over: list[str], under: list[str]) -> str:
    """'Six of ten are 1990s blockbusters; I mostly watch 1950s film-noir; ...'"""
    popular = [item for item in shown if item.popularity_percentile >= BLOCKBUSTER_PERCENTILE]
    blockbusters = "popularity" in over and 2 * len(popular) >= len(shown)
    if blockbusters:
        many = len(popular) != 1
        head = f"{_of(len(popular), len(shown))} {'are' if many else 'is a'} {_decade_prefix(popular)}blockbuster"
        head += "s" if many else ""
    elif misaligned:
        head = f"{_of(misaligned, len(shown))} {'misses' if misaligned == 1 else 'miss'} my taste"
    else:
        head = f"{_of(len(shown), len(shown))} fit my taste"
    parts = [head, _my_taste(persona)]
    heavy = [s.removeprefix(GENRE_PREFIX) for s in over if s.startswith(GENRE_PREFIX)]
    if heavy:
        parts.append(f"too much {' and '.join(heavy)}")
    missing = [s.removeprefix(GENRE_PREFIX) for s in under if s.startswith(GENRE_PREFIX)]
    if missing:
        parts.append(f"no {' or '.join(missing)} at all")
    parts += [COMPLAINTS[s] for s in over if s in COMPLAINTS and not (blockbusters and s == "popularity")]
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def _of(count: int, total: int) -> str:
    return f"all {count_words(total)}" if count == total else f"{count_words(count)} of {count_words(total)}"


def _decade_prefix(items: list[ShownItem]) -> str:
    """'1990s ' when most of ``items`` come from one decade, else nothing."""
    decades = Counter(item.year // 10 * 10 for item in items if item.year is not None)
    if not decades:
        return ""
    decade, count = decades.most_common(1)[0]
    return f"{decade}s " if 2 * count > len(items) else ""


def _my_taste(persona: Persona) -> str:
    """'I mostly watch 1950s film-noir'."""
    decade = [f"{persona.era // 10 * 10}s"] if persona.era is not None else []
    top = [genre.lower() for genre in persona.top_genres(1)]
    if top:
        return " ".join(["I mostly watch", *decade, *top])
    return f"I mostly watch films from the {decade[0]}" if decade else "my history says little about my taste"


def read_prompt(name: str) -> str:
    return resources.files("offline_agent").joinpath(f"prompts/{name}").read_text()


def render_prompt(name: str, **values: Any) -> str:
    return jinja2.Template(read_prompt(name), undefined=jinja2.StrictUndefined).render(**values)


def reply_schema(model: type[BaseModel], filled_in: Sequence[str]) -> str:
    """The JSON schema the model answers in, without the fields the caller fills in itself."""
    schema = model.model_json_schema()
    for name in filled_in:
        del schema["properties"][name]
        schema["required"].remove(name)
    return json.dumps(schema)


def parse_reply(text: str, model: type[M], filled_in: dict[str, Any]) -> M:
    """The reply's JSON object (fenced or not) validated as ``model``; :class:`LLMError` saying why not."""
    data = _json_object(text)
    try:
        return model.model_validate({**data, **filled_in})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise LLMError(f"the reply does not fit the {model.__name__} schema: {problems}") from exc


def _json_object(text: str) -> dict[str, Any]:
    """The JSON of the reply: inside a ```json fence if there is one, else the whole text, else its outermost
    braces (prose around the object)."""
    fenced = _FENCE.search(text)
    body = (fenced.group(1) if fenced else text).strip()
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        start, end = body.find("{"), body.rfind("}")
        try:
            data = json.loads(body[start : end + 1]) if 0 <= start < end else None
        except json.JSONDecodeError:
            data = None
        if data is None:
            raise LLMError(f"the reply is not JSON ({exc.msg}): {text[:80]!r}") from exc
    if not isinstance(data, dict):
        raise LLMError(f"the reply is JSON but not an object: {text[:80]!r}")
    return data


class LLMCritic:
    """A language model plays the persona; replies are validated, cached and charged to ``spend``."""

    def __init__(self, llm: LLM, cache: ReplyCache, spend: Spend | None = None) -> None:
        self.llm = llm
        self.cache = cache
        self.spend = spend

    def critique(self, persona: Persona, shown: list[ShownItem]) -> Critique:
        prompt = render_prompt(
            "critique.j2",
            persona=persona.describe(),
            items=shown,
            top_percent=_top_percent,
            signals=SIGNAL_MEANINGS,
            genre_signal=SIGNAL_VOCABULARY[-1],
            schema=reply_schema(Critique, ("user_idx", "source")),
        )

        def parse(text: str) -> Critique:
            critique = parse_reply(text, Critique, {"user_idx": persona.user_idx, "source": "llm"})
            _check_verdicts(critique, shown)
            return critique

        return cached_answer(self.llm, self.cache, self.spend, read_prompt("critique_system.txt"), prompt, parse)


def _check_verdicts(critique: Critique, shown: list[ShownItem]) -> None:
    """Every shown item judged exactly once, and nothing else."""
    judged = Counter(verdict.item_idx for verdict in critique.aligned + critique.misaligned)
    expected = {item.item_idx for item in shown}
    unknown = sorted(set(judged) - expected)
    missing = sorted(expected - set(judged))
    twice = sorted(idx for idx, count in judged.items() if count > 1)
    if unknown or missing or twice:
        raise LLMError(
            f"the verdicts must judge each shown item once: not shown {unknown}, not judged {missing}, twice {twice}"
        )


def critique_users(
    personas: Sequence[Persona], lists: Sequence[list[ShownItem]], critic: LLMCritic | None
) -> tuple[list[Critique], list[str]]:
    """One critique per persona of its list: the critic's, or the measured one when there is no critic, its
    reply is unusable or the budget is spent (the reason is recorded in the second element)."""
    critiques: list[Critique] = []
    failures: list[str] = []
    for persona, shown in zip(personas, lists, strict=True):
        critique = None
        if critic is not None:
            try:
                critique = critic.critique(persona, shown)
            except (LLMError, BudgetExhausted) as exc:
                failures.append(f"critique of user {persona.user_id}: {exc}")
        critiques.append(critique if critique is not None else measured_critique(persona, shown))
    return critiques, failures
