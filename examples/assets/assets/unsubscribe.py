"""The unsubscribe saga: a user leaves, and every service that holds something of theirs agrees.

Steps, in order, each with what undoes it (gossamer.events.saga runs them, recording each
transition on the `sagas` topic, so a users process killed mid-way finishes after its restart):

1. mark-leaving (users): the account is `leaving`; undone by making it `active` again.
2. revoke-tokens (auth): sessions end, no new login; undone by lifting the suspension.
3. release-assets (asset-mgr-ms): the user's assets are retired or handed to someone else;
   undone by giving them back.
4. delete-profile (users): the profile is removed and UserDeleted published. Nothing comes
   after it, so it needs no compensation: once the assets are released, the user is gone.

If releasing the assets fails for good (or keeps failing until retries run out), the tokens
and the account are restored: the user is as they were, nothing half-done.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gossamer.events.saga import RetryPolicy, Saga, Step, StepContext, call, http

if TYPE_CHECKING:  # users.py imports this module
    from assets.users import Users

AUTH = "http://auth-svc:8080/auth/users/{userId}"
ASSETS = "http://asset-mgr-ms-svc:8080/assetmgrms/owners/{userId}"
NAME = "unsubscribe-user"


def unsubscribe_saga(users: Users) -> Saga:
    """The saga over this process's users table."""

    async def mark_leaving(context: StepContext) -> None:
        users.set_status(context.data["userId"], "leaving", "UserLeaving")

    async def mark_active(context: StepContext) -> None:
        users.set_status(context.data["userId"], "active", "UserRestored")

    async def delete_profile(context: StepContext) -> None:
        users.delete(context.data["userId"])

    return Saga(
        NAME,
        steps=[
            Step("mark-leaving", action=call(mark_leaving), compensation=call(mark_active)),
            Step(
                "revoke-tokens",
                action=http("POST", f"{AUTH}/revoke"),
                compensation=http("POST", f"{AUTH}/restore"),
            ),
            Step(
                "release-assets",
                action=http("POST", f"{ASSETS}/release", body={"action": "{assets}", "to": "{to}"}),
                compensation=http("POST", f"{ASSETS}/restore"),
            ),
            Step("delete-profile", action=call(delete_profile)),
        ],
        retry=RetryPolicy(attempts=4, backoff_s=0.2, backoff_max_s=2.0),
        compensation_retry=RetryPolicy(attempts=20, backoff_s=0.2, backoff_max_s=5.0),
    )
