"""A real SMTP server for the notification tests (aiosmtpd on loopback).

    python3 tests/support/smtp_sink.py --port PORT --dir DIR

Every accepted message is parsed and written to DIR as one JSON file
(envelope, Message-ID, Subject, the text/plain and text/html parts), written
to a temporary name and renamed, so a reader never sees half a file.
Recipients steer the answers:

- ``reject…@…``   → ``550 5.1.1`` at RCPT (a permanent failure);
- ``tempfail…@…`` → ``451 4.3.0`` at RCPT the first time this recipient is
  seen (remembered in DIR), accepted afterwards;
- anything else   → accepted (``250``).
"""

import argparse
import email
import email.policy
import json
import os
import time
import uuid

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, directory):
        self.dir = directory

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("reject"):
            return "550 5.1.1 mailbox unavailable"
        if local.startswith("tempfail"):
            marker = os.path.join(self.dir, "tempfail-seen-" + address.replace("/", "_"))
            if not os.path.exists(marker):
                open(marker, "w").close()
                return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        parts = {}
        for part in msg.walk():
            ctype = part.get_content_type()
            if ctype in ("text/plain", "text/html") and not part.is_multipart():
                parts[ctype] = part.get_content()
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "message_id": msg.get("Message-ID"),
            "subject": msg.get("Subject"),
            "from": msg.get("From"),
            "to": msg.get("To"),
            "content_type": msg.get_content_type(),
            "text": parts.get("text/plain"),
            "html": parts.get("text/html"),
        }
        name = "%d-%s" % (time.time_ns(), uuid.uuid4().hex[:8])
        tmp = os.path.join(self.dir, "." + name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.dir, "mail-" + name + ".json"))
        return "250 Message accepted for delivery"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    args = p.parse_args()
    controller = Controller(Handler(args.dir), hostname="127.0.0.1", port=args.port)
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
