"""The nightly sales report, declared with a cron schedule (every day at 03:00).

Workflow ``reports.nightly.v1`` (alias ``reports.nightly``). Input (all optional; a scheduled run
gets none and reports on yesterday's sample data)::

    {"date": "2030-01-01", "channel": "#sales",
     "orders": [{"id": "A-1", "customer": "ann", "amount": 30, "status": "paid"}, ...]}

Steps: pick the report date (the wall clock is read inside a step, so a replay sees the same
date), load the orders, summarise them, render a plain-text table, publish it, then emit
``report.ready``. It waits for no signal.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

from durablectl import Event, WorkflowContext, cron, workflow

ReportReady = Event("report.ready")

REVENUE_STATUSES = ("paid", "shipped", "delivered")

# What a scheduled run reports on when no orders are given (stands in for a database query).
SAMPLE_ORDERS: tuple[dict[str, Any], ...] = (
    {"id": "A-1", "customer": "ann", "amount": 30, "status": "paid"},
    {"id": "A-2", "customer": "bob", "amount": 12.5, "status": "shipped"},
    {"id": "A-3", "customer": "ann", "amount": 99, "status": "delivered"},
    {"id": "A-4", "customer": "cem", "amount": 45, "status": "refunded"},
    {"id": "A-5", "customer": "dee", "amount": 8, "status": "pending"},
)


def pick_date(params: dict[str, Any]) -> str:
    """The given ``date``, else yesterday (UTC). Runs inside a step: it reads the clock."""
    given = params.get("date")
    if given is not None:
        return date.fromisoformat(str(given)).isoformat()
    return (datetime.now(UTC).date() - timedelta(days=1)).isoformat()


def load_orders(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Sync: the query of the day's orders (here: the input, or the sample)."""
    orders = params.get("orders")
    if orders is None:
        return [dict(order) for order in SAMPLE_ORDERS]
    if not isinstance(orders, list) or not all(isinstance(o, dict) for o in orders):
        raise ValueError("'orders' must be a list of objects")
    return [{"id": str(o.get("id", "?")), "customer": str(o.get("customer", "unknown")),
             "amount": float(o.get("amount", 0)), "status": str(o.get("status", "pending"))}
            for o in orders]


async def summarise(orders: list[dict[str, Any]]) -> dict[str, Any]:
    """Async: the aggregation (an analytics service would be awaited here)."""
    await asyncio.sleep(0)
    by_status = Counter(order["status"] for order in orders)
    earning = [order for order in orders if order["status"] in REVENUE_STATUSES]
    revenue = round(sum(order["amount"] for order in earning), 2)
    per_customer: Counter[str] = Counter()
    for order in earning:
        per_customer[order["customer"]] += order["amount"]
    top = sorted(per_customer.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    return {
        "orders": len(orders),
        "by_status": dict(sorted(by_status.items())),
        "revenue": revenue,
        "average_order": round(revenue / len(earning), 2) if earning else 0,
        "top_customers": [{"customer": c, "revenue": round(v, 2)} for c, v in top],
    }


def render(day: str, summary: dict[str, Any]) -> str:
    lines = [f"Nightly report {day}", f"orders   {summary['orders']}",
             f"revenue  {summary['revenue']:.2f}", f"average  {summary['average_order']:.2f}"]
    lines += [f"status   {status:<10} {count}" for status, count in summary["by_status"].items()]
    lines += [f"top      {t['customer']:<10} {t['revenue']:.2f}" for t in summary["top_customers"]]
    return "\n".join(lines)


def publish(day: str, channel: str, text: str) -> dict[str, Any]:
    """Sync: post to a chat channel or write a file (simulated; keyed by date, so idempotent)."""
    return {"report_id": f"nightly-{day}", "channel": channel, "bytes": len(text.encode())}


@workflow("reports.nightly.v1", alias="reports.nightly", schedule=cron("0 3 * * *"),
          max_attempts=2, timeout=timedelta(hours=1))
async def nightly(ctx: WorkflowContext, params: Any) -> dict[str, Any]:
    options: dict[str, Any] = params if isinstance(params, dict) else {}
    day = await ctx.step("report-date", lambda: pick_date(options))
    orders = await ctx.step("load-orders", lambda: load_orders(options), retries=1)
    summary = await ctx.step("summarise", partial(summarise, orders),
                             timeout=timedelta(minutes=5))
    text = await ctx.step("render", lambda: render(day, summary))
    published = await ctx.step(
        "publish", lambda: publish(day, str(options.get("channel", "#reports")), text), retries=2)
    await ctx.emit(ReportReady, {"report_id": published["report_id"], "date": day,
                                 "revenue": summary["revenue"]}, step_id="announce")
    await ctx.note("nightly report published", {"date": day, "orders": summary["orders"]})
    return {"report_id": published["report_id"], "date": day, "channel": published["channel"],
            "summary": summary, "text": text}
