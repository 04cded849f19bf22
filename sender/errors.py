"""The one exception tree of `sender`.

    SenderError
     ├── InvalidPage           a page that can never be processed (dead-lettered, not retried)
     ├── PageRefused           the ledger refuses a page's content (dead-lettered, not retried)
     ├── UnknownCampaign       the ledger does not know the campaign id
     ├── InvalidId             an id outside its kind's pattern, or made only of dots
     ├── InvalidContacts       a contacts CSV with bad rows (nothing is stored or published)
     ├── OversizeContact       a contact too large for any page (nothing more is published)
     ├── CampaignStateError    a control command that the campaign's status does not allow
     ├── QueueMismatch         a queue exists with other arguments than ours (exit 2)
     └── DependencyUnavailable PostgreSQL, Redis or RabbitMQ cannot be reached right now

Inbox API failures are not exceptions: an attempt returns an `AttemptResult`
(see `policy.py`) and the pure policy decides what happens next.
"""

from __future__ import annotations


class SenderError(Exception):
    """Base of every error `sender` raises on purpose."""

    exit_code = 1
    """What `sender` exits with: 1 a failure, 2 a misconfiguration."""


class InvalidPage(SenderError):
    """A page that is malformed, schema-invalid or too large; `reason` goes to the dead queue."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PageRefused(SenderError):
    """PostgreSQL refused to store what a page holds (a data error, not an outage)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"invalid_page: the ledger refused it: {detail}")
        self.reason = str(self)


class UnknownCampaign(SenderError):
    """The ledger has no campaign with this id."""

    def __init__(self, campaign_id: str) -> None:
        super().__init__(f"unknown campaign: {campaign_id}")
        self.campaign_id = campaign_id


class InvalidId(SenderError):
    """An id that must not reach a Redis key, SQL or a URL."""

    def __init__(self, kind: str, value: str) -> None:
        chars = "[A-Za-z0-9_.@-]" if kind == "campaign id" else "[A-Za-z0-9_.:@-]"
        super().__init__(f"invalid {kind}: must be 1-128 chars of {chars}, not only dots")
        self.kind = kind
        self.value = value


class InvalidContacts(SenderError):
    """A contacts CSV with bad rows; `problems` are `line N: what` strings."""

    def __init__(self, problems: list[str], total: int) -> None:
        shown = "; ".join(problems)
        more = f" (and {total - len(problems)} more)" if total > len(problems) else ""
        super().__init__(f"contacts rejected, nothing published: {shown}{more}")
        self.problems = problems
        self.total = total


class OversizeContact(SenderError):
    """One contact whose page alone would exceed `MAX_PAGE_BYTES`."""

    def __init__(self, contact_id: str, size: int, max_bytes: int) -> None:
        super().__init__(
            f"contact {contact_id}: its page would be {size} bytes,"
            f" more than MAX_PAGE_BYTES ({max_bytes}); nothing more was published"
        )
        self.contact_id = contact_id


class CampaignStateError(SenderError):
    """The campaign's status does not allow this command (e.g. resuming a stopped one)."""

    def __init__(self, campaign_id: str, status: str, detail: str) -> None:
        super().__init__(f"campaign {campaign_id} is {status}: {detail}")
        self.campaign_id = campaign_id
        self.status = status


class QueueMismatch(SenderError):
    """RabbitMQ refused our declare (PRECONDITION_FAILED): the queue exists, declared otherwise."""

    exit_code = 2

    def __init__(self, queue: str, detail: str) -> None:
        super().__init__(
            f"queue {queue} exists with other arguments ({detail[:300]}):"
            " delete it or set PAGES_QUEUE"
        )
        self.queue = queue


class DependencyUnavailable(SenderError):
    """A backing service (`dependency`: postgres, redis, rabbitmq) cannot be reached."""

    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(f"{dependency} unavailable: {detail}")
        self.dependency = dependency
