"""The viewer in a real browser: headless Chromium (Debian's) against the app served by uvicorn
on 127.0.0.1, and against the HTML export opened from disk. Real runs of the tiny model (an
evaluation and a training run, tests/view/conftest.py); clicks through filters, an episode, its
group and the learning curves, asserting on what the page shows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from agentenv.evaluate import failure_reason
from agentenv.jsonl import iter_jsonl
from agentenv.launch import LocalServer
from agentenv.runfiles import RESULTS, ROLLOUTS
from agentenv.view.app import FACTORY
from agentenv.view.export import export_html
from agentenv.view.runs import open_run
from tests.view import browser as web

pytestmark = pytest.mark.skipif(web.missing() is not None, reason=str(web.missing()))

TOKENS_JS = """
const colour = (css) => {
  const probe = document.createElement('span');
  probe.style.background = css;
  document.body.append(probe);
  const value = getComputedStyle(probe).backgroundColor;
  probe.remove();
  return value;
};
return {
  on: colour('var(--mask-on)'),
  off: colour('var(--mask-off)'),
  segments: [...document.querySelectorAll('.segment')].map((s) => ({
    kind: s.dataset.kind,
    turn: Number(s.dataset.turn),
    tokens: [...s.querySelectorAll('.tok')].map((t) => ({
      background: getComputedStyle(t).backgroundColor,
      mask: Number(t.dataset.mask),
      text: t.textContent,
    })),
  })),
};
"""


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    driver = web.start_browser()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def eval_url(eval_run: Path) -> Iterator[str]:
    with LocalServer(FACTORY, {"source": str(eval_run)}) as server:
        yield server.url


@pytest.fixture(scope="module")
def train_url(train_run: Path) -> Iterator[str]:
    with LocalServer(FACTORY, {"source": str(train_run)}) as server:
        yield server.url


def rows_of(path: Path) -> list[dict[str, Any]]:
    return [row for _, row in iter_jsonl(path)]


def shown_rows(driver: Any) -> list[dict[str, str]]:
    """The episode list as the page shows it: one dict of column → cell text per row."""
    return driver.execute_script(
        "const keys = [...document.querySelectorAll('#episodes th')].map((th) => th.dataset.key);"
        "return [...document.querySelectorAll('#episodes tbody tr')].map((tr) =>"
        " Object.fromEntries([...tr.children].map((td, i) => [keys[i], td.textContent])));"
    )


def choose(driver: Any, select_id: str, value: str, what: str) -> None:
    """Pick ``value`` in a filter: the list's address changes, and the list with it."""
    before = driver.execute_script("return location.hash")
    Select(driver.find_element(By.ID, select_id)).select_by_value(value)
    web.wait_for(lambda: driver.execute_script("return location.hash") != before, what)


def colour_by(driver: Any, value: str) -> None:
    """Colour the tokens by ``value``: the episode is drawn again with that legend."""
    Select(driver.find_element(By.ID, "colour")).select_by_value(value)
    label = {"mask": "loss mask 1", "advantage": "positive advantage"}[value]
    web.wait_for(lambda: label in driver.find_element(By.CSS_SELECTOR, ".legend").text, value)


def open_episode(driver: Any, url: str, episode_id: int) -> None:
    web.open_view(driver, f"{url}/#/episode/{episode_id}", ".turn", f"episode {episode_id}")


