"""Variants of the receiver, measured beside it to size a proposed change before making it.

`gunicorn ... 'bench.receiver_variants:create_app("hmac")'` serves the product's receiver
with one change patched in, in that process only; `python -m bench ingest --variants`
measures each against the receiver as it is and the bare endpoint. Proposals for inbox/,
not changes to it. (The earlier proposals, the wake-up NOTIFY after the insert's commit and
no connection check per request, are in the product now.)

- hmac: the HMAC compared with `hmac.compare_digest` instead of the stripe SDK's
  `verify_header` (the same strict header rules kept around it).
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask

VARIANTS = ("hmac",)


def create_app(variant: str = "as_is") -> Flask:
    if variant == "hmac":
        _hmac()
    elif variant != "as_is":
        raise SystemExit(f"unknown receiver variant {variant!r}; known: {', '.join(VARIANTS)}")
    from inbox.web import create_app as product_app

    return product_app()


def _hmac() -> None:
    import stripe

    def verify_header(payload: str, header: str, secret: str, tolerance=None) -> bool:
        timestamp = next(v for k, _, v in (p.partition("=") for p in header.split(","))
                         if k == "t")
        expected = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(),
                            hashlib.sha256).hexdigest()
        for key, _, value in (p.partition("=") for p in header.split(",")):
            if key == "v1" and hmac.compare_digest(expected, value):
                return True
        raise stripe.SignatureVerificationError("no signature matches", header, payload)

    stripe.WebhookSignature.verify_header = staticmethod(verify_header)
