"""User onboarding: a welcome email, plan set-up, then reminders on day 1, 3 and 7 until the user
activates their account.

Workflow ``users.onboard.v1`` (alias ``users.onboard``). Input::

    {"email": "ann@example.com", "name": "Ann", "plan": "free" | "pro" | "team" | ...}

Signal ``activated`` (e.g. ``{"via": "web"}``), sent by the app when the user first logs in. The
wait for it, with a time-out, is also the pause between reminders: a reminder goes out only when
the wait runs out, and the loop stops at once when the signal arrives (a signal sent before the
workflow waits is buffered, so an early activation is never missed). An activated user gets a
tips email one day later (a durable sleep); a user who never activates is marked dormant after
the day-7 reminder.

Emails are simulated (a message id derived from the address and template), so the workflow is
deterministic and needs no network.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from functools import partial
from typing import Any

from durablectl import Branch, Event, Signal, WorkflowContext, workflow

Activated = Signal("activated")
UserActivated = Event("user.activated")

REMINDER_DAYS = (1, 3, 7)  # days after sign-up
SETTLE_IN = timedelta(days=1)  # between activation and the tips email


def _digest(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:12]


def normalize_user(user: Any) -> tuple[dict[str, Any], list[str]]:
    if not isinstance(user, dict):
        return {}, ["the input must be a JSON object"]
    email = user.get("email")
    if not isinstance(email, str) or "@" not in email:
        return {}, ["'email' must be an email address"]
    name = user.get("name") or email.split("@", 1)[0]
    plan = str(user.get("plan", "free")).strip().lower() or "free"
    return {"email": email, "name": str(name), "plan": plan}, []


# Simulated side effects -------------------------------------------------------------------------

def send_email(to: str, template: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sync: an email provider call (its idempotency key would be the message id)."""
    return {"message_id": f"msg_{_digest(to, template)}", "to": to, "template": template,
            "data": data or {}}


async def send_email_async(to: str, template: str,
                           data: dict[str, Any] | None = None) -> dict[str, Any]:
    await asyncio.sleep(0)
    return send_email(to, template, data)


def provision_free(plan: str) -> dict[str, Any]:
    return {"plan": plan, "seats": 1, "trial_days": 0}


async def start_trial(plan: str) -> dict[str, Any]:
    await asyncio.sleep(0)  # the billing API
    return {"plan": plan, "seats": 10 if plan == "team" else 1, "trial_days": 14}


def hand_to_sales(plan: str) -> dict[str, Any]:
    return {"plan": plan, "seats": None, "trial_days": 0, "sales_contact": True}


# The workflow -----------------------------------------------------------------------------------

@workflow("users.onboard.v1", alias="users.onboard")
async def onboard(ctx: WorkflowContext, raw_user: Any) -> dict[str, Any]:
    user, problems = normalize_user(raw_user)
    if problems:
        await ctx.note("onboarding refused", {"problems": problems})
        return {"status": "invalid", "problems": problems}
    email = user["email"]

    welcome = await ctx.step("send-welcome",
                             lambda: send_email(email, "welcome", {"name": user["name"]}))
    setup = await ctx.switch("plan-setup", user["plan"], [
        Branch("free", lambda plan: plan == "free", provision_free),
        Branch("trial", lambda plan: plan in ("pro", "team"), start_trial),
    ], default=Branch("sales", None, hand_to_sales))
    await ctx.note("plan set up", setup)

    reminders: list[int] = []
    activation: dict[str, Any] | None = None
    previous_day = 0
    for day in REMINDER_DAYS:
        answer = await ctx.wait_for_signal(Activated, timeout=timedelta(days=day - previous_day),
                                           step_id=f"activation-by-day-{day}")
        previous_day = day
        if answer.kind == "signal":
            activation = answer.payload if isinstance(answer.payload, dict) else \
                {"payload": answer.payload}
            break
        template = "trial-reminder" if setup["trial_days"] else "reminder"
        await ctx.step(f"reminder-day-{day}",
                       partial(send_email, email, f"{template}-day-{day}", {"day": day}),
                       retries=2)
        reminders.append(day)

    if activation is None:
        await ctx.step("mark-dormant", lambda: {"email": email, "state": "dormant"})
        await ctx.note("user never activated", {"email": email, "reminders": reminders})
        return {"status": "dormant", "email": email, "plan": setup, "welcome":
                welcome["message_id"], "reminders_sent": reminders}

    await ctx.emit(UserActivated, {"email": email, "plan": user["plan"], **activation},
                   step_id="announce-activation")
    await ctx.note("user activated", {"email": email, "after_reminders": len(reminders)})
    await ctx.sleep(SETTLE_IN, step_id="settle-in")
    tips = await ctx.step("send-tips", partial(send_email_async, email, "getting-started-tips"),
                          timeout=timedelta(seconds=30))
    return {"status": "activated", "email": email, "plan": setup,
            "welcome": welcome["message_id"], "reminders_sent": reminders,
            "activation": activation, "tips": tips["message_id"]}
