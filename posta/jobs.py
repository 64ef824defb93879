"""RQ jobs: plain functions that take ids."""


def sync_account(account_id: int) -> None:
    """Sync one account's folders."""
    raise NotImplementedError


def sweep_outgoing() -> None:
    """Re-enqueue queued sends whose nudge was lost."""
    raise NotImplementedError
