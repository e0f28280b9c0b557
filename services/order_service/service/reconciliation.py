"""The client-money reconciliation report, on demand (admin RPC) and every ``interval`` seconds.

It reads, concurrently: the exchange account's balances and the foreign orders and anomalies the
gateway found, the ledger's totals (users and house) from the user service, and this service's own
effects not yet performed (trades the exchange made that the ledger has not booked: in flight, and
the parked ones). The three sources are read at slightly different moments; a trade that lands in
between shows as a transient difference that the next report no longer has, so act on a shortfall
that persists across reports. A shortfall is logged as a security event at ERROR and sent to the
audit trail (RECONCILIATION_SHORTFALL), once per asset and report.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from services.order_service.domain.reconciliation import (
    AssetReconciliation,
    ExchangeAnomaly,
    ForeignOrder,
    ReconciliationStatus,
    in_flight,
    overall,
    reconcile,
)
from services.order_service.service.outbox import Outbox
from services.order_service.service.ports import AuditPort, GatewayPort, ParkedEffect, UserPort
from shared.audit import AuditRecord
from shared.logs import security_log
from shared.money import fmt
from shared.timeutil import now_ms

log = logging.getLogger("order_service.reconciliation")


@dataclass(frozen=True)
class ReconciliationReport:
    """One report: a line per asset, the foreign orders, the anomalies and the parked effects."""

    report_ms: int
    assets: list[AssetReconciliation]
    foreign_orders: list[ForeignOrder]
    anomalies: list[ExchangeAnomaly]
    parked: list[ParkedEffect]

    @property
    def status(self) -> ReconciliationStatus:
        """The worst status of any asset."""
        return overall(self.assets)


class ClientMoneyReconciliation:
    """Builds the report and runs it periodically."""

    def __init__(
        self,
        users: UserPort,
        gateway: GatewayPort,
        outbox: Outbox,
        *,
        interval: float = 300.0,
        timeout: float = 10.0,
        clock: Callable[[], int] = now_ms,
        audit: AuditPort | None = None,
    ):
        self.audit = audit
        self.users = users
        self.gateway = gateway
        self.outbox = outbox
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self.last: ReconciliationReport | None = None

    async def report(self) -> ReconciliationReport:
        """Compute the report now; a shortfall is logged as a security event."""
        pending = in_flight(self.outbox.queued_effects())
        exchange, ledger, foreign, anomalies, parked = await asyncio.gather(
            self.gateway.account_balances(self.timeout),
            self.users.ledger_totals(self.timeout),
            self.gateway.foreign_orders(self.timeout),
            self.gateway.anomalies(self.timeout),
            self.outbox.parked(),
        )
        report = ReconciliationReport(
            report_ms=self.clock(),
            assets=reconcile(exchange, ledger, pending),
            foreign_orders=foreign,
            anomalies=anomalies,
            parked=parked,
        )
        self._log(report)
        self.last = report
        return report

    def _log(self, report: ReconciliationReport) -> None:
        for line in report.assets:
            if line.status is ReconciliationStatus.SHORTFALL:
                figures = {
                    "asset": line.asset,
                    "exchange_total": fmt(line.exchange_total),
                    "users_total": fmt(line.users_total),
                    "house_total": fmt(line.house_total),
                    "in_flight": fmt(line.in_flight),
                    "difference": fmt(line.difference),
                }
                security_log.error(
                    "client money shortfall: the exchange account holds less than the users and the house are owed",
                    extra=figures,
                )
                if self.audit is not None:
                    self.audit.record(AuditRecord("RECONCILIATION_SHORTFALL", report.report_ms, details=figures))
        open_foreign = sum(1 for o in report.foreign_orders if o.open)
        log.info(
            "reconciliation report",
            extra={
                "status": str(report.status),
                "assets": len(report.assets),
                "open_foreign_orders": open_foreign,
                "anomalies": len(report.anomalies),
                "parked_effects": len(report.parked),
            },
        )

    async def run(self) -> None:
        """Report every ``interval`` seconds (0: only on demand)."""
        if self.interval <= 0:
            return
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.report()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reconciliation report failed; next try at the next interval", extra={"error": str(exc)})
