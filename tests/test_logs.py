"""Log lines cannot be forged: :class:`segmint.logs.SafeFormatter` escapes line breaks.

Ids and event names come from clients and end up in log messages; a ``\\r\\n`` in
them must not start a new, fake log line.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segmint.logs import SafeFormatter, configure_logging

#: Everything Python's str.splitlines() (and so many log readers) treats as a line break.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("segmint.tests.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_a_crlf_in_a_logged_id_stays_on_one_line(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = capture
    logger.info("unknown person %s", "id\r\nINFO segmint.api: admin logged in")

    output = stream.getvalue()
    assert output.count("\n") == 1  # the handler's own terminator only
    [line] = output.splitlines()
    assert (
        line == r"INFO segmint.tests.logs: unknown person id\r\nINFO segmint.api: admin logged in"
    )


def test_other_control_characters_are_escaped_and_tabs_kept(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = capture
    logger.warning("event %s", "a\tb\x1b[31mred\x00")

    assert stream.getvalue() == "WARNING segmint.tests.logs: event a\tb\\x1b[31mred\\x00\n"


def test_the_message_template_is_escaped_too(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = capture
    logger.info("built by concatenation: " + "x\nFAKE")

    assert len(stream.getvalue().splitlines()) == 1


def test_a_traceback_keeps_its_lines(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed for %s", "id\nFAKE")

    first, *rest = stream.getvalue().splitlines()
    assert first == r"ERROR segmint.tests.logs: failed for id\nFAKE"
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: boom"


@pytest.mark.parametrize("separator", ["\x85", "\u2028", "\u2029"], ids=["NEL", "LS", "PS"])
def test_unicode_line_separators_are_escaped(separator: str) -> None:
    """NEL is a C1 control character; LS and PS end lines in str.splitlines(), JSON
    viewers and many log UIs. None may reach the log as is."""
    record = logging.LogRecord(
        "segmint.x", logging.INFO, __file__, 1, "id %s", (f"a{separator}FAKE",), None
    )
    formatted = SafeFormatter("%(message)s").format(record)

    assert separator not in formatted
    assert len(formatted.splitlines()) == 1


@settings(max_examples=300, deadline=None)
@given(value=st.text())
def test_no_logged_value_makes_more_than_one_line(value: str) -> None:
    record = logging.LogRecord("segmint.x", logging.INFO, __file__, 1, "id %s", (value,), None)
    formatted = SafeFormatter("%(message)s").format(record)

    assert not set(formatted) & set(LINE_BREAKS)
    assert len(formatted.splitlines()) <= 1


@given(value=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_printable_text_is_logged_unchanged(value: str) -> None:
    record = logging.LogRecord("segmint.x", logging.INFO, __file__, 1, "%s", (value,), None)
    assert SafeFormatter("%(message)s").format(record) == value


def test_configure_logging_installs_the_safe_formatter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    try:
        configure_logging(logging.INFO)
        logging.getLogger("segmint.tests.configured").info("id %s", "a\r\nFAKE")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])

    assert stream.getvalue() == "INFO segmint.tests.configured: id a\\r\\nFAKE\n"
