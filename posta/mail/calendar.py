"""A tolerant, minimal iCalendar reader that turns invitations into a summary."""

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

logger = logging.getLogger(__name__)

_FOLDED = re.compile(r"\r?\n[ \t]")
_ESCAPE = re.compile(r"\\([\\;,nN])")
_DATE_TIME = re.compile(r"^(\d{8})(?:T(\d{4})(\d{2})?)?(Z)?$")


@dataclass
class CalendarEvent:
    """The parts of one VEVENT a reader needs to decide about a meeting."""

    summary: str = ""
    start: datetime | date | None = None
    end: datetime | date | None = None
    timezone: str = ""
    location: str = ""
    organizer: str = ""
    method: str = ""


def parse_events(text: str) -> list[CalendarEvent]:
    """Return the VEVENTs of an iCalendar text; unreadable properties are skipped."""
    events: list[CalendarEvent] = []
    method = ""
    current: CalendarEvent | None = None
    nesting: list[str] = []
    for line in _FOLDED.sub("", text).splitlines():
        name, params, value = _content_line(line)
        if name == "BEGIN":
            nesting.append(value.upper())
            if value.upper() == "VEVENT":
                current = CalendarEvent(method=method)
        elif name == "END":
            if nesting and nesting.pop() == "VEVENT" and current:
                events.append(current)
                current = None
        elif name == "METHOD" and current is None:
            method = value.upper()
        # Properties of nested components (VALARM, VTIMEZONE) are not the event's.
        elif current is not None and nesting and nesting[-1] == "VEVENT":
            _set_property(current, name, params, value)
    return events


def summarize(text: str) -> str:
    """Return a plain-text summary (title, time, place, organizer) of the events."""
    return "\n\n".join(_describe(event) for event in parse_events(text))


def _content_line(line: str) -> tuple[str, dict[str, str], str]:
    """Split "NAME;PARAM=x:value" at the first colon outside quotes."""
    in_quotes = False
    for index, char in enumerate(line):
        if char == '"':
            in_quotes = not in_quotes
        elif char == ":" and not in_quotes:
            head, value = line[:index], line[index + 1 :]
            break
    else:
        return "", {}, ""
    name, *raw_params = head.split(";")
    params = {}
    for param in raw_params:
        key, _, param_value = param.partition("=")
        params[key.strip().upper()] = param_value.strip().strip('"')
    return name.strip().upper(), params, value


def _set_property(event: CalendarEvent, name: str, params: dict, value: str) -> None:
    if name == "SUMMARY":
        event.summary = _unescape(value)
    elif name == "LOCATION":
        event.location = _unescape(value)
    elif name == "ORGANIZER":
        address = re.sub(r"^mailto:", "", value.strip(), flags=re.IGNORECASE)
        name_param = params.get("CN", "")
        event.organizer = f"{name_param} <{address}>" if name_param else address
    elif name in ("DTSTART", "DTEND"):
        moment = _moment(value.strip(), params.get("TZID"))
        if name == "DTSTART":
            event.start = moment
            event.timezone = params.get("TZID", "UTC" if value.endswith("Z") else "")
        else:
            event.end = moment


def _unescape(value: str) -> str:
    return _ESCAPE.sub(lambda m: "\n" if m.group(1) in "nN" else m.group(1), value)


def _moment(value: str, tzid: str | None) -> datetime | date | None:
    """Read a DATE or DATE-TIME; a TZID Python does not know leaves it naive."""
    match = _DATE_TIME.match(value)
    if not match:
        return None
    day, hour_minute, seconds, utc = match.groups()
    try:
        if hour_minute is None:
            return datetime.strptime(day, "%Y%m%d").date()
        moment = datetime.strptime(
            day + hour_minute + (seconds or "00"), "%Y%m%d%H%M%S"
        )
    except ValueError:
        return None
    if utc:
        return moment.replace(tzinfo=UTC)
    if tzid:
        try:
            return moment.replace(tzinfo=ZoneInfo(tzid))
        except (ZoneInfoNotFoundError, ValueError):
            logger.debug("Unknown calendar time zone %r", tzid)
    return moment


def _describe(event: CalendarEvent) -> str:
    title = event.summary or "(no title)"
    lines = [f"Cancelled: {title}" if event.method == "CANCEL" else f"Meeting: {title}"]
    if event.start:
        lines.append(f"When: {_when(event)}")
    if event.location:
        lines.append(f"Where: {event.location}")
    if event.organizer:
        lines.append(f"Organizer: {event.organizer}")
    return "\n".join(lines)


def _when(event: CalendarEvent) -> str:
    start, end = event.start, event.end
    if not isinstance(start, datetime):
        return start.isoformat() + (f" – {end.isoformat()}" if end else "")
    text = start.strftime("%Y-%m-%d %H:%M")
    if isinstance(end, datetime):
        same_day = end.date() == start.date()
        text += " – " + end.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M")
    return f"{text} ({event.timezone})" if event.timezone else text
