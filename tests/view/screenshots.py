"""Screenshots of the viewer's main views for the docs, in headless Chromium.

    python -m tests.view.screenshots --eval EVAL_RUN --train TRAIN_RUN [--out docs/images]

Serves each run with the viewer app (uvicorn on 127.0.0.1) and writes, of the evaluation,
``viewer-list.png`` and ``viewer-eval-episode.png`` (its first episode), and of the training run
``viewer-episode.png`` (tokens by loss mask), ``viewer-credit.png`` (tokens by advantage),
``viewer-group.png`` and ``viewer-curves.png`` (learning curves).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from agentenv.launch import LocalServer
from agentenv.view.app import FACTORY
from agentenv.view.runs import open_run
from tests.view import browser as web

SIZE = (1360, 860)


def shoot(driver: web.webdriver.Chrome, url: str, ready: str, path: Path) -> None:
    web.open_view(driver, url, ready, path.name)
    driver.save_screenshot(str(path))
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} KB)")


def interesting_episode(run_dir: Path) -> int:
    """A training episode whose group has both successes and failures (non-zero credit)."""
    run = open_run(run_dir)
    for ids in run.groups.values():
        outcomes = {run.episodes[i].summary["success"] for i in ids}
        if len(outcomes) == 2 and run.episodes[ids[0]].summary["split"] == "train":
            return next(i for i in ids if run.episodes[i].summary["success"])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, required=True, help="an evaluation run folder")
    parser.add_argument("--train", type=Path, required=True, help="a training run folder")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    driver = web.start_browser(*SIZE)
    try:
        with LocalServer(FACTORY, {"source": str(args.eval)}) as server:
            shoot(
                driver, f"{server.url}/#/list", "#episodes tbody tr", args.out / "viewer-list.png"
            )
            url = f"{server.url}/#/episode/0"
            shoot(driver, url, ".turn", args.out / "viewer-eval-episode.png")
        episode = interesting_episode(args.train)
        with LocalServer(FACTORY, {"source": str(args.train)}) as server:
            shoot(driver, f"{server.url}/#/curves", ".chart", args.out / "viewer-curves.png")
            url = f"{server.url}/#/episode/{episode}"
            shoot(driver, url, ".turn", args.out / "viewer-episode.png")
            Select(driver.find_element(By.ID, "colour")).select_by_value("advantage")
            driver.execute_script(
                "document.querySelector('.turn[data-turn=\"0\"]').scrollIntoView()"
            )
            driver.save_screenshot(str(args.out / "viewer-credit.png"))
            print(f"wrote {args.out / 'viewer-credit.png'}")
            shoot(driver, f"{server.url}/#/group/{episode}", ".gcol", args.out / "viewer-group.png")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
