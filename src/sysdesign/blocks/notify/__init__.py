"""The ``notify`` block: rendering and delivering notifications over e-mail,
webhooks and SMS (the contract is ``base.py``).

Senders, each chosen by a URL whose embedded default needs no server:

- ``email_sender(url)``: ``file:///abs/dir`` (the e-mail outbox directory,
  one ``.eml`` per message), ``smtp://…`` or ``smtps://…`` (``email.py``,
  ``smtp.py``);
- ``sms_sender(url)``: ``file:///abs/path/sms-outbox.jsonl`` (the SMS outbox
  file), ``twilio://SID:TOKEN@api.twilio.com?from=%2B1…`` (``sms.py``);
- ``WebhookSender()``: signed JSON POSTs; ``verify_signature`` is the
  receiver's half (``webhook.py``).

Templates are Jinja in a sandbox, per channel and locale: checked with
``validate_templates`` when uploaded, rendered by a ``Renderer``
(``templates.py``).
"""

from __future__ import annotations

from sysdesign.blocks.notify.base import (
    Address,
    Channel,
    DeliveryError,
    Outgoing,
    PermanentFailure,
    Priority,
    Rendered,
    Sender,
    Status,
    TemporaryFailure,
)
from sysdesign.blocks.notify.email import EmailOutbox, EmailSender, build_email, email_sender
from sysdesign.blocks.notify.sms import SmsOutboxFile, TwilioSmsSender, is_e164, sms_sender
from sysdesign.blocks.notify.templates import (
    ChannelTemplate,
    Renderer,
    TemplateInvalid,
    choose_locale,
    validate_templates,
)
from sysdesign.blocks.notify.webhook import WebhookSender, sign, verify_signature

__all__ = [
    "Address",
    "Channel",
    "ChannelTemplate",
    "DeliveryError",
    "EmailOutbox",
    "EmailSender",
    "Outgoing",
    "PermanentFailure",
    "Priority",
    "Rendered",
    "Renderer",
    "Sender",
    "SmsOutboxFile",
    "Status",
    "TemplateInvalid",
    "TemporaryFailure",
    "TwilioSmsSender",
    "WebhookSender",
    "build_email",
    "choose_locale",
    "email_sender",
    "is_e164",
    "sign",
    "sms_sender",
    "validate_templates",
    "verify_signature",
]