def test_filters_and_sorting_of_an_eval_run(driver, eval_url, eval_run):
    rows = rows_of(eval_run / RESULTS)
    web.open_view(driver, eval_url, "#episodes tbody tr", "the episode list")
    assert driver.find_element(By.ID, "count").text.startswith("10 of 10 episodes")
    assert len(shown_rows(driver)) == 10

    choose(driver, "f-env", "tooluse-v0", "the env filter")
    web.wait_for(lambda: len(shown_rows(driver)) == 4, "4 tooluse episodes")
    assert {r["env"] for r in shown_rows(driver)} == {"tooluse-v0"}

    reasons = {r["failure"] for r in shown_rows(driver)}
    reason = sorted(reasons)[0]
    choose(driver, "f-failure", reason, "the failure filter")
    expected = [r for r in rows if r["env"] == "tooluse-v0"]
    expected = [r for r in expected if (failure_reason(r) or "") == reason]
    web.wait_for(lambda: len(shown_rows(driver)) == len(expected), "the failure filter's rows")
    assert {r["failure"] for r in shown_rows(driver)} == {reason}

    driver.find_element(By.ID, "f-clear").click()
    web.wait_for(lambda: len(shown_rows(driver)) == 10, "all episodes again")
    task = rows[0]["task_id"]
    box = driver.find_element(By.ID, "f-task")
    box.send_keys(task[-6:] + "\n")
    web.wait_for(lambda: {r["task"] for r in shown_rows(driver)} == {task}, "the task filter")
    assert len(shown_rows(driver)) == 2  # k = 2 samples of that task

    driver.find_element(By.ID, "f-clear").click()
    web.wait_for(lambda: len(shown_rows(driver)) == 10, "all episodes again")
    for _ in range(2):  # ascending, then descending
        driver.find_element(By.CSS_SELECTOR, "#episodes th[data-key=tokens]").click()
    web.wait_for(lambda: "desc=1" in driver.current_url, "a descending sort")
    tokens = [int(r["tokens"]) for r in shown_rows(driver)]
    assert tokens == sorted((r["tokens"] for r in rows), reverse=True)
    assert web.console_errors(driver) == []


def test_an_episode_shows_its_chat_rewards_and_masks(driver, eval_url, eval_run):
    rows = rows_of(eval_run / RESULTS)
    web.open_view(driver, eval_url, "#episodes tbody tr", "the episode list")
    web.rows(driver)[0].click()
    web.wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".turn"), "the episode")
    row = rows[0]

    assert driver.find_element(By.ID, "ep-reward").text == fmt(row["reward"])
    shown = driver.find_element(By.ID, "ep-components").text
    assert shown == ", ".join(f"{k} {fmt(v)}" for k, v in row["components"].items())
    for i, turn in enumerate(row["per_turn"]):
        card = driver.find_element(By.CSS_SELECTOR, f".turn[data-turn='{i}']")
        cells = {
            tr.find_element(By.CSS_SELECTOR, "td").text: tr.find_element(
                By.CSS_SELECTOR, "td.num"
            ).text
            for tr in card.find_elements(By.CSS_SELECTOR, "table.components tr")
        }
        assert cells == {k: fmt(v) for k, v in turn["components"].items()}
        assert card.find_element(By.CSS_SELECTOR, ".turn-reward").text == fmt(turn["reward"])
        messages = card.find_elements(By.CSS_SELECTOR, ".msg")
        assert messages[0].get_attribute("data-role") == "assistant"

    driver.find_element(By.CSS_SELECTOR, ".prompt-tokens summary").click()
    page = driver.execute_script(TOKENS_JS)
    segments = page["segments"]
    transcript = row["transcript"]["tokens"]
    assert [(s["turn"], s["kind"] == "action") for s in segments] == [
        (s["turn"], s["loss_mask"] == 1) for s in transcript
    ]
    for seg, saved in zip(segments, transcript, strict=True):
        assert [t["text"] for t in seg["tokens"]] == [x.replace("\n", "↵\n") for x in saved["text"]]
        colours = {t["background"] for t in seg["tokens"]}
        # the mask colour is on the assistant's tokens and nowhere else
        assert colours == ({page["on"]} if seg["kind"] == "action" else {page["off"]}), seg["kind"]
    generated = sum(len(s["tokens"]) for s in segments if s["kind"] == "action")
    assert generated == row["tokens"]

    colour_by(driver, "advantage")
    page = driver.execute_script(TOKENS_JS)
    for seg in page["segments"]:
        colours = {t["background"] for t in seg["tokens"]}
        if seg["kind"] == "action":
            assert page["on"] not in colours and page["off"] not in colours
        else:
            assert colours == {page["off"]}
    colour_by(driver, "mask")
    assert web.console_errors(driver) == []


