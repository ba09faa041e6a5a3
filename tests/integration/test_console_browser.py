"""The operator console in a real browser: Debian's chromium driven by Selenium against a real uvicorn
server on loopback (real photos, FAISS gallery, SQLite access log).

Log in, enrol a person from a photo, see them listed, identify a group photo and read their name on
the page, remove them, see the audit rows; bad photos (no face, two faces, a corrupt file, 50 MB) get a
clear message and write nothing; a viewer gets 403 on the enrol page and from the API. The review page:
captures in the queue's order with the reason, one confirmed as an employee and one marked a stranger,
each an audit row naming the operator; a viewer may not review.
``FACEGATE_CONSOLE_SCREENSHOTS=docs`` saves the employees and identify pages there (README figures).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from facegate.components.core.images import load_image
from facegate.components.core.settings import load_settings
from facegate.components.gallery.enrolment import Photo
from facegate.components.service.access_log import AccessLog
from facegate.components.web.accounts import Accounts
from facegate.components.web.api.app import create_app
from tests.conftest import requires_dataset, shared_dataset
from tests.integration.live_server import make_gate, uvicorn_server
from tests.integration.test_api import KEY, TAU, recognizer  # noqa: F401 - the module-scoped fixture

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
requires_chromium = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()) or shutil.which("chromium") is None,
    reason="Debian's chromium and chromium-driver are not installed (`make setup` installs them: "
    "apt-get install chromium chromium-driver)",
)
pytestmark = [pytest.mark.integration, requires_chromium, requires_dataset("faceapi-examples")]
OTHERS = ["amy", "leonard", "penny", "raj", "sheldon"]  # enrolled beforehand, so the group photo has names
# frames at a capturing entrance: three employees far inside tau (0.24-0.28), penny near it (0.33: the
# review band is 0.1) and stuart, who is not enrolled (0.55 from penny, not recognized)
DOOR_FRAMES = [("amy", 2), ("amy", 3), ("raj", 2), ("stuart", 1), ("penny", 2)]
WAIT_S = 30


@contextlib.contextmanager
def console_server(tmp_path, recognizer, monkeypatch, settings=None):
    """The console over a fresh gallery with OTHERS enrolled, an operator and a viewer account."""
    monkeypatch.setenv("FACEGATE_HOME", str(tmp_path / "state"))
    log = AccessLog(f"sqlite:///{tmp_path / 'state' / 'access.db'}")
    gate = make_gate(tmp_path, recognizer, settings, tau=TAU, access_log=log)
    faces = shared_dataset("faceapi-examples")
    for p in OTHERS:
        gate.enrol(p, p.title(), [Photo(f"{p}1.png", (faces / p / f"{p}1.png").read_bytes())], actor="setup")
    accounts = Accounts(log.engine, legacy_key=KEY)
    secrets = {r: accounts.add(f"{r}1", r) for r in ("operator", "viewer")}
    with uvicorn_server(create_app(gate, key=KEY, accounts=accounts)) as port:

        class Server:
            base = f"http://127.0.0.1:{port}"

        Server.gate, Server.log, Server.secrets, Server.faces = gate, log, secrets, faces
        yield Server


@pytest.fixture
def server(tmp_path, recognizer, monkeypatch):
    with console_server(tmp_path, recognizer, monkeypatch) as s:
        yield s


@pytest.fixture
def review_server(tmp_path, recognizer, monkeypatch):
    """Captures on at door-1, and a few frames identified there: the review queue has something in it."""
    settings = load_settings().replace(
        {"capture": {"enabled": True, "entrances": ["door-1"]}, "recognition": {"cascade": "off"}}
    )
    with console_server(tmp_path, recognizer, monkeypatch, settings) as s:
        for person, n in DOOR_FRAMES:
            s.gate.identify(load_image(s.faces / person / f"{person}{n}.png"), entrance="door-1", actor="turnstile1")
        yield s


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--disable-extensions",
        "--no-first-run",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def wait_for(driver, css: str, text: str | None = None, gone: bool = False):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    w = WebDriverWait(driver, WAIT_S)
    if gone:
        return w.until(ec.invisibility_of_element_located((By.CSS_SELECTOR, css)))
    if text is not None:
        w.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))
    return w.until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def login(driver, base, name, secret):
    from selenium.webdriver.common.by import By

    driver.get(base + "/")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "secret").send_keys(secret)
    driver.find_element(By.ID, "login").click()
    wait_for(driver, "#who", name)


def choose(driver, selector: str, path: Path) -> str:
    """Pick a file in an <input type=file>; the checks' verdict (or the page's message) as text."""
    from selenium.webdriver.common.by import By

    driver.execute_script(
        "document.querySelector('#message').textContent=''; document.querySelector('#checks').innerHTML='';"
    )
    driver.find_element(By.CSS_SELECTOR, selector).send_keys(str(path))
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S).until(
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, "#checks li")
            or d.find_element(By.ID, "message").text.startswith(("image_too_large", "form_limit", "fix", "photos look"))
        )
    )
    return driver.find_element(By.ID, "checks").text + " | " + driver.find_element(By.ID, "message").text


def test_console_in_a_real_browser(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    t0 = time.monotonic()
    d, base, faces = browser, server.base, server.faces
    shots = os.environ.get("FACEGATE_CONSOLE_SCREENSHOTS")
    login(d, base, "operator1", server.secrets["operator"])
    assert d.current_url.endswith("/console/employees")

    # enrol howard from one photo: checked as soon as chosen, then enrolled
    d.get(base + "/console/enrol")
    d.find_element(By.ID, "employee_id").send_keys("howard")
    d.find_element(By.ID, "employee_name").send_keys("Howard")
    verdict = choose(d, "#photos", faces / "howard" / "howard1.png")
    assert "one face" in verdict and d.find_element(By.ID, "enrol").is_enabled()
    d.find_element(By.ID, "enrol").click()
    wait_for(d, "#message", "enrolled howard")

    # bad photos: a clear message, the enrol button stays off, nothing written
    audit_before, employees_before = len(server.log.audit_events()), server.gate.snapshot().n_employees
    blank = tmp_path / "blank.jpg"
    Image.new("RGB", (300, 300), (128, 128, 128)).save(blank, "JPEG")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG" * 10)
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as fh:
        fh.truncate(50 * 1024 * 1024)
    d.get(base + "/console/enrol")
    d.find_element(By.ID, "employee_id").send_keys("ghost")
    for path, expected in (
        (blank, "no_face_found"),
        (faces / "bbt2.jpg", "multiple_faces"),
        (corrupt, "unreadable_image"),
        (huge, "image_too_large"),
    ):
        text = choose(d, "#photos", path)
        assert expected in text and path.name in text, (path.name, text)
        assert not d.find_element(By.ID, "enrol").is_enabled()
    assert len(server.log.audit_events()) == audit_before and server.gate.snapshot().n_employees == employees_before
    assert "ghost" not in {e["employee_id"] for e in server.gate.employees()}

    # listed, with a thumbnail
    d.get(base + "/console/employees")
    row = wait_for(d, 'tr[data-id="howard"]')
    assert "Howard" in row.text
    WebDriverWait(d, WAIT_S).until(
        lambda _: d.execute_script(
            "return [...document.querySelectorAll('img.thumb')].every(i => i.complete && i.naturalWidth > 0)"
        )
    )
    if shots:
        d.save_screenshot(str(Path(shots) / "console_employees.png"))

    # identify a group photo: the name is on the page
    d.get(base + "/console/identify")
    d.find_element(By.ID, "frame").send_keys(str(faces / "bbt5.jpg"))
    d.find_element(By.ID, "identify").click()
    wait_for(d, "#message", "recognized")
    listed = d.find_element(By.ID, "faces").text
    assert "Howard (howard)" in listed, listed
    if shots:
        d.save_screenshot(str(Path(shots) / "console_identify.png"))

    # remove with confirmation
    d.get(base + "/console/employees")
    d.find_element(By.CSS_SELECTOR, 'button.remove[data-id="howard"]').click()
    WebDriverWait(d, WAIT_S).until(ec.alert_is_present()).accept()
    wait_for(d, "#message", "removed howard")
    assert "howard" not in {e["employee_id"] for e in server.gate.employees()}

    # the access log: the removal and the enrolment by this operator, the decisions at the console
    d.get(base + "/console/log")
    audit = d.find_element(By.ID, "audit").text
    assert "operator1 remove howard" in audit and "operator1 enrol howard" in audit, audit
    assert "console" in d.find_element(By.ID, "decisions").text

    # a viewer: no enrol page, and the API says 403 to the same session
    d.find_element(By.CSS_SELECTOR, "form.who button").click()
    login(d, base, "viewer1", server.secrets["viewer"])
    d.get(base + "/console/enrol")
    assert "may not enrol" in d.find_element(By.ID, "forbidden").text
    status = d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const f = new FormData(); f.append('employee_id', 'x');
        f.append('images', new Blob(['x'], {type: 'image/png'}), 'x.png');
        fetch('/employees', {method: 'POST', body: f}).then(r => done(r.status));""")
    assert status == 403
    assert time.monotonic() - t0 < 60


