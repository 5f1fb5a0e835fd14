"""What a service refuses, in French, for agents (CLI and API show the message as is)."""


class ServiceError(Exception):
    """A request that cannot be carried out: message in French, for agents."""


class IdempotencyConflict(ServiceError):
    """An idempotency key already used, for this person and event type, by an event with other content."""


class IngestError(ServiceError):
    """A flux file the database refused as a whole; the message never quotes its rows."""
