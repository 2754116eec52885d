"""Order fulfilment: reserve stock, charge the card, wait for a human approval, ship, and wait for
the carrier to confirm delivery.

Workflow ``orders.fulfil.v1`` (alias ``orders.fulfil``). Input::

    {"id": "A-1", "amount": 30, "currency": "EUR",
     "items": [{"sku": "MUG-01", "qty": 2}], "shipping": "standard" | "express" | "pickup",
     "flaky_payment": 0}

``flaky_payment`` (for demos and tests) makes the simulated payment gateway fail that many times
before it answers: up to 2 failures are absorbed by the step's in-process retries, more make the
payment fail and the order roll back.

Signals:

- ``approved``, waited for up to 2 days: ``{"by": "ann"}`` approves; ``{"by": "bob", "approved":
  false, "reason": "fraud"}`` rejects. No answer in time (or a rejection) releases the stock and
  refunds the charge, in reverse order, and the order ends ``expired`` (or ``rejected``).
- ``delivered``, waited for without a time-out (the workflow's own 30-day time-out is the safety
  net): ``{"signed_by": "J. Doe"}``, as a carrier webhook would send it.

Every side effect is simulated and deterministic (ids derive from the order id): nothing here
talks to a network, reads the clock or draws random numbers.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import Any

from durablectl import Branch, Event, Signal, StepFailed, WorkflowContext, workflow

Approved = Signal("approved")
Delivered = Signal("delivered")
Shipped = Event("order.shipped")

APPROVAL_WINDOW = timedelta(days=2)
SHIPPING_METHODS = ("standard", "express", "pickup")


def _digest(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:12]


def normalize_order(order: Any) -> tuple[dict[str, Any], list[str]]:
    """A checked copy of the input and the problems found (pure: safe to run on every replay)."""
    if not isinstance(order, dict):
        return {}, ["the input must be a JSON object"]
    problems: list[str] = []
    order_id = order.get("id")
    if isinstance(order_id, bool) or not isinstance(order_id, str | int) or \
            not str(order_id).strip():
        problems.append("'id' must be a non-empty string or a number")
    amount = order.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int | float) or amount <= 0:
        problems.append("'amount' must be a positive number")
    items = order.get("items", [{"sku": f"SKU-{order_id}", "qty": 1}])
    if not isinstance(items, list) or not items or not all(
            isinstance(i, dict) and isinstance(i.get("sku"), str)
            and isinstance(i.get("qty", 1), int) and i.get("qty", 1) > 0 for i in items):
        problems.append("'items' must be a non-empty list of {\"sku\": str, \"qty\": int > 0}")
    shipping = order.get("shipping", "standard")
    if shipping not in SHIPPING_METHODS:
        problems.append(f"'shipping' must be one of {', '.join(SHIPPING_METHODS)}")
    flaky = order.get("flaky_payment", 0)
    if isinstance(flaky, bool) or not isinstance(flaky, int) or flaky < 0:
        problems.append("'flaky_payment' must be a non-negative integer")
    if problems:
        return {}, problems
    return {
        "id": str(order_id),
        "amount": amount,
        "currency": str(order.get("currency", "EUR")),
        "items": [{"sku": i["sku"], "qty": i.get("qty", 1)} for i in items],
        "shipping": shipping,
        "flaky_payment": flaky,
    }, []


# Simulated side effects -------------------------------------------------------------------------

def reserve_stock(order: dict[str, Any]) -> dict[str, Any]:
    """Sync: a warehouse API call would go here (an upsert keyed by the order id)."""
    return {
        "reservation_id": f"res_{_digest('reserve', order['id'])}",
        "items": order["items"],
        "units": sum(item["qty"] for item in order["items"]),
    }


async def release_stock(reservation: dict[str, Any]) -> dict[str, Any]:
    """Async compensation of ``reserve-stock``."""
    await asyncio.sleep(0)
    return {"released": reservation["reservation_id"], "units": reservation["units"]}


async def charge_card(order: dict[str, Any], idempotency_key: str,
                      calls: list[str]) -> dict[str, Any]:
    """Async: the payment provider. ``calls`` counts the tries of this step in this run, so that
    ``flaky_payment`` fails the first tries deterministically."""
    calls.append(idempotency_key)
    await asyncio.sleep(0)  # stands in for the HTTP round trip
    if len(calls) <= order["flaky_payment"]:
        raise ConnectionError(f"payment gateway unavailable (simulated failure {len(calls)})")
    return {
        "charge_id": f"ch_{_digest('charge', order['id'])}",
        "amount": order["amount"],
        "currency": order["currency"],
        "idempotency_key": idempotency_key,
        "gateway_calls": len(calls),
    }


def refund_charge(charge: dict[str, Any]) -> dict[str, Any]:
    """Sync compensation of ``charge-payment``."""
    return {"refund_id": f"re_{charge['charge_id'][3:]}", "amount": charge["amount"],
            "currency": charge["currency"]}


def ship_standard(order: dict[str, Any]) -> dict[str, Any]:
    return {"carrier": "dhl", "service": "standard",
            "tracking": f"DHL{_digest('ship', order['id']).upper()}"}


async def ship_express(order: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"carrier": "ups", "service": "express",
            "tracking": f"1Z{_digest('ship', order['id']).upper()}"}


def ship_pickup(order: dict[str, Any]) -> dict[str, Any]:
    return {"carrier": "store", "service": "pickup",
            "tracking": f"PICK-{_digest('ship', order['id'])[:6].upper()}"}


def _decision(payload: Any) -> tuple[bool, Any, Any]:
    """(approved, by, reason) from an ``approved`` signal payload."""
    if payload is False:
        return False, None, None
    if isinstance(payload, dict):
        return payload.get("approved", True) is not False, payload.get("by"), \
            payload.get("reason")
    return True, None, None


# The workflow -----------------------------------------------------------------------------------

@workflow("orders.fulfil.v1", alias="orders.fulfil", max_attempts=3, timeout=timedelta(days=30))
async def fulfil(ctx: WorkflowContext, raw_order: Any) -> dict[str, Any]:
    order, problems = normalize_order(raw_order)
    if problems:
        await ctx.note("order refused", {"problems": problems})
        return {"status": "invalid", "problems": problems}

    reservation = await ctx.step("reserve-stock").up(
        lambda: reserve_stock(order)).down(release_stock)

    calls: list[str] = []

    async def charge() -> dict[str, Any]:  # an async callable: runs on the event loop
        return await charge_card(order, f"{ctx.execution_id}:charge", calls)

    try:
        payment = await ctx.step("charge-payment", retries=2, timeout=timedelta(seconds=10)).up(
            charge).down(refund_charge)
    except StepFailed as failure:
        await ctx.rollback()  # releases the stock; the charge never happened
        await ctx.note("payment failed", {"order": order["id"], "error": failure.message})
        return {"status": "payment_failed", "order": order["id"], "error": failure.message}

    answer = await ctx.wait_for_signal(Approved, timeout=APPROVAL_WINDOW, step_id="approval")
    approved, by, reason = _decision(answer.payload)
    if answer.kind == "timeout" or not approved:
        status = "expired" if answer.kind == "timeout" else "rejected"
        await ctx.rollback()  # refund, then release: reverse order
        await ctx.note(f"order {status}", {"order": order["id"], "by": by, "reason": reason})
        outcome = {"status": status, "order": order["id"],
                   "refunded": {"amount": payment["amount"], "currency": payment["currency"]}}
        if status == "rejected":
            outcome.update(by=by, reason=reason)
        return outcome

    shipment = await ctx.switch("ship", order, [
        Branch("express", lambda o: o["shipping"] == "express", ship_express),
        Branch("pickup", lambda o: o["shipping"] == "pickup", ship_pickup),
    ], default=Branch("standard", None, ship_standard))
    await ctx.emit(Shipped, {"order": order["id"], **shipment}, step_id="notify-shipped")
    await ctx.note("order shipped", {"order": order["id"], "approved_by": by,
                                     "carrier": shipment["carrier"]})

    delivery = await ctx.wait_for_signal(Delivered, step_id="delivery")
    await ctx.note("order delivered", {"order": order["id"], "proof": delivery})
    return {
        "status": "delivered",
        "order": order["id"],
        "reservation": reservation["reservation_id"],
        "charge": {"id": payment["charge_id"], "amount": payment["amount"],
                   "currency": payment["currency"]},
        "approved_by": by,
        "shipment": shipment,
        "delivery": delivery,
    }
