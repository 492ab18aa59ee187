"""Connection options shared by every Kafka client streamrec creates: security settings pass through here.

The Faust app gets them as ``broker_credentials``; aiokafka producers, consumers and admin clients get
them as keyword arguments. Nothing else builds connection options, so SASL/SSL reach every client.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust

from stream.config import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A TLS context for SSL and SASL_SSL (system CAs unless ``ssl_cafile``), else None."""
    if not settings.security_protocol.endswith("SSL"):
        return None
    context = ssl.create_default_context(cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None)
    if settings.ssl_certfile is not None and settings.ssl_keyfile is not None:
        context.load_cert_chain(str(settings.ssl_certfile), str(settings.ssl_keyfile))
    return context


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer/AIOKafkaConsumer/AIOKafkaAdminClient."""
    options: dict[str, Any] = {"bootstrap_servers": settings.bootstrap_servers,
                               "security_protocol": settings.security_protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.security_protocol.startswith("SASL"):
        options |= {"sasl_mechanism": settings.sasl_mechanism, "sasl_plain_username": settings.sasl_username,
                    "sasl_plain_password": settings.sasl_password}
    return options


def faust_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """The Faust app's ``broker_credentials`` (None for PLAINTEXT)."""
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(username=settings.sasl_username, password=settings.sasl_password,
                                     mechanism=settings.sasl_mechanism, ssl_context=ssl_context(settings))
    if settings.security_protocol == "SSL":
        return faust.SSLCredentials(ssl_context(settings))
    return None
