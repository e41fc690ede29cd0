"""``conformance run --html``: the report of a real run, opened in headless Chromium as a person would."""

from __future__ import annotations

import stat
from html.parser import HTMLParser
from pathlib import Path

from tests.browser import browser
from tests.helpers import conformance, fixture_command

FAILED = "tftp.rrq.lost-ack"
CASES = (FAILED, "tftp.rrq.new-tid", "echo.udp.round-trip", "echo.tcp.round-trip")


class Addresses(HTMLParser):
    """Every tag and every src and href value of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.urls += [value or "" for name, value in attrs if name in ("src", "href", "xlink:href")]


def test_the_report_of_a_failing_tftp_server_in_a_browser(tmp_path: Path) -> None:
    report = tmp_path / "reports" / "conformance.html"
    tftp = fixture_command("tftp", "tftp/no_retransmission.py", "{root}")
    selected = [word for case in CASES for word in ("-k", case)]
    run = conformance(
        tmp_path, "run", "--target-cmd", tftp, "--target", "udp-echo=embedded", "--target", "echo=embedded",
        *selected, "--html", str(report),
    )  # fmt: skip
    assert run.status == 1, run.stdout + run.stderr
    assert run.failed() == {FAILED}
    ids = set(run.outcomes())
    assert ids == set(CASES)

    # Self-contained: nothing to fetch, whatever the browser.
    page = report.read_text(encoding="utf-8")
    addresses = Addresses()
    addresses.feed(page)
    assert not addresses.tags & {"link", "img", "iframe", "object", "embed"}, addresses.tags
    assert all(url.startswith("#") for url in addresses.urls), addresses.urls

    driver = browser()
    try:
        from selenium.webdriver.common.by import By

        driver.get(report.as_uri())

        def shown() -> set[str]:
            bodies = driver.find_elements(By.CSS_SELECTOR, "tbody.case")
            return {body.get_attribute("id").removeprefix("case-") for body in bodies if body.is_displayed()}

        def tick(kind: str, value: str) -> None:
            driver.find_element(By.CSS_SELECTOR, f'input[data-filter="{kind}"][value="{value}"]').click()

        rows = driver.find_elements(By.CSS_SELECTOR, "tr.case-row")
        assert sorted(row.get_attribute("data-case-id") for row in rows) == sorted(ids)
        assert shown() == ids
        assert driver.find_element(By.ID, "verdict").text == "FAIL"

        tick("outcome", "passed")
        assert shown() == {FAILED}
        assert driver.find_element(By.ID, "shown").text == "1"
        tick("outcome", "passed")
        tick("protocol", "tftp")
        assert shown() == {case for case in ids if not case.startswith("tftp.")}
        tick("protocol", "tftp")
        assert shown() == ids

        failed = driver.find_element(By.ID, f"case-{FAILED}")
        assert failed.find_element(By.TAG_NAME, "details").get_attribute("open") is not None
        passed = driver.find_element(By.ID, "case-tftp.rrq.new-tid")
        assert passed.find_element(By.TAG_NAME, "details").get_attribute("open") is None

        # The failed TFTP case: its ladder, DATA 2 arriving, then the deadline highlighted.
        ladder = failed.find_element(By.CSS_SELECTOR, "svg.ladder")
        assert ladder.is_displayed()
        lanes = [lane.text for lane in ladder.find_elements(By.CSS_SELECTOR, "g.lane text.role")]
        assert lanes[0] == "suite" and lanes.count("target") == 2, lanes  # the listener and the transfer port
        labels = [label.text for label in ladder.find_elements(By.CSS_SELECTOR, "g.datagram text.label")]
        assert labels[:4] == ['RRQ "size-1024.bin" octet', "DATA 1 (512 bytes)", "ACK 1", "DATA 2 (512 bytes)"]
        (failing,) = ladder.find_elements(By.CSS_SELECTOR, "g.failing")
        assert "deadline-expired" in failing.get_attribute("class")
        assert ladder.find_elements(By.CSS_SELECTOR, "rect.highlight")
        assert failed.find_elements(By.CSS_SELECTOR, "table.transcript tr.failing")
        # UDP echo has its ladder too; TCP echo has only its transcript.
        assert driver.find_elements(By.CSS_SELECTOR, '[id="case-echo.udp.round-trip"] svg.ladder')
        assert not driver.find_elements(By.CSS_SELECTOR, '[id="case-echo.tcp.round-trip"] svg')

        # Nothing was requested: no resource entries, no remote address in the live DOM.
        assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
        live = driver.execute_script(
            "return Array.from(document.querySelectorAll('[src],[href]'))"
            ".map(function (e) { return e.getAttribute('src') || e.getAttribute('href'); })"
        )
        assert not [url for url in live if "//" in url], live
    finally:
        driver.quit()


def test_the_page_without_transcripts_and_its_place_in_the_summary(tmp_path: Path) -> None:
    run = conformance(
        tmp_path, "run", "-k", "echo.tcp.round-trip", "--transcripts", "none",
        "--html", "out/report.html", "--markdown", "out/summary.md", umask=0o022,
    )  # fmt: skip
    assert run.status == 0, run.stdout + run.stderr
    report = tmp_path / "out" / "report.html"
    page = report.read_text(encoding="utf-8")
    assert stat.S_IMODE(report.stat().st_mode) == 0o644
    assert 'data-case-id="echo.tcp.round-trip"' in page and ">PASS<" in page
    assert "No transcript: this run recorded none (--transcripts none)." in page
    assert "[HTML](report.html)" in (tmp_path / "out" / "summary.md").read_text()