def fmt(value: float) -> str:
    """How the page prints a number (integers bare, others with 3 decimals)."""
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def test_the_group_view_shows_the_group_side_by_side(driver, eval_url, eval_run):
    run = open_run(eval_run)
    open_episode(driver, eval_url, 4)
    driver.find_element(By.ID, "open-group").click()
    group = run.groups[run.episodes[4].group]
    # One snapshot of the columns per poll (id, class, turns), read in the page: element handles
    # held across polls go stale when the view re-renders.
    script = (
        "return [...document.querySelectorAll('.gcol')].map(c => "
        "[Number(c.dataset.id), c.className, c.querySelectorAll('.gturn').length])"
    )
    columns = web.wait_for(
        lambda: (found := driver.execute_script(script)) and len(found) == len(group) and found,
        "the group",
    )
    ids = [i for i, _, _ in columns]
    assert ids == group and 4 in ids
    assert "current" in columns[ids.index(4)][1]
    assert [turns for _, _, turns in columns] == [run.episodes[i].summary["turns"] for i in ids]
    assert web.console_errors(driver) == []


def test_a_training_run_links_curves_to_steps_and_shows_the_credit_it_trained_with(
    driver, train_url, train_run
):
    saved = rows_of(train_run / ROLLOUTS)
    web.open_view(driver, train_url, "#episodes tbody tr", "the episode list")
    driver.find_element(By.ID, "tab-curves").click()
    web.wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".chart"), "the learning curves")
    charts = {
        c.get_attribute("data-metric") for c in driver.find_elements(By.CSS_SELECTOR, ".chart")
    }
    assert {"train/reward", "eval/success", "train/loss"} <= charts
    point = driver.find_element(
        By.CSS_SELECTOR, ".chart[data-metric='train/reward'] .pt[data-step='2']"
    )
    point.click()
    web.wait_for(lambda: "step=2" in driver.current_url and web.rows(driver), "step 2's episodes")
    shown = shown_rows(driver)
    assert len(shown) == 6 and {(r["split"], r["step"]) for r in shown} == {("train", "2")}

    web.rows(driver)[0].click()
    web.wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".turn"), "the episode")
    episode_id = int(driver.current_url.rsplit("/", 1)[1])
    credit = saved[episode_id]["metadata"]["credit"]
    assert (
        Select(driver.find_element(By.ID, "estimator")).first_selected_option.get_attribute("value")
        == "igpo"
    )
    for i, advantage in enumerate(credit["advantage"]):
        cell = driver.find_element(
            By.CSS_SELECTOR, f".turn[data-turn='{i}'] tr[data-estimator=igpo] td.num"
        )
        assert cell.text == f"{'+' if advantage > 0 else ''}{advantage:.3f}"
        rloo = driver.find_element(
            By.CSS_SELECTOR, f".turn[data-turn='{i}'] tr[data-estimator=rloo] td.num"
        )
        assert rloo.text != "n/a"  # the others, for comparison

    colour_by(driver, "advantage")
    page = driver.execute_script(TOKENS_JS)
    for seg in page["segments"]:
        if seg["kind"] != "action":
            assert {t["background"] for t in seg["tokens"]} == {page["off"]}
            continue
        advantage = credit["advantage"][seg["turn"]]
        hue = "rgba(22, 163, 74" if advantage >= 0 else "rgba(220, 38, 38"
        assert all(t["background"].startswith(hue) for t in seg["tokens"]), seg["turn"]
    assert web.console_errors(driver) == []


def test_the_html_export_opens_from_disk(driver, expert_run, tmp_path):
    done = export_html(open_run(expert_run), tmp_path / "expert.html", max_episodes=8)
    url = done.path.as_uri()
    web.open_view(driver, url, "#episodes tbody tr", "the exported list")
    assert "8 of 10 episodes" in driver.find_element(By.ID, "notice").text
    rows = rows_of(expert_run / RESULTS)
    tool_episode = next(i for i, r in enumerate(rows[:8]) if r["env"] == "tooluse-v0")
    web.open_view(driver, f"{url}#/episode/{tool_episode}", ".turn", "an exported episode")
    assert driver.find_elements(By.CSS_SELECTOR, ".msg.assistant .toolcall")
    assert driver.find_elements(By.CSS_SELECTOR, ".msg.tool")
    assert driver.find_element(By.ID, "ep-success").text == "success"
    web.open_view(driver, f"{url}#/episode/9", "#error", "the missing episode's message")
    assert "not in this file" in driver.find_element(By.ID, "error").text
    json.loads(driver.execute_script("return document.getElementById('agentenv-data').textContent"))
