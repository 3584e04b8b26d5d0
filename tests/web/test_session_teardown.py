"""R-14: a request whose database connection dies mid-request must not make the teardown raise
(under a WSGI server that would turn an answered request into a dropped connection)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, g
from sqlalchemy.exc import OperationalError

from web.services import close_session


class DeadConnectionSession:
    closed = False

    def rollback(self) -> None:
        raise OperationalError("ROLLBACK", {}, Exception("server closed the connection"))

    def close(self) -> None:
        self.closed = True


def test_teardown_survives_a_connection_that_died(caplog: pytest.LogCaptureFixture) -> None:
    app = Flask(__name__)
    session: Any = DeadConnectionSession()
    with app.app_context():
        g.db_session = session
        close_session(None)  # must not raise
    assert session.closed
    assert "rollback at teardown failed" in caplog.text
