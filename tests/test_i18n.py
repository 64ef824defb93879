"""The Italian catalogue covers every user-facing string, and the app speaks it."""

import subprocess
import sys

from babel.messages.pofile import read_po

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
SOURCES = ["app.py", "blueprints", "posta", "templates"]


def extracted_ids(tmp_path) -> set[str]:
    pot = tmp_path / "messages.pot"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "_l",
            "-k",
            "lazy_gettext",
            "-o",
            str(pot),
            *SOURCES,
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    with pot.open("rb") as f:
        return {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(f) if m.id}


def italian_catalog():
    with (ROOT / "translations/it/LC_MESSAGES/messages.po").open("rb") as f:
        return read_po(f, locale="it")


def test_every_string_has_an_italian_translation(tmp_path):
    catalog = italian_catalog()
    missing = []
    for msgid in sorted(extracted_ids(tmp_path)):
        message = catalog.get(msgid)
        translated = message and (
            all(message.string) if isinstance(message.string, tuple) else message.string
        )
        if not translated or message.fuzzy:
            missing.append(msgid)
    assert missing == [], f"untranslated in Italian: {missing}"


def test_italian_uses_outlook_wording():
    catalog = italian_catalog()
    expected = {
        "Connect an email": "Collega un'email",
        "Add new": "Aggiungi nuovo",
        "Sign in with Microsoft": "Accedi con Microsoft",
        "Sign in with Exchange Server": "Accedi con Exchange Server",
        "Done": "Fatto",
        "Email Integration": "Integrazione Email",
        "Settings": "Impostazioni",
    }
    for english, italian in expected.items():
        assert catalog.get(english) is not None, english
        assert catalog.get(english).string == italian


def test_pages_follow_accept_language(workspace, client_for, owner):
    client = client_for(owner)
    page = client.get("/preferences", headers={"Accept-Language": "it-IT,it;q=0.9"})
    assert "Impostazioni" in page.get_data(as_text=True)
    page = client.get("/preferences", headers={"Accept-Language": "en-US"})
    assert "Settings" in page.get_data(as_text=True)


def test_personal_language_setting_wins(workspace, client_for, owner):
    client = client_for(owner)
    client.post("/preferences", {"name": owner.name, "locale": "it"})
    page = client.get("/preferences", headers={"Accept-Language": "en-US"})
    assert "Impostazioni" in page.get_data(as_text=True)
