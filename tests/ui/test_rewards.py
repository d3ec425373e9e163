"""Editing reward weights in the console: the preview's validation and alignment, and saving a new version."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.ui.conftest import REVIEWER, sign_in

pytestmark = pytest.mark.integration
CLICKS = ("click", "completion", "rating", "skip", "return_next_day", "novelty", "diversity")  # clicks@1's components


def _weights(**changed: float) -> dict[str, str]:
    defaults = {"click": 1.0}
    return {f"weight-{i}": str(changed.get(name, defaults.get(name, 0.0))) for i, name in enumerate(CLICKS)}


def _score(fragment: str) -> str:
    match = re.search(r'<td data-measure="score">([^<]+)</td>', fragment)
    assert match, fragment
    return match.group(1)


def test_the_rewards_page_lists_the_shipped_specs_and_each_opens_with_its_preview(client):
    sign_in(client)
    page = client.get("/rewards").text
    assert 'href="/rewards/clicks"' in page and 'href="/rewards/engagement"' in page
    clicks = client.get("/rewards/clicks").text
    assert clicks.count('type="number"') == len(CLICKS) and 'min="0.0" max="3.0"' in clicks
    assert "<strong>valid</strong> on log v2-vs-v1" in clicks and "The edit is valid" in clicks
    assert _score(clicks) not in ("—", "nan")


def test_the_preview_follows_the_weights_and_names_what_is_wrong(client):
    token = sign_in(client)
    url = "/rewards/clicks/preview?version=1"
    unchanged = client.post(url, data={**_weights(), "csrf_token": token})
    edited = client.post(url, data={**_weights(novelty=2.0), "csrf_token": token})
    assert unchanged.status_code == edited.status_code == 200
    assert _score(edited.text) != _score(unchanged.text)  # the alignment of the edit, measured on the log
    assert "weight: 2.0" in edited.text and "The edit is valid" in edited.text
    outside = client.post(url, data={**_weights(completion=7.0), "csrf_token": token}).text
    assert "component completion: weight 7 is outside its declared range [0, 3]" in outside
    assert "Fix the problems above before saving." in outside
    bounded = client.post("/rewards/engagement/preview?version=1", headers={"x-csrf-token": token},
                          data={"weight-0": "1", "weight-1": "1", "weight-2": "3", "weight-3": "0"}).text  # fmt: skip
    assert "<strong>INVALID</strong>" in bounded and "outside the declared bounds" in bounded
    assert client.post(url, data=_weights()).status_code == 403


def test_saving_adds_a_version_naming_the_reviewer_and_the_reason_and_keeps_the_old_one(client, config):
    token = sign_in(client)

    def save(reason: str, **weights: float):
        form = {**_weights(**weights), "reason": reason, "csrf_token": token}
        return client.post("/rewards/clicks?version=1", data=form)

    refused = save(" ", novelty=2.0)
    assert refused.status_code == 303 and not (config.rewards_dir / "clicks").exists()
    assert "Not saved: say why" in client.get("/rewards/clicks").text
    save("more", completion=7.0)
    assert "Not saved: component completion: weight 7 is outside" in client.get("/rewards/clicks").text
    saved = save("novel clicks retain", novelty=2.0)
    assert saved.headers["location"] == "/rewards/clicks?version=2"
    path = config.rewards_dir / "clicks" / "v2.yaml"
    text = path.read_text()
    assert text.startswith(f"# Edited in the review console by {REVIEWER} from clicks@1")
    assert "# Reason: novel clicks retain" in text
    spec = yaml.safe_load(text)
    assert spec["version"] == 2 and spec["tuned_from"] == "clicks@1"
    assert {c["signal"]: c["weight"] for c in spec["components"]}["novelty"] == 2.0
    page = client.get("/rewards/clicks?version=2").text
    assert "Saved clicks@2" in page and "Reward clicks@2" in page and 'value="2.0"' in page
    again = save("less", novelty=1.0)
    assert again.headers["location"] == "/rewards/clicks?version=3" and path.read_text() == text  # never overwritten


def test_an_unknown_reward_is_a_404(client):
    sign_in(client)
    assert client.get("/rewards/nothing", headers={"accept": "text/html"}).status_code == 404
    assert client.get("/rewards/clicks?version=9", headers={"accept": "text/html"}).status_code == 404