def test_review_page_in_a_real_browser(review_server, browser):
    """Captures at door-1 reviewed at the console: the queue in the API's order (most instructive first),
    with each reason; a near-threshold capture confirmed as its employee, a stranger marked; the labels
    and their audit rows written; the queue without them on reload; no review for a viewer."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    t0 = time.monotonic()
    d, base, store = browser, review_server.base, review_server.gate.captures
    login(d, base, "operator1", review_server.secrets["operator"])
    d.get(base + "/console/review")
    wait_for(d, "#review tbody tr[data-id]")
    queue = d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/captures/review').then(r => r.json()).then(done);""")  # the API, with the same session
    assert len(queue) == len(DOOR_FRAMES) == store.count()
    assert [q["priority"] for q in queue] == sorted((q["priority"] for q in queue), reverse=True)
    rows = d.find_elements(By.CSS_SELECTOR, "#review tbody tr[data-id]")
    assert [int(r.get_attribute("data-id")) for r in rows] == [q["id"] for q in queue]
    for row, q in zip(rows, queue, strict=True):
        cells = row.find_elements(By.TAG_NAME, "td")
        assert cells[6].text == ", ".join(q["why"]) and cells[3].text == q["decision"], (row.text, q)
    top, stranger = queue[0], next(q for q in queue if q["decision"] == "not_recognized")
    assert top["nearest_id"] == "penny" and top["why"][0] == "near_threshold"  # 0.33 against tau 0.4
    assert "new_entrance" in stranger["why"] and stranger["id"] != top["id"]
    WebDriverWait(d, WAIT_S).until(
        lambda _: d.execute_script(
            "return [...document.querySelectorAll('#review img.thumb')].every(i => i.complete && i.naturalWidth > 0)"
        )
    )

    # confirm the top capture as the employee it was recognised as (the field is filled with the nearest)
    row = d.find_element(By.CSS_SELECTOR, f'#review tr[data-id="{top["id"]}"]')
    assert row.find_element(By.CSS_SELECTOR, "input.who").get_attribute("value") == "penny"
    row.find_element(By.CSS_SELECTOR, 'button.label[data-label="employee"]').click()
    wait_for(d, "#message", f"capture {top['id']}: employee penny")
    wait_for(d, f'#review tr[data-id="{top["id"]}"]', gone=True)
    # mark the not-recognised face a stranger
    row = d.find_element(By.CSS_SELECTOR, f'#review tr[data-id="{stranger["id"]}"]')
    row.find_element(By.CSS_SELECTOR, 'button.label[data-label="stranger"]').click()
    wait_for(d, "#message", f"capture {stranger['id']}: stranger")

    confirmed, marked = store.get(top["id"]), store.get(stranger["id"])
    assert (confirmed["label"], confirmed["label_employee_id"], confirmed["labelled_by"]) == (
        "employee",
        "penny",
        "operator1",
    )
    assert (marked["label"], marked["label_employee_id"], marked["labelled_by"]) == ("stranger", None, "operator1")
    labels = [e for e in review_server.log.audit_events() if e["action"] == "capture_label"]
    assert len(labels) == 2 and {
        (e["actor"], e["employee_id"], e["detail"]["capture_id"], e["detail"]["label"]) for e in labels
    } == {("operator1", "penny", top["id"], "employee"), ("operator1", None, stranger["id"], "stranger")}
    d.get(base + "/console/log")
    assert d.find_element(By.ID, "audit").text.count("operator1 capture_label") == 2

    # reloaded, the queue holds only what is still unlabelled, in the same order
    d.get(base + "/console/review")
    rest = [q["id"] for q in queue if q["id"] not in (top["id"], stranger["id"])]
    assert [
        int(r.get_attribute("data-id")) for r in d.find_elements(By.CSS_SELECTOR, "#review tbody tr[data-id]")
    ] == rest
    assert d.find_element(By.ID, "count").text == str(len(rest))

    # captures are biometrics: a viewer gets the 403 page and no queue
    d.find_element(By.CSS_SELECTOR, "form.who button").click()
    login(d, base, "viewer1", review_server.secrets["viewer"])
    d.get(base + "/console/review")
    assert "may not review" in d.find_element(By.ID, "forbidden").text
    assert not d.find_elements(By.CSS_SELECTOR, "#review tr[data-id]")
    assert time.monotonic() - t0 < 60
