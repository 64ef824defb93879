"""The Italian catalogue covers every user-facing string, and the app speaks it."""

import re
import subprocess
import sys

from babel.messages.extract import DEFAULT_KEYWORDS
from babel.messages.pofile import read_po

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
SOURCES = ["app.py", "blueprints", "posta", "templates"]


def extract_keywords() -> list[str]:
    """Return the -k keywords of `make extract-messages`, so both extract alike."""
    makefile = (ROOT / "Makefile").read_text()
    line = next(x for x in makefile.splitlines() if "pybabel extract" in x)
    return re.findall(r"-k (\S+)", line)


def extracted_ids(tmp_path) -> set[str]:
    pot = tmp_path / "messages.pot"
    keywords = [arg for k in extract_keywords() for arg in ("-k", k)]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            "babel.cfg",
            *keywords,
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


def test_every_gettext_alias_is_an_extract_keyword():
    # `lazy_ngettext as _ln` was once missing from the keywords, so its plural
    # strings were never extracted and showed in English in the Italian UI.
    keywords = {k.split(":")[0] for k in extract_keywords()} | set(DEFAULT_KEYWORDS)
    aliases = set()
    for folder in ("blueprints", "posta"):
        for path in (ROOT / folder).rglob("*.py"):
            aliases |= set(
                re.findall(
                    r"from flask_babel import \w*gettext as (\w+)", path.read_text()
                )
            )
    assert "_ln" in aliases
    assert aliases - keywords == set()


def test_plural_plan_limits_are_extracted_and_italian(tmp_path):
    ids = extracted_ids(tmp_path)
    msgid = (
        "%(plan)s allows %(num)d connected email account and it is in use. Remove "
        "it, or move to %(bigger)s, which allows %(more)d."
    )
    assert msgid in ids
    message = italian_catalog().get(msgid)
    assert message is not None and all(message.string)
    assert "allows" not in message.string[0]


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
