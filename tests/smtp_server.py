"""A real SMTP server for bouncewatch's tests (driven by tests/common/smtp.rs).

The alert mailer must be tested against a real SMTP implementation over a real socket, not a
mock of lettre, so this wraps aiosmtpd (Debian bookworm's python3-aiosmtpd, 1.4.3). Run it
with /usr/bin/python3, which is where Debian installs the module.

It listens on 127.0.0.1 on a port the OS picks, prints `LISTENING <port>` once it accepts
connections, and serves until killed. Everything it accepts lands in --maildir as
`<n>.json` (n = 1, 2, ... in arrival order), written before the client sees `250`, so a
test may look as soon as its send returns.
"""

import argparse
import json
import logging
import os
import socket
import sys
import threading
import warnings

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
except ImportError as err:
    # The Rust harness spots "No module named" and tells the reader what to install.
    sys.exit(f"smtp_server.py: {err}; apt-get install python3-aiosmtpd, run /usr/bin/python3")


def write_atomically(path, text):
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


class Handler:
    """Stores accepted messages and refuses the first --fail-first ones.

    aiosmtpd runs every session on one event loop thread, so the counters need no lock.
    """

    def __init__(self, maildir, fail_first, fail_code):
        self.maildir = maildir
        self.fail_first = fail_first
        self.fail_code = fail_code
        self.attempts = 0
        self.delivered = 0

    async def handle_DATA(self, server, session, envelope):
        # Count every attempt, refused or not, so tests can see a client's retries.
        self.attempts += 1
        write_atomically(os.path.join(self.maildir, "attempts"), f"{self.attempts}\n")
        if self.attempts <= self.fail_first:
            return f"{self.fail_code} {self.fail_code // 100}.3.0 try again later"

        self.delivered += 1
        auth = session.auth_data
        login = auth.login.decode("utf-8", "replace") if isinstance(auth, LoginPassword) else None
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            # Exactly as received (CRLF line ends, dot-stuffing already removed).
            "data": envelope.original_content.decode("utf-8", "replace"),
            "auth_login": login,
        }
        path = os.path.join(self.maildir, f"{self.delivered}.json")
        write_atomically(path, json.dumps(record, indent=1))
        return "250 OK"


def authenticator_for(user, password):
    """Accept exactly one user:password; anything else gets aiosmtpd's 535."""
    expected = LoginPassword(user.encode(), password.encode())

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = auth_data == expected
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return authenticate


class EphemeralController(Controller):
    """A Controller that can listen on port 0.

    aiosmtpd 1.4.3 builds its SMTP object lazily and, in start(), connects to self.port to
    force that; with port 0 the connection is refused. Learn the real port first.
    """

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def hang():
    """Accept connections and never greet, to exercise a client's connect/greeting timeout."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"LISTENING {listener.getsockname()[1]}", flush=True)
    held = []  # keep the sockets open: closing them would end the client's wait early
    while True:
        conn, _ = listener.accept()
        held.append(conn)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maildir", required=True, help="where accepted messages are written")
    parser.add_argument("--auth", metavar="USER:PASSWORD", help="require AUTH PLAIN/LOGIN")
    parser.add_argument("--fail-first", type=int, default=0, metavar="N",
                        help="refuse the DATA of the first N messages")
    parser.add_argument("--fail-code", type=int, default=451, help="code for --fail-first")
    parser.add_argument("--hang", action="store_true", help="never send the greeting")
    parser.add_argument("--port", type=int, default=0,
                        help="listen on this port (default: one the OS picks)")
    args = parser.parse_args()

    # Sessions are logged to stderr, which the Rust harness shows when a test fails. Drop
    # aiosmtpd's own noise: plain AUTH is deliberate on loopback, and it warns about its own
    # deprecated login_data whenever a login succeeds.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="smtp_server: %(message)s")
    noise = ("auth_require_tls", "Session.login_data is deprecated")
    logging.getLogger("mail.log").addFilter(lambda r: not any(n in r.getMessage() for n in noise))
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    if args.hang:
        hang()

    auth = {}
    if args.auth:
        user, sep, password = args.auth.partition(":")
        if not sep:
            parser.error("--auth takes USER:PASSWORD")
        auth = dict(
            authenticator=authenticator_for(user, password),
            auth_required=True,
            auth_require_tls=False,
        )

    controller = EphemeralController(
        Handler(args.maildir, args.fail_first, args.fail_code),
        hostname="127.0.0.1",
        port=args.port,
        # A fixed name: the default, socket.getfqdn(), can stall on DNS.
        server_hostname="smtp.test",
        **auth,
    )
    controller.start()
    print(f"LISTENING {controller.port}", flush=True)
    try:
        threading.Event().wait()  # serve until killed
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
